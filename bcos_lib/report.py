"""The results tables (results/report.md) and their copy in README.md.

``make_report`` turns what the stages wrote into markdown, every number next to the
paper's where one exists; each method adds its own section (the ``report`` of its ``present.py``).
The figures stage writes it to results/report.md; :mod:`bcos_lib.readme` copies that into README.md.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from .explain import attribution_label
from .core.contract import ModelResult

__all__ = ["make_report", "fmt", "table"]


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


def _accuracy_table(main: list[ModelResult], dataset: str) -> str:
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
    return f"### Accuracy ({dataset} test set)\n\n" + table(
        ["model", "architecture", "parameters", "epochs", "train images", "test accuracy (%)",
         "explanation sums to logit − b"], rows)


def _localisation_tables(main: list[ModelResult]) -> list[str]:
    loc = {r.key: r.metric("localisation") for r in main if r.metric("localisation")}
    out = []
    if loc:
        attributions: list[str] = []
        for s in loc.values():
            attributions += [m for m in s["attributions"] if m not in attributions]
        grid = next(iter(loc.values()))["grid"]
        n, smooth = grid.get("n", 3), grid.get("smooth", 1)
        how = (f"maps smoothed with a {smooth}×{smooth} average pool; in brackets the same maps unsmoothed"
               if smooth > 1 else "unsmoothed maps")
        rows = []
        for m in attributions:
            row = [attribution_label(m)]
            for s in loc.values():
                st = s["attributions"].get(m)
                raw = "" if st is None or smooth <= 1 or "mean_unsmoothed" not in st else f" [{st['mean_unsmoothed']:.3f}]"
                ci = "" if st is None or "ci_low" not in st else f"; 95 % CI {st['ci_low']:.3f}–{st['ci_high']:.3f}"
                row.append("–" if st is None else f"{st['mean']:.3f} ± {st['std']:.3f}{raw} (n={st['n']}{ci})")
            rows.append(row)
        out.append(f"### Localisation: {n}×{n} grid pointing game (mean ± std of the per-class scores; {how}; "
                   "95 % CI: bootstrap over grids)\n\n"
                   + table(["attribution"] + [f"`{k}`" for k in loc], rows))
    dele = {r.key: r.metric("deletion") for r in main if r.metric("deletion")}
    if dele:
        attributions = []
        for s in dele.values():
            attributions += [m for m in s["attributions"] if m not in attributions]
        rows = []
        for m in attributions:
            row = [attribution_label(m)]
            for s in dele.values():
                d = s["attributions"].get(m)
                row.append("–" if d is None else f"{d['auc_most']:.3f} / {d['auc_least']:.3f}")
            rows.append(row)
        out.append("### Pixel deletion: area under the target-probability curve "
                   "(most important first: lower is better; least important first: higher is better)\n\n"
                   + table(["attribution"] + [f"`{k}` most / least" for k in dele], rows))
    return out


_FAITHFULNESS = (  # metric, column heading, how to read a summary entry, what is better
    ("insertion", "insertion AUC", lambda d: f"{d['auc']:.3f}", "higher is better"),
    ("road", "ROAD accuracy MoRF / LeRF", lambda d: f"{d['morf']:.3f} / {d['lerf']:.3f}",
     "MoRF: lower is better; LeRF: higher is better"),
    ("faithfulness_correlation", "faithfulness correlation",
     lambda d: f"{d['mean']:.3f} ± {d['std']:.3f} (n={d['n']})", "higher is better"),
)


def _faithfulness_table(main: list[ModelResult]) -> str:
    """One table: a row per attribution, a column per (model, faithfulness metric)."""
    cols = [(r, metric, head, show) for metric, head, show, _ in _FAITHFULNESS for r in main if r.metric(metric)]
    if not cols:
        return ""
    attributions: list[str] = []
    for r, metric, _, _ in cols:
        attributions += [m for m in r.metric(metric)["attributions"] if m not in attributions]
    rows = [[attribution_label(m)] + [("–" if m not in r.metric(metric)["attributions"]
                                       else show(r.metric(metric)["attributions"][m]))
                                      for r, metric, _, show in cols] for m in attributions]
    n = {metric: r.metric(metric)["settings"]["n_images"] for r, metric, _, _ in cols}
    how = "; ".join(f"{head}: {better} ({n[metric]} images)" for metric, head, _, better in _FAITHFULNESS if metric in n)
    return ("### Faithfulness: insertion, ROAD (Quantus) and faithfulness correlation (Quantus)\n\n"
            f"Each image is explained for its predicted class; random: a random ranking. {how}.\n\n"
            + table(["attribution"] + [f"`{r.key}` {head}" for r, _, head, _ in cols], rows))


def make_report(res: Mapping[str, ModelResult], sections: Sequence[str] = (), figures: Sequence[str] = (),
                dataset: str = "Fashion-MNIST") -> str:
    """The results in markdown: accuracy, explanation identity, localisation and deletion of the
    models of no group, then each method's own section (``sections``, from ``Method.report``);
    ``dataset``: how the tables name the data set."""
    profiles = {r.train["profile"] for r in res.values() if r.train}
    main = [r for r in res.values() if not r.entry.group]
    parts = [f"_Generated by the figures stage from the last `dvc repro` (profile: {', '.join(sorted(profiles)) or '–'})._"]
    parts += [p for p in [_accuracy_table(main, dataset), *_localisation_tables(main), _faithfulness_table(main), *sections]
              if p]
    if figures:
        parts.append("Figures: " + ", ".join(f"`figures/{f}.png`" for f in figures))
    return "\n\n".join(parts) + "\n"
