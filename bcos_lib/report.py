"""The results tables (results/report.md) and their copies in docs/results.md and README.md.

``make_report`` turns what the stages wrote into markdown, every number next to the
paper's where one exists; each method adds its own section (``Method.report``).  ``python -m bcos_lib.report`` copies results/report.md into
docs/results.md between the ``<!-- results:start -->`` and ``<!-- results:end -->`` markers, and a
compact copy (the accuracy table and the localisation margin) into README.md between the same
markers, so both always show the last ``dvc repro``.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .attribution import method_label
from .methods import ModelResult
from .paper import CODA_CIFAR10_LOCALISATION

__all__ = ["make_report", "update_readme", "compact_report", "fmt", "table", "localisation_margin", "margin_sentence", "START", "END"]

START, END = "<!-- results:start -->", "<!-- results:end -->"


def fmt(v: Any, nd: int = 2) -> str:
    """A number with ``nd`` decimals; "–" for a missing one."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v)


def table(header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _accuracy_table(main: list[ModelResult]) -> str:
    rows = []
    for r in main:
        t, e = r.train, r.explain
        if t is None:
            continue
        ident = "–" if e is None else (f"yes (max rel. err. {e['identity_max_rel_error']:.1e})" if e["sums_to_logit"]
                                       else "no (Input×Gradient)")
        rows.append([f"`{r.key}`", r.entry.arch, f"{t['n_parameters']:,}", t["epochs"], t["n_train"],
                     fmt(t["test_accuracy"]), ident])
    if not rows:
        return ""
    return "### Accuracy (Fashion-MNIST test set)\n\n" + table(
        ["model", "architecture", "parameters", "epochs", "train images", "test accuracy (%)",
         "explanation sums to logit − b"], rows)


def _localisation_tables(main: list[ModelResult]) -> list[str]:
    loc = {r.key: r.metric("localisation") for r in main if r.metric("localisation")}
    out = []
    if loc:
        methods: list[str] = []
        for s in loc.values():
            methods += [m for m in s["methods"] if m not in methods]
        grid = next(iter(loc.values()))["grid"]
        n, smooth = grid.get("n", 3), grid.get("smooth", 1)
        how = (f"maps smoothed with a {smooth}×{smooth} average pool; in brackets the same maps unsmoothed"
               if smooth > 1 else "unsmoothed maps")
        rows = []
        for m in methods:
            row = [method_label(m)]
            for s in loc.values():
                st = s["methods"].get(m)
                raw = "" if st is None or smooth <= 1 or "mean_unsmoothed" not in st else f" [{st['mean_unsmoothed']:.3f}]"
                ci = "" if st is None or "ci_low" not in st else f"; 95 % CI {st['ci_low']:.3f}–{st['ci_high']:.3f}"
                row.append("–" if st is None else f"{st['mean']:.3f} ± {st['std']:.3f}{raw} (n={st['n']}{ci})")
            row.append(fmt(CODA_CIFAR10_LOCALISATION.get(m), 3))
            rows.append(row)
        out.append(f"### Localisation: {n}×{n} grid pointing game (mean ± std of the per-class scores; {how}; "
                   "95 % CI: bootstrap over grids)\n\n"
                   + table(["method"] + [f"`{k}`" for k in loc] + ["paper: CoDA Net, CIFAR-10"], rows))
        margin = localisation_margin(loc)
        if margin:
            out.append(margin_sentence(margin))
    dele = {r.key: r.metric("deletion") for r in main if r.metric("deletion")}
    if dele:
        methods = []
        for s in dele.values():
            methods += [m for m in s["methods"] if m not in methods]
        rows = []
        for m in methods:
            row = [method_label(m)]
            for s in dele.values():
                d = s["methods"].get(m)
                row.append("–" if d is None else f"{d['auc_most']:.3f} / {d['auc_least']:.3f}")
            rows.append(row)
        out.append("### Pixel deletion: area under the target-probability curve "
                   "(most important first: lower is better; least important first: higher is better)\n\n"
                   + table(["method"] + [f"`{k}` most / least" for k in dele], rows))
    return out


_FAITHFULNESS = (  # metric, column heading, how to read a summary entry, what is better
    ("insertion", "insertion AUC", lambda d: f"{d['auc']:.3f}", "higher is better"),
    ("road", "ROAD accuracy MoRF / LeRF", lambda d: f"{d['morf']:.3f} / {d['lerf']:.3f}",
     "MoRF: lower is better; LeRF: higher is better"),
    ("faithfulness_correlation", "faithfulness correlation",
     lambda d: f"{d['mean']:.3f} ± {d['std']:.3f} (n={d['n']})", "higher is better"),
)


def _faithfulness_table(main: list[ModelResult]) -> str:
    """One table: a row per attribution method, a column per (model, faithfulness metric)."""
    cols = [(r, metric, head, show) for metric, head, show, _ in _FAITHFULNESS for r in main if r.metric(metric)]
    if not cols:
        return ""
    methods: list[str] = []
    for r, metric, _, _ in cols:
        methods += [m for m in r.metric(metric)["methods"] if m not in methods]
    rows = [[method_label(m)] + [("–" if m not in r.metric(metric)["methods"] else show(r.metric(metric)["methods"][m]))
                                 for r, metric, _, show in cols] for m in methods]
    n = {metric: r.metric(metric)["settings"]["n_images"] for r, metric, _, _ in cols}
    how = "; ".join(f"{head}: {better} ({n[metric]} images)" for metric, head, _, better in _FAITHFULNESS if metric in n)
    return ("### Faithfulness: insertion, ROAD (Quantus) and faithfulness correlation (Quantus)\n\n"
            f"Each image is explained for its predicted class; random: a random ranking. {how}.\n\n"
            + table(["method"] + [f"`{r.key}` {head}" for r, _, head, _ in cols], rows))


def localisation_margin(loc: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The headline comparison of a localisation table (``{model_key: localisation summary}``):
    the best own explanation against the best post-hoc method of any model.

    Both means carry a bootstrap interval; the margin's interval treats them as independent
    (the models are scored on different grids, each from its own confident pool) and adds
    their standard errors, read off the intervals as half-width / 1.96.  None when no model
    has both an own and a post-hoc score with intervals."""
    own = [(s["methods"]["own"], k) for k, s in loc.items() if "ci_low" in s["methods"].get("own", {})]
    post = [(st, k, m) for k, s in loc.items() for m, st in s["methods"].items()
            if m != "own" and "ci_low" in st]
    if not own or not post:
        return None
    (o, ok), (p, pk, pm) = max(own, key=lambda t: t[0]["mean"]), max(post, key=lambda t: t[0]["mean"])
    se = math.hypot((o["ci_high"] - o["ci_low"]) / (2 * 1.96), (p["ci_high"] - p["ci_low"]) / (2 * 1.96))
    diff = o["mean"] - p["mean"]
    return {"own_model": ok, "own": o["mean"], "posthoc_model": pk, "posthoc_method": pm, "posthoc": p["mean"],
            "margin": diff, "ci_low": diff - 1.96 * se, "ci_high": diff + 1.96 * se}


def margin_sentence(m: Mapping[str, Any]) -> str:
    """One sentence with the margin of :func:`localisation_margin` and what its interval says."""
    verdict = ("the interval excludes 0: the own explanation localises better" if m["ci_low"] > 0 else
               "the interval includes 0: on this budget the difference is not resolved" if m["ci_high"] >= 0 else
               "the interval lies below 0: the post-hoc method localises better")
    return (f"Margin: the own explanation of `{m['own_model']}` ({m['own']:.3f}) minus the best post-hoc "
            f"explanation ({method_label(m['posthoc_method'])} on `{m['posthoc_model']}`, {m['posthoc']:.3f}) "
            f"= **{m['margin']:+.3f}** (95 % CI {m['ci_low']:+.3f} to {m['ci_high']:+.3f}); {verdict}.")


def make_report(res: Mapping[str, ModelResult], sections: Sequence[str] = (), figures: Sequence[str] = ()) -> str:
    """The results in markdown: accuracy, explanation identity, localisation and deletion of the
    models of no group, then each method's own section (``sections``, from ``Method.report``)."""
    profiles = {r.train["profile"] for r in res.values() if r.train}
    main = [r for r in res.values() if not r.entry.group]
    parts = [f"_Generated by the figures stage from the last `dvc repro` (profile: {', '.join(sorted(profiles)) or '–'})._"]
    parts += [p for p in [_accuracy_table(main), *_localisation_tables(main), _faithfulness_table(main), *sections]
              if p]
    if figures:
        parts.append("Figures: " + ", ".join(f"`figures/{f}.png`" for f in figures))
    return "\n\n".join(parts) + "\n"


def compact_report(report: str) -> str:
    """The README's short copy of the report: its first line (the profile), the accuracy table,
    the localisation margin sentence and a link to every table (docs/results.md)."""
    parts = report.strip().split("\n### ")
    accuracy = [f"### {p.strip()}" for p in parts[1:] if p.startswith("Accuracy")]
    margin = [line for line in report.splitlines() if line.startswith("Margin: ")]
    rest = [re.split(r":| \(", p.split("\n", 1)[0], maxsplit=1)[0].strip() for p in parts[1:]
            if not p.startswith("Accuracy")]
    link = ("Every table — " + ", ".join(rest) + " — with the definitions and what the numbers say: "
            "[docs/results.md](docs/results.md).") if rest else "Every table: [docs/results.md](docs/results.md)."
    return "\n\n".join([parts[0].strip(), *accuracy, *margin, link])


def _write_between(path: Path, text: str) -> bool:
    """Replace the text between the markers in ``path`` by ``text``; True if it changed."""
    old = path.read_text()
    if START not in old or END not in old:
        raise ValueError(f"{path} has no {START} … {END} markers")
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{text.strip()}\n{END}{tail}"
    if new != old:
        path.write_text(new)
        return True
    return False


def update_readme(readme: str | Path, report: str | Path, results_page: str | Path | None = None) -> bool:
    """Write ``report`` between the markers: in full into ``results_page`` (docs/results.md; its
    links to figures/ made relative to docs/) and as :func:`compact_report` into ``readme``
    (the whole report when no ``results_page`` is given).  True if either changed."""
    text = Path(report).read_text()
    changed = False
    if results_page is not None:
        full = text.replace("](figures/", "](../figures/")
        changed = _write_between(Path(results_page), full)
        text = compact_report(text)
    return _write_between(Path(readme), text) or changed


if __name__ == "__main__":
    from .paths import project_root
    root = project_root()
    changed = update_readme(root / "README.md", root / "results" / "report.md", root / "docs" / "results.md")
    print("README.md and docs/results.md results sections " + ("updated" if changed else "already up to date"))
    sys.exit(0)
