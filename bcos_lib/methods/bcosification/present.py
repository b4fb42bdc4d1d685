"""B-cosification's figure and report section: accuracy and localisation per epoch of the converted
model against the B-cos model trained from scratch, and the speed-up in epochs (NeurIPS 2024, §4).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ...core.contract import ModelResult, results_of
from .claims import epochs_to_reach

#: B-cosification (NeurIPS 2024) §4, ImageNet: how many times fewer epochs the B-cosified model
#: needs than the B-cos model trained from scratch to reach the latter's accuracy
BCOSIFICATION_SPEEDUP = {"DenseNet-121": 4.7, "ViT-S": 9.0}
#: B-cos v2 (TPAMI 2024) trained from scratch, ImageNet top-1 (%): the accuracies B-cosification aims at
BCOS_V2_FROM_SCRATCH_IMAGENET = {"ResNet-50": 75.88, "DenseNet-121": 73.61, "ViT-B (simple)": 74.41, "ViT-c-B": 77.15}
METHOD_NAME = "B-cosification"
PAPER_NUMBERS = {"BCOSIFICATION_SPEEDUP": BCOSIFICATION_SPEEDUP, "BCOS_V2_FROM_SCRATCH_IMAGENET": BCOS_V2_FROM_SCRATCH_IMAGENET}



GROUP = "bcosification"   # params.yaml group of the experiment's two models


# ----------------------------------------------------------------------------- the model


def speedup(scratch: pd.DataFrame, converted: pd.DataFrame, num_classes: int = 10,
            scratch_seconds_per_epoch: float | None = None,
            converted_seconds_per_epoch: float | None = None) -> dict[str, Any]:
    """How much sooner the B-cosified model reaches the from-scratch B-cos model's final accuracy.

    target = the from-scratch model's last test accuracy; epochs = when each curve first reaches
    it (both start at chance level at epoch 0: a conservative start for the converted model, whose
    accuracy right after conversion is not recorded).  ratio = scratch epochs / converted epochs
    (B-cosification §4: 4.7× for DenseNet-121); None where the converted model never gets there."""
    target = float(scratch["test_accuracy"].iloc[-1])
    chance = 100.0 / num_classes
    e_s = epochs_to_reach(scratch, target, chance)
    e_c = epochs_to_reach(converted, target, chance)
    out: dict[str, Any] = {"target_accuracy": target, "scratch_epochs": e_s, "bcosified_epochs": e_c,
                           "ratio": (e_s / e_c) if e_s and e_c else None,
                           "bcosified_final_accuracy": float(converted["test_accuracy"].iloc[-1])}
    if scratch_seconds_per_epoch and converted_seconds_per_epoch and e_s and e_c:
        out["scratch_seconds"] = e_s * scratch_seconds_per_epoch
        out["bcosified_seconds"] = e_c * converted_seconds_per_epoch
        out["seconds_ratio"] = out["scratch_seconds"] / out["bcosified_seconds"]
    return out


def _pair(results: Mapping[str, ModelResult]) -> tuple[ModelResult | None, ModelResult | None]:
    """(from-scratch, B-cosified) of the experiment's group, or None where one is missing."""
    group = list(results_of(results, group=GROUP))
    converted = next((r for r in group if r.method == METHOD_NAME and r.history is not None), None)
    scratch = next((r for r in group if r.method != METHOD_NAME and r.history is not None), None)
    return scratch, converted


def _images_per_epoch(r: ModelResult) -> float | None:
    n = (r.train or {}).get("n_train")
    return float(n) if n else None


def plot_bcosification(curves: Mapping[str, pd.DataFrame], target: float | None = None) -> Any:
    """Test accuracy (and, where recorded, localisation on the fixed grids) per epoch; one curve per
    model label.  ``target``: the from-scratch final accuracy, drawn as a line."""
    import matplotlib.pyplot as plt
    col = "fixed_grid_localisation_mean"   # the history column of train.epoch_metrics: [fixed_grid_localisation]
    has_loc = any(col in h and h[col].notna().any() for h in curves.values())
    fig, axes = plt.subplots(1, 2 if has_loc else 1, figsize=(9 if has_loc else 4.8, 3.3), squeeze=False)
    a = axes[0, 0]
    for label, h in curves.items():
        a.plot(h["epoch"], h["test_accuracy"], marker="o", label=label)
    if target is not None:
        a.axhline(target, ls="--", color="tab:gray", lw=1, label="from-scratch final accuracy")
    a.set(xlabel="epoch", ylabel="test accuracy (%)", title="B-cosified vs from scratch")
    a.legend(fontsize=7)
    if has_loc:
        b = axes[0, 1]
        for label, h in curves.items():
            if col in h:
                b.plot(h["epoch"], h[col], marker="o", label=label)
        b.set(xlabel="epoch", ylabel="localisation (own explanation)", title="grid pointing game, fixed grids",
              ylim=(0, 1))
    fig.tight_layout()
    from ...figures import finished
    return finished(fig)


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    scratch, converted = _pair(results)
    if scratch is None or converted is None:
        return {}
    curves = {scratch.label: scratch.history, converted.label: converted.history}
    return {"bcosification": plot_bcosification(curves, float(scratch.history["test_accuracy"].iloc[-1]))}


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def report(results: Mapping[str, ModelResult]) -> str:
    """The experiment's table: accuracy, localisation and the speed-up, beside the paper's."""
    scratch, converted = _pair(results)
    if scratch is None or converted is None:
        return ""
    n_classes = int(converted.entry.kwargs.get("num_classes", 10))  # chance level = the curves' start
    s = speedup(scratch.history, converted.history, n_classes)
    img_s, img_c = _images_per_epoch(scratch), _images_per_epoch(converted)
    rows = []
    for r, start in ((scratch, "random init"), (converted, f"`{converted.entry.init_from}` (trained), converted")):
        loc = (r.metric("localisation") or {}).get("attributions", {}).get("own", {}).get("mean")
        fixed = (r.metric("fixed_grid_localisation") or {}).get("mean")
        rows.append(f"| `{r.key}` | {r.label} | {start} | {len(r.history)} | "
                    f"{_fmt(float(r.history['test_accuracy'].iloc[-1]))} | {_fmt(loc, 3)} | {_fmt(fixed, 3)} |")
    paper = ", ".join(f"{k} {v}×" for k, v in BCOSIFICATION_SPEEDUP.items())
    reached = (f"**{s['ratio']:.1f}× fewer**" if s["ratio"] else
               f"**not reached** in its {len(converted.history)} epoch(s)")
    lines = ["### B-cosification (fine-tuned conversion vs B-cos from scratch)", "",
             "| model | | starts from | epochs | test accuracy (%) | localisation (own) | fixed-grid localisation |",
             "|---|---|---|---|---|---|---|", *rows, "",
             f"Epochs to reach the from-scratch accuracy ({s['target_accuracy']:.2f} %): from scratch "
             f"{_fmt(s['scratch_epochs'])}, B-cosified {_fmt(s['bcosified_epochs'])}: {reached} "
             f"(paper, ImageNet: {paper})."]
    if img_s and img_c and s["ratio"]:
        lines.append(f"In training images seen: {s['scratch_epochs'] * img_s:,.0f} from scratch, "
                     f"{s['bcosified_epochs'] * img_c:,.0f} for the B-cosified model (not counting the "
                     f"{converted.entry.init_from} it starts from).")
    return "\n".join(lines) + "\n"
