"""B-cos networks (Böhle, Fritz, Schiele: "B-cos Networks: Alignment is All We Need for
Interpretability", CVPR 2022 = v1; "B-cos Alignment for Inherently Interpretable CNNs and
Vision Transformers", TPAMI 2024 = v2).

The layers are in :mod:`bcos_lib.layers.bcos` (B-cos conv/linear, Eq. 3 of v1), the
architectures in :mod:`bcos_lib.models` (``bcos_cnn``, ``bcos_resnet``, ``bcos_vit``).
Training is the shared loop with binary cross-entropy on one-hot targets (v1 §3.4; the
models' ``default_loss``), so the method adds no training hooks.  What it adds is its
own figure and table: the **B sweep** (v1 Table 1 / §5.1) — the models of ``group: b_sweep``
in params.yaml, accuracy and own-explanation localisation against B, beside the paper's
CIFAR-10 accuracies.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from . import Method, ModelResult, register_method, results_of

SWEEP_GROUP = "b_sweep"


def _b_of(r: ModelResult) -> float:
    """B as the model was built: its params.yaml kwargs, else the builder's default."""
    if "b" in r.entry.kwargs:
        return float(r.entry.kwargs["b"])
    from ..registry import model_signature
    return float(model_signature(r.entry.arch)["b"].default)


def b_sweep_table(results: Mapping[str, ModelResult]) -> pd.DataFrame:
    """One row per trained model of the group ``b_sweep``: B, accuracy, own localisation and
    the v1 paper's CIFAR-10 accuracy at that B."""
    from ..paper import BCOS_V1_CIFAR10_ACCURACY_BY_B
    rows = []
    for r in results_of(results, group=SWEEP_GROUP):
        if r.train is None:
            continue
        b = _b_of(r)
        own = ((r.metric("localisation") or {}).get("methods") or {}).get("own")
        rows.append({"model": r.key, "b": b, "test_accuracy": r.train["test_accuracy"],
                     "localisation": None if own is None else own["mean"],
                     "paper_v1_cifar10_accuracy": BCOS_V1_CIFAR10_ACCURACY_BY_B.get(b)})
    columns = ["model", "b", "test_accuracy", "localisation", "paper_v1_cifar10_accuracy"]
    return pd.DataFrame(rows, columns=columns).sort_values("b") if rows else pd.DataFrame(columns=columns)


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    from ..figures import plot_b_sweep
    from ..paper import BCOS_V1_CIFAR10_ACCURACY_BY_B
    sweep = b_sweep_table(results)
    if not len(sweep):
        return {}
    paper = pd.DataFrame({"b": list(BCOS_V1_CIFAR10_ACCURACY_BY_B), "accuracy": list(BCOS_V1_CIFAR10_ACCURACY_BY_B.values())})
    return {"b_sweep": plot_b_sweep(sweep, paper)}


def report(results: Mapping[str, ModelResult]) -> str:
    from ..report import fmt, table
    sweep = b_sweep_table(results)
    if not len(sweep):
        return ""
    return ("### B sweep (B-cos CNN v2, shorter training than above)\n\n"
            + table(["B", "test accuracy (%)", "localisation (own)", "paper v1, CIFAR-10 (%)"],
                    [[fmt(r.b, 2), fmt(r.test_accuracy), fmt(r.localisation, 3), fmt(r.paper_v1_cifar10_accuracy)]
                     for r in sweep.itertuples()]))


METHOD = register_method(Method(
    name="bcos",
    paper="B-cos networks: v1 (Böhle et al., CVPR 2022), v2 (Böhle et al., TPAMI 2024)",
    models=("bcos_cnn", "bcos_resnet", "bcos_vit"),
    figures=figures,
    report=report,
    order=10,
))
