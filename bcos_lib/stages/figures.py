"""Stage figures: every figure under figures/ and the results tables in results/report.md."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from ..pipeline import Run, save_figure
from ..utils import atomic_write


def _read_json(path: Path) -> dict[str, Any] | None:
    import json
    return json.loads(path.read_text()) if path.is_file() else None


def collect_results(run: Run) -> dict[str, dict[str, Any]]:
    """Everything the stages wrote, per model key (missing parts are None)."""
    res = {}
    for key, entry in run.params.models.items():
        r = {"entry": entry, "label": entry.label or key,
             "train": _read_json(run.path("results", "train", key, "metrics.json")),
             "explain": _read_json(run.path("results", "explain", key, "metrics.json")),
             "evaluate": _read_json(run.path("results", "evaluate", key, "metrics.json"))}
        h = run.path("results", "train", key, "history.csv")
        r["history"] = pd.read_csv(h) if h.is_file() else None
        for name in ("localisation", "deletion"):
            f = run.path("results", "evaluate", key, f"{name}.csv")
            r[name] = pd.read_csv(f) if f.is_file() else None
        e = run.path("results", "explain", key, "explanations.pt")
        r["explanations"] = torch.load(e, weights_only=False) if e.is_file() else None
        res[key] = r
    return res




def b_sweep_table(run: Run, res: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per trained model of the group ``b_sweep``: B, accuracy, own localisation, paper accuracy."""
    from ..paper import BCOS_V1_CIFAR10_ACCURACY_BY_B
    rows = []
    for key, r in res.items():
        if r["entry"].group != "b_sweep" or r["train"] is None:
            continue
        b = float(r["entry"].kwargs.get("b", 2.0))
        loc = None
        if r["evaluate"] and "own" in r["evaluate"].get("localisation", {}):
            loc = r["evaluate"]["localisation"]["own"]["mean"]
        rows.append({"model": key, "b": b, "test_accuracy": r["train"]["test_accuracy"], "localisation": loc,
                     "paper_v1_cifar10_accuracy": BCOS_V1_CIFAR10_ACCURACY_BY_B.get(b)})
    return pd.DataFrame(rows).sort_values("b") if rows else pd.DataFrame(
        columns=["model", "b", "test_accuracy", "localisation", "paper_v1_cifar10_accuracy"])


def run(run: Run, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write every figure under figures/ and the results tables to results/report.md."""
    import matplotlib.pyplot as plt

    from .. import figures as F
    from ..paper import BCOS_V1_CIFAR10_ACCURACY_BY_B
    from ..report import make_report

    res = collect_results(run)
    written: dict[str, Path] = {}

    def save(name: str, fig: Any) -> None:
        written[name] = save_figure(run, fig, name)
        plt.close(fig)

    hist = {r["label"]: r["history"] for r in res.values() if r["history"] is not None and r["entry"].group == ""}
    if hist:
        save("training_curves", F.plot_training_curves(hist))
    expl = {k: r["explanations"] for k, r in res.items() if r["explanations"] is not None and r["entry"].group == ""}
    if expl:
        save("explanations", F.plot_model_comparison(expl))
    for key, s in expl.items():
        save(f"explanations_{key}", F.plot_explanations(s))
        if s.get("explainable"):
            save(f"multiclass_{key}", F.plot_multiclass(s))
            if s.get("layers"):
                save(f"layers_{key}", F.plot_layers(s))
    # the box plot compares the main models; the B sweep has its own figure
    loc = [r["localisation"] for r in res.values()
           if r["localisation"] is not None and len(r["localisation"]) and r["entry"].group == ""]
    if loc:
        save("localisation", F.plot_localisation(pd.concat(loc, ignore_index=True)))
    dele = [r["deletion"] for r in res.values() if r["deletion"] is not None and len(r["deletion"])]
    if dele:
        save("deletion", F.plot_deletion(pd.concat(dele, ignore_index=True)))
    sweep = b_sweep_table(run, res)
    if len(sweep):
        paper = pd.DataFrame({"b": list(BCOS_V1_CIFAR10_ACCURACY_BY_B), "accuracy": list(BCOS_V1_CIFAR10_ACCURACY_BY_B.values())})
        save("b_sweep", F.plot_b_sweep(sweep, paper))
    report = make_report(res, sweep, figures=sorted(written))
    written["report"] = atomic_write(run.path("results", "report.md"), lambda tmp: Path(tmp).write_text(report))
    log(f"wrote {len(written) - 1} figures to figures/ and results/report.md")  # no absolute path: same bytes in every clone
    return written
