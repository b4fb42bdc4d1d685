"""Stage claims: the claims ledger (:mod:`bcos_lib.claims`) of every paper, from what the last
``dvc repro`` measured.

Writes ``results/claims.json`` (a DVC metric: ``dvc metrics show`` prints the verdict counts;
the file holds every claim's row), ``results/claims.md`` (the table and one generated
paragraph per claim, which the readme stage copies into README.md and docs/results.md) and
``results/summary.json`` (a DVC metric with short names for ``dvc exp show``: the central claim's
estimate ``margin`` and the lower end of its interval ``margin_low``, see :func:`summary`).
``python -m bcos_lib.stages.claims``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from ..claims import (SAME_ACCURACY_POINTS, UNDER_TRAINED_POINTS, claims_table, current_checks, ledger,
                      retrained_since)
from ..core.registry import list_methods
from ..core.utils import atomic_write
from ..readme import TRAINING_LENGTH   # how the README finds the block it copies

__all__ = ["all_claims", "ledger_text", "summary", "run", "main"]


def all_claims() -> list[tuple[str, Any]]:
    """(method name, claim) for every claim a method's ``claims.py`` declares, in report order."""
    out = []
    for m in sorted(list_methods(), key=lambda m: m.order):
        m.load("claims")
        out += [(m.name, c) for c in m.claims]
    seen: dict[str, str] = {}
    for name, c in out:
        if c.id in seen:
            raise ValueError(f"claim id {c.id!r} is declared by {seen[c.id]} and {name}")
        seen[c.id] = name
    return out


def summary(data: Mapping[str, Any]) -> dict[str, float]:
    """The central comparison of the ledger ``data``, the claim declared with ``headline=True``
    (B-cos: the own explanation of the B-cos CNN against Grad-CAM on the standard CNN, grid by grid,
    over the training seeds): ``margin`` (its estimate) and ``margin_low`` (the lower end of its
    95 % interval; above 0, the own explanation localises better beyond the noise of seeds and
    grids).  Empty when that claim was not run; ``margin`` alone when it has no interval."""
    heads = [r for r in data["claims"] if r.get("headline")]
    if len(heads) > 1:
        raise ValueError("more than one claim is declared with headline=True: " + ", ".join(r["id"] for r in heads))
    if not heads or heads[0].get("estimate") is None:
        return {}
    r = heads[0]
    out = {"margin": round(float(r["estimate"]), 4)}
    if r.get("ci_low") is not None:
        out["margin_low"] = round(float(r["ci_low"]), 4)
    return out


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if unit in ("points", "×") else f"{v:.3f}"


def _paragraph(r: Mapping[str, Any]) -> str:
    unit = r.get("unit") or ""
    u = f" {unit}" if unit else ""
    if r["verdict"] == "not run":
        return f"- **{r['claim']}** ({r['paper']}): not run — {r.get('reason', '')}."
    what = {"difference": "difference", "value": "value", "trend": "slope"}[r["test"]]
    ci = ("no interval (one number per seed, one seed)" if r.get("ci_low") is None
          else f"95 % CI {_num(r['ci_low'], unit)} to {_num(r['ci_high'], unit)}")
    side = "above" if r["direction"] == "greater" else "below"
    seeds = f"{r['seeds']} training seed{'s' if r['seeds'] != 1 else ''}"
    basis = (f"{r['n']} paired samples" if r.get("paired") else "one number per model" if r.get("ci_low") is None
             else f"{r['n']} samples per side" if r["test"] == "difference" else f"{r['n']} samples")
    text = (f"- **{r['claim']}** ({r['paper']}; paper: {r['paper_value']}). Ours: {what} "
            f"{_num(r['estimate'], unit)}{u} ({ci}; {seeds}, {basis}); the paper's side is {side} "
            f"{r['threshold']:g}. Verdict: **{r['verdict']}**.")
    if r.get("under_trained"):
        text += " Under-training check: " + "; ".join(f"`{k}` {w}" for k, w in r["under_trained"].items()) + "."
    if r.get("unchecked"):
        text += (" Training length not checked for " + ", ".join(f"`{k}`" for k in r["unchecked"])
                 + " (the under-training check has not measured them).")
    if r.get("note"):
        text += f" {r['note']}"
    return text


def _accuracies(results: Mapping[str, Any]) -> dict[str, float]:
    """Each model's test accuracy now (``results/train/<key>/metrics.json``)."""
    return {k: r.train["test_accuracy"] for k, r in results.items()
            if r is not None and r.train and "test_accuracy" in r.train}


def _moved(checked: Mapping[str, float], now: Mapping[str, float] | None) -> list[str]:
    """``model before → now`` for the models whose test accuracy now is not the one a measurement recorded."""
    return [f"`{k}` {a:.2f} → {now[k]:.2f} %" for k, a in checked.items()
            if now and now.get(k) is not None and abs(float(now[k]) - float(a)) > SAME_ACCURACY_POINTS]


def training_length_text(convergence: Mapping[str, Any], models: list[str], stale: list[str] | None = None,
                         now: Mapping[str, float] | None = None) -> str:
    """The under-training check of every model a claim rests on, as a paragraph and a table:
    its accuracy after the pipeline's epochs and after three times as many (results/convergence.json).
    ``stale``: models whose check measured an earlier training (see :func:`bcos_lib.claims.current_checks`);
    ``now``: the models' test accuracies now, to name those checked on a training of the same settings
    elsewhere (another machine)."""
    stale = [k for k in models if k in (stale or [])]
    rows = [(k, convergence[k]) for k in models if k in convergence]
    missing = [k for k in models if k not in convergence and k not in stale]
    text = (f"{TRAINING_LENGTH} Each model a claim rests on, trained again from the same start (seed 0) for three "
            f"times its epochs (`scripts/convergence.py`); a model more than {UNDER_TRAINED_POINTS:g} point "
            "below its longer run is flagged as under-trained.")
    if stale:
        text += (" Measured for an earlier training of the model, so not used until `scripts/convergence.py` "
                 "measures it again: " + ", ".join(f"`{k}`" for k in stale) + ".")
    if missing:
        text += " Not measured: " + ", ".join(f"`{k}`" for k in missing) + "."
    moved = _moved({k: float(c["accuracy"]) for k, c in rows}, now)
    if moved:
        text += (" Measured on a training with the same settings elsewhere (another machine, or another number of "
                 "CPU threads: the order of floating-point sums differs), whose accuracy the pipeline's model now differs from: " + "; ".join(moved) + ".")
    if not rows:
        return text + "\n"
    lines = ["| model | epochs | accuracy (%) | epochs × 3 | accuracy (%) | gain (points) |", "|---|---|---|---|---|---|"]
    for k, c in rows:
        gain = float(c["long_accuracy"]) - float(c["accuracy"])
        lines.append(f"| `{k}` | {c.get('epochs', '–')} | {float(c['accuracy']):.2f} | {c.get('long_epochs', '–')} | "
                     f"{float(c['long_accuracy']):.2f} | {gain:+.2f}{' (under-trained)' if gain > UNDER_TRAINED_POINTS else ''} |")
    return text + "\n\n" + "\n".join(lines) + "\n"


#: the heading line of the fidelity block (results/claims.md)
FIDELITY = "**Fidelity options.**"


def fidelity_text(fidelity: Mapping[str, Any], results: Mapping[str, Any],
                  fingerprints: Mapping[str, str | None] | None = None) -> str:
    """Where the companion departs from a paper's official code, what the official choice changes
    (results/fidelity.json, written by ``scripts/fidelity.py``): the model trained again with the
    option set as the official code does, beside the pipeline's model.  A measurement whose
    pipeline model was retrained since (other settings, or the same ones more than a point away:
    :func:`bcos_lib.claims.retrained_since`) is listed as to be measured again."""
    if not fidelity:
        return ""
    lines = ["| model | option: ours → the official code's | accuracy (%) | other numbers |", "|---|---|---|---|"]
    stale, checked = [], {}
    for name, f in sorted(fidelity.items()):
        if retrained_since(results.get(f["model"]), f["pipeline"]["test_accuracy"], recorded=f.get("settings"),
                           fingerprint=(fingerprints or {}).get(f["model"])):
            stale.append(f"`{f['model']}` ({name})")
            continue
        ours, theirs = f["pipeline"], f["variant"]
        checked[f["model"]] = float(ours["test_accuracy"])
        opts = "; ".join(f"`{k}` {ours['options'].get(k)} → {v}" for k, v in f["options"].items())
        other = "; ".join(f"{k} {ours[k]:.3f} → {theirs[k]:.3f}" for k in theirs
                          if k != "test_accuracy" and theirs.get(k) is not None and ours.get(k) is not None)
        lines.append(f"| `{f['model']}` | {opts} ({f['official']}) | {ours['test_accuracy']:.2f} → "
                     f"{theirs['test_accuracy']:.2f} | {other} |")
    text = (f"{FIDELITY} Each model trained again with one option set as the paper's official code does it "
            "(`scripts/fidelity.py`: the same seed, data and epochs), beside the pipeline's model; the ledger's "
            "verdicts rest on the pipeline's models.")
    moved = _moved(checked, _accuracies(results))
    if moved:
        text += (" Both sides were measured on one machine; the pipeline's model, trained with the same settings "
                 "on another, now has: " + "; ".join(moved) + ".")
    if stale:
        text += " Measured for an earlier training, to be measured again: " + ", ".join(stale) + "."
    return text + ("\n\n" + "\n".join(lines) if len(lines) > 2 else "") + "\n"


def ledger_text(data: Mapping[str, Any], convergence: Mapping[str, Any] | None = None,
                stale: list[str] | None = None, now: Mapping[str, float] | None = None) -> str:
    """The markdown of results/claims.md: the table, one paragraph per claim, then (with
    ``convergence``) the training-length table of the models the claims rest on."""
    counts = ", ".join(f"{data[k]} {k.replace('under_', 'under-').replace('_', ' ')}" for k in
                       ("reproduced", "not_reproduced", "inconclusive", "under_trained", "not_run") if data.get(k))
    n = len(data["claims"])
    head = (f"{n} claim{'s' if n != 1 else ''}: {counts}. Intervals are 95 % (bootstrap over the evaluation "
            "samples within a training seed, combined across seeds; docs/claims.md says how).")
    single = [r for r in data["claims"] if r.get("seeds") == 1]
    if single:
        head += (f" {len(single)} of them rest on one training seed (1 in the seeds column): their intervals cover "
                 "the evaluation samples, not the variation from one training run to the next.")
    head += "\n\n"
    text = head + claims_table(data) + "\n" + "\n".join(_paragraph(r) for r in data["claims"]) + "\n"
    if convergence is not None:
        models = list(dict.fromkeys(k for r in data["claims"] for k in r.get("models", [])))
        text += "\n" + training_length_text(convergence, models, stale, now)
    return text


def run(root: Path, results: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Path]:
    """Compute the ledger of ``results`` (model key → ModelResult) and write its two files under ``root``."""
    from ..settings import FOLDER, training_fingerprint
    # the seed replicas' checks are their model's (under_trained), so only the models have fingerprints, as
    # only their settings files are the stage's dependencies (dvcgen)
    fingerprints = {key: training_fingerprint(key, root / FOLDER) for key, r in results.items()
                    if not r.entry.replica_of}
    conv_file = root / "results" / "convergence.json"
    convergence, stale = current_checks(json.loads(conv_file.read_text()) if conv_file.is_file() else {}, results,
                                        fingerprints)
    fid_file = root / "results" / "fidelity.json"
    fidelity = fidelity_text(json.loads(fid_file.read_text()) if fid_file.is_file() else {}, results, fingerprints)
    data = ledger(all_claims(), results, convergence)
    text = json.dumps(data, indent=1, default=float) + "\n"
    out = {"claims.json": atomic_write(root / "results" / "claims.json", lambda tmp: Path(tmp).write_text(text)),
           "claims.md": atomic_write(root / "results" / "claims.md",
                                     lambda tmp: Path(tmp).write_text(
                                         ledger_text(data, convergence, stale, _accuracies(results))
                                         + ("\n" + fidelity if fidelity else ""))),
           "summary.json": atomic_write(root / "results" / "summary.json", lambda tmp: Path(tmp).write_text(
               json.dumps(summary(data), indent=2) + "\n"))}
    log(f"claims: {len(data['claims'])} claims — " + ", ".join(
        f"{k} {data[k]}" for k in ("reproduced", "not_reproduced", "inconclusive", "under_trained", "not_run")))
    return out


def main(argv: list[str] | None = None) -> int:
    from ..core.pipeline import setup
    from ..results import collect_results
    import argparse
    ap = argparse.ArgumentParser(description="Write the claims ledger (results/claims.json, results/claims.md).")
    ap.add_argument("--profile", default=None, help="a params.yaml profile (default: base.profile)")
    ap.add_argument("--out", default=None, help="the output root, relative to the project (default: the profile's)")
    args = ap.parse_args(argv)
    run_ = setup(args.profile, args.out)
    run(run_.out, collect_results(run_, explanations=False, replicas=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
