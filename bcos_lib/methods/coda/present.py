"""CoDA Nets' figures and report section: the temperature sweep (§5, the figure on T), the
CoDA nets' explanations next to the B-cos CNN's, and the accuracy and localisation table beside
the paper's CIFAR-10 numbers."""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from ...core.contract import ModelResult, results_of
from .model import CIFAR10_CONFIG

T_SWEEP_GROUP = "coda_t_sweep"

#: CoDA Nets (CVPR 2021) §5.1, CIFAR-10, 3×3 grid pointing game, T = 1000 (means of the 4500
#: scores in the authors' public repository)
CODA_CIFAR10_LOCALISATION = {"own": 0.912, "occlusion": 0.842, "gradcam": 0.726, "ig": 0.155, "ixg": 0.144}
#: CoDA Nets (CVPR 2021) §5, CIFAR-10: localisation of the own explanation (3×3 grid pointing
#: game) against the logit temperature T
CODA_LOCALISATION_BY_T = {10: 0.31, 100: 0.64, 500: 0.84, 1000: 0.91}
PAPER_NUMBERS = {"CODA_CIFAR10_LOCALISATION": CODA_CIFAR10_LOCALISATION,
                 "CODA_LOCALISATION_BY_T": CODA_LOCALISATION_BY_T}


def _localisation(r: ModelResult) -> dict[str, Any]:
    """{attribution: {mean, …}} of the shared localisation metric (empty when it did not run)."""
    return (r.metric("localisation") or {}).get("attributions") or {}


def t_sweep_table(results: Mapping[str, ModelResult]) -> pd.DataFrame:
    """One row per model of the T-sweep group: key, T, test accuracy, own localisation, the paper's."""
    rows = []
    for r in results_of(results, method="CoDA", group=T_SWEEP_GROUP):
        t = float(r.entry.kwargs.get("logit_temperature", CIFAR10_CONFIG["logit_temperature"]))
        own = _localisation(r).get("own") or {}
        rows.append({"key": r.key, "T": t, "test_accuracy": (r.train or {}).get("test_accuracy"),
                     "localisation": own.get("mean"),
                     "paper_localisation": CODA_LOCALISATION_BY_T.get(int(t)) if t.is_integer() else None})
    return pd.DataFrame(rows, columns=["key", "T", "test_accuracy", "localisation", "paper_localisation"]).sort_values("T")


def plot_t_sweep(sweep: pd.DataFrame):
    """Localisation (this pipeline and the paper's CIFAR-10 numbers) and accuracy against T (log axis)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3))
    a.plot(sweep["T"], sweep["localisation"], marker="o", label="this pipeline (Fashion-MNIST)")
    paper = sorted(CODA_LOCALISATION_BY_T.items())
    a.plot([t for t, _ in paper], [v for _, v in paper], marker="s", ls="--", color="tab:gray",
           label="paper (CIFAR-10)")
    a.set(xscale="log", xlabel="logit temperature T", ylabel="mean localisation (own explanation)",
          title="grid pointing game vs T", ylim=(0, 1))
    a.legend(fontsize=7)
    b.plot(sweep["T"], sweep["test_accuracy"], marker="o", color="tab:orange")
    b.set(xscale="log", xlabel="logit temperature T", ylabel="test accuracy (%)", title="accuracy vs T")
    fig.tight_layout()
    from ...figures import finished
    return finished(fig)


def coda_figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    """``coda_t_sweep`` (localisation and accuracy vs T) and ``coda_vs_bcos`` (the own explanations of
    the CoDA nets next to the B-cos CNN's on the same test images)."""
    from ...figures import plot_model_comparison

    figs: dict[str, Any] = {}
    sweep = t_sweep_table(results)
    if len(sweep) and sweep["localisation"].notna().any():
        figs["coda_t_sweep"] = plot_t_sweep(sweep)
    # the CoDA nets' own explanations (dynamic linear: W(x) x) beside the B-cos CNN's of the main
    # comparison, on the same test images; of the T sweep, the net with the paper's T = 1000 (a hybrid
    # is not dynamic linear in its input, so it has no own explanation there and is left out)
    def own(r: ModelResult) -> bool:
        return r.explanations is not None and bool(r.explanations.get("explainable", True))

    coda = [r for r in results_of(results, method="CoDA") if own(r)
            and (r.entry.group != T_SWEEP_GROUP
                 or float(r.entry.kwargs.get("logit_temperature", CIFAR10_CONFIG["logit_temperature"])) == 1000)]
    bcos = [r for r in results_of(results, method="bcos") if own(r) and not r.entry.group]
    saved = {r.key: {**r.explanations, "label": r.label} for r in [*coda, *bcos]}
    if len(saved) > 1:
        figs["coda_vs_bcos"] = plot_model_comparison(saved)
    return figs


def _fmt(v: Any, nd: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def coda_report(results: Mapping[str, ModelResult]) -> str:
    """The CoDA section of the results: accuracy and 3×3 localisation beside the paper, the T sweep, the hybrid."""
    lines = ["### CoDA Nets (Dynamic Alignment Units)", ""]
    attributions = ["own", "occlusion", "gradcam", "ig", "ixg"]
    header = "| model | test acc. (%) | " + " | ".join(attributions) + " |"
    lines += [header, "|" + "---|" * (len(attributions) + 2)]
    for r in results_of(results, method="CoDA"):
        loc = _localisation(r)
        if not loc:
            continue
        cells = [_fmt((loc.get(m) or {}).get("mean")) for m in attributions]
        lines.append(f"| {r.label or r.key} | {_fmt((r.train or {}).get('test_accuracy'), 2)} | " + " | ".join(cells) + " |")
    lines.append("| paper, CIFAR-10, T = 1000 | – | " + " | ".join(_fmt(CODA_CIFAR10_LOCALISATION.get(m))
                                                                 for m in attributions) + " |")
    sweep = t_sweep_table(results)
    if len(sweep):
        lines += ["", "| T | test acc. (%) | localisation (own) | paper (CIFAR-10) |", "|---|---|---|---|"]
        for _, row in sweep.iterrows():
            lines.append(f"| {row['T']:g} | {_fmt(row['test_accuracy'], 2)} | {_fmt(row['localisation'])} | "
                         f"{_fmt(row['paper_localisation'], 2)} |")
    for r in results_of(results, method="CoDA"):
        m = r.metric("dau_input_localisation")
        if m:
            lines += ["", f"{r.label or r.key}: localisation at the input of the first DAU layer (`{m['layer']}`, "
                      f"{m['n_grids']} grids): own explanation {_fmt(m.get('own'))}, Grad-CAM at the same layer "
                      f"{_fmt(m.get('gradcam'))}; test accuracy {_fmt((r.train or {}).get('test_accuracy'), 2)} %."]
    return "\n".join(lines) + "\n"


figures = coda_figures
report = coda_report
