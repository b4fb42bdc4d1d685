"""B-cos networks' figure and report section: the **B sweep** (v1 Table 1 / §5.1) — the models of
``group: b_sweep`` in params.yaml, accuracy and own-explanation localisation against B, beside the
paper's CIFAR-10 accuracies."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ...core.contract import ModelResult, results_of
from ...figures import finished

#: B-cos v1 (CVPR 2022), CIFAR-10, 9-layer net with MaxOut (the authors' public results notebook):
#: B → top-1 accuracy (%)
BCOS_V1_CIFAR10_ACCURACY_BY_B = {1.0: 93.53, 1.25: 93.81, 1.5: 93.69, 1.75: 93.69, 2.0: 93.19, 2.25: 92.60, 2.5: 92.37}
#: B-cos v2 (TPAMI 2024), ImageNet top-1 accuracy (%) of B-cos networks trained from scratch
BCOS_V2_IMAGENET_ACCURACY = {"resnet50": 75.9, "densenet121": 73.6, "vit_s": 69.3}
PAPER_NUMBERS = {"BCOS_V1_CIFAR10_ACCURACY_BY_B": BCOS_V1_CIFAR10_ACCURACY_BY_B, "BCOS_V2_IMAGENET_ACCURACY": BCOS_V2_IMAGENET_ACCURACY}


SWEEP_GROUP = "b_sweep"


def _b_of(r: ModelResult) -> float:
    """B as the model was built: its params.yaml kwargs, else the builder's default."""
    if "b" in r.entry.kwargs:
        return float(r.entry.kwargs["b"])
    from ...core.registry import model_signature
    return float(model_signature(r.entry.arch)["b"].default)


def b_sweep_table(results: Mapping[str, ModelResult]) -> pd.DataFrame:
    """One row per trained model of the group ``b_sweep``: B, accuracy, own localisation and
    the v1 paper's CIFAR-10 accuracy at that B."""
    rows = []
    for r in results_of(results, group=SWEEP_GROUP):
        if r.train is None:
            continue
        b = _b_of(r)
        own = ((r.metric("localisation") or {}).get("attributions") or {}).get("own")
        rows.append({"model": r.key, "b": b, "test_accuracy": r.train["test_accuracy"],
                     "localisation": None if own is None else own["mean"],
                     "paper_v1_cifar10_accuracy": BCOS_V1_CIFAR10_ACCURACY_BY_B.get(b)})
    columns = ["model", "b", "test_accuracy", "localisation", "paper_v1_cifar10_accuracy"]
    return pd.DataFrame(rows, columns=columns).sort_values("b") if rows else pd.DataFrame(columns=columns)


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    from .present import plot_b_sweep
    sweep = b_sweep_table(results)
    if not len(sweep):
        return {}
    paper = pd.DataFrame({"b": list(BCOS_V1_CIFAR10_ACCURACY_BY_B), "accuracy": list(BCOS_V1_CIFAR10_ACCURACY_BY_B.values())})
    return {"b_sweep": plot_b_sweep(sweep, paper)}


def report(results: Mapping[str, ModelResult]) -> str:
    from ...report import fmt, table
    sweep = b_sweep_table(results)
    if not len(sweep):
        return ""
    return ("### B sweep (B-cos CNN v2, shorter training than above)\n\n"
            + table(["B", "test accuracy (%)", "localisation (own)", "paper v1, CIFAR-10 (%)"],
                    [[fmt(r.b, 2), fmt(r.test_accuracy), fmt(r.localisation, 3), fmt(r.paper_v1_cifar10_accuracy)]
                     for r in sweep.itertuples()]))


def plot_b_sweep(sweep: pd.DataFrame, paper: pd.DataFrame | None = None) -> Any:
    """Accuracy and localisation against B.  ``sweep``: columns b, test_accuracy and
    (optional) localisation; ``paper``: columns b, accuracy (the v1 CIFAR-10 numbers)."""
    import matplotlib.pyplot as plt

    has_loc = "localisation" in sweep and sweep["localisation"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_loc else 1, figsize=(9 if has_loc else 4.8, 3.3), squeeze=False)
    a = axes[0, 0]
    # one y-axis for both: twin axes would make curves 20 points apart look as if they met
    a.plot(sweep["b"], sweep["test_accuracy"], marker="o", label="this pipeline (Fashion-MNIST, short training)")
    values = list(sweep["test_accuracy"])
    if paper is not None and len(paper):
        a.plot(paper["b"], paper["accuracy"], marker="s", ls="--", color="tab:gray",
               label="B-cos v1 paper (CIFAR-10, full training)")
        values += list(paper["accuracy"])
    lo, hi = min(values), max(values)
    a.set(xlabel="B", ylabel="test accuracy (%)", title="accuracy vs B (one scale for both)",
          ylim=(max(0.0, 10 * np.floor(lo / 10) - 5), min(100.0, 10 * np.ceil(hi / 10) + 2)))
    a.legend(fontsize=7, loc="lower left")
    if has_loc:
        b = axes[0, 1]
        b.plot(sweep["b"], sweep["localisation"], marker="o", color="tab:green")
        b.set(xlabel="B", ylabel="mean localisation (own explanation)", title="grid pointing game vs B", ylim=(0, 1))
    fig.tight_layout()
    return finished(fig)


# ----------------------------------------------------------------------------- evaluation (grid pointing game, pixel deletion)
