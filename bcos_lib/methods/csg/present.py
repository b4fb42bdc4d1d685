"""Class-specific gates' figures and report section: the gate matrices, MIS of CSG against standard
training, what a class's top filters see, and the table of the four models (Liang et al., ECCV
2020).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.contract import ModelResult, results_of
from .metrics import feature_maps

#: CSG (Liang et al., ECCV 2020): the defaults of the method (§3.3) and its claims, as stated
#: (qualitative: the numbers are for CIFAR-10 / ImageNet / VOC networks, not comparable here)
CSG_DEFAULTS = {"gate_init": 0.5, "sparsity_weight": 1e-3, "density": 0.2}
CSG_CLAIMS = (
    "accuracy comparable to standard training of the same network",
    "a much higher mutual-information score (MIS): each last-layer filter serves few classes",
    "better localisation by the class-specific filters' maps than by the standard network's",
    "the class-specific activation pattern detects adversarial samples better than the standard network's",
)
PAPER_NUMBERS = {"CSG_DEFAULTS": CSG_DEFAULTS, "CSG_CLAIMS": CSG_CLAIMS}



#: the params.yaml group of the four models compared in the report (standard, CSG, B-cos, B-cos + CSG)
CSG_GROUP = "csg"
#: the class whose filters the filter-map figure shows (the first class where a dataset has no such name)
FIGURE_CLASS = "Sneaker"


# ----------------------------------------------------------------------------- options and schedule


def _table_matrix(df: pd.DataFrame, value: str, rows: str, cols: str) -> np.ndarray:
    return df.pivot(index=rows, columns=cols, values=value).sort_index().sort_index(axis=1).to_numpy()


def filter_order(gate: np.ndarray) -> np.ndarray:
    """Filters sorted by the class they are most open for, then by how exclusive they are
    (fewest open classes first): the gate heatmap then shows one block per class."""
    own = gate.argmax(1)
    return np.lexsort((gate.sum(1), own))


def plot_gate_matrices(gates: Mapping[str, np.ndarray], classes: tuple[str, ...] | list[str]) -> Any:
    """The learnt gate matrices (classes × filters), filters sorted by their class."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(gates), 1, figsize=(9, 2.4 * len(gates) + 0.4), squeeze=False)
    for ax, (label, g) in zip(axes[:, 0], gates.items()):
        im = ax.imshow(g[filter_order(g)].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("filter of the last conv layer (sorted by its class)", fontsize=8)
        ax.set_title(f"{label}: gate density {g.mean():.2f}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    fig.tight_layout()
    from ...figures import finished
    return finished(fig)


def plot_mis(per_filter: Mapping[str, np.ndarray]) -> Any:
    """Each filter's max-over-classes MI, per model (dots), with the MIS (their mean, a bar)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.6 * len(per_filter) + 1.5, 3.4))
    rng = np.random.default_rng(0)
    for i, (label, v) in enumerate(per_filter.items()):
        gated = "CSG" in label
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=7, alpha=0.55, color="C1" if gated else "C0")
        ax.hlines(v.mean(), i - 0.3, i + 0.3, color="k", lw=2)
        ax.text(i + 0.32, v.mean(), f"{v.mean():.3f}", va="center", fontsize=7)
    ax.set_xticks(range(len(per_filter)), list(per_filter), rotation=20, ha="right", fontsize=9)
    bound = -0.9 * np.log(0.9) - 0.1 * np.log(0.1)   # H(1/10): all a filter can say about one of 10 balanced classes
    ax.axhline(bound, ls=":", color="grey", lw=1)
    ax.text(len(per_filter) - 0.5, bound, "most possible for one of 10 classes", ha="right", va="bottom", fontsize=8,
            color="grey")
    top = max([bound] + [float(np.max(v)) for v in per_filter.values() if len(v)])
    ax.set_ylim(0, 1.1 * top)   # the bound always on the axis
    ax.set_ylabel("max over classes of MI (nats)", fontsize=9)
    ax.set_title("Mutual-information score per filter: CSG (orange) vs standard training (blue);\n"
                 "black bar = MIS, the mean over filters", fontsize=9)
    fig.tight_layout()
    from ...figures import finished
    return finished(fig)


def top_filters(mi: np.ndarray, gate: np.ndarray | None, cls: int, k: int = 3) -> np.ndarray:
    """The class's ``k`` top filters: by gate value (ties broken by MI) for a gated model, by MI otherwise."""
    keys = (mi[cls],) if gate is None else (mi[cls], gate[:, cls])
    return np.lexsort(keys)[::-1][:k].copy()


def figure_images(test: Any, cls: int, n_class: int = 2, others: tuple[str, ...] = ("Sandal", "Bag")) -> tuple[Tensor, list[str]]:
    """Images for :func:`plot_filter_maps`: ``n_class`` test images of class ``cls`` and one of each
    class of ``others`` (where the data has them), with their class names.  A filter specific to
    ``cls`` fires on the first and stays silent on the others."""
    picks = [int(i) for i in torch.nonzero(test.labels == cls).flatten()[:n_class]]
    for name in others:
        if name in test.classes and test.classes.index(name) != cls:
            found = torch.nonzero(test.labels == test.classes.index(name)).flatten()
            picks += [int(found[0])] if len(found) else []
    return test.images[picks], [test.classes[int(test.labels[i])] for i in picks]


def plot_filter_maps(images: Tensor, rows: Mapping[str, tuple[Tensor, np.ndarray]], class_name: str,
                     image_classes: list[str] | None = None) -> Any:
    """What a class's top filters see: for each model (row), each image and each of the class's top
    filters, the filter's positive activation (upsampled) over the image, opaque where it fires most
    and transparent where it is silent.  Each filter's maps are scaled to its largest activation over
    all the images shown, so that a filter specific to the class is bright on its images and dark on
    the others (``image_classes``: the images' class names, for the column titles).  ``rows``:
    label → (feature maps (N, C, h, w) of ``images``, the top filters' indices)."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    n_img, k = len(images), max(len(f) for _, f in rows.values())
    fig, axes = plt.subplots(len(rows), n_img * k, figsize=(1.35 * n_img * k + 1.2, 1.55 * len(rows) + 0.9),
                             squeeze=False)
    size = images.shape[-2:]
    cmap = colormaps["inferno"]
    for r, (label, (maps, filters)) in enumerate(rows.items()):
        up = F.interpolate(maps[:, filters].clamp_min(0), size=size, mode="bilinear", align_corners=False)
        peaks = up.amax(dim=(0, 2, 3))   # per filter, over every image shown
        for i in range(n_img):
            for j in range(len(filters)):
                ax = axes[r, i * k + j]
                ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
                peak = float(peaks[j])
                if peak > 1e-12:
                    norm = (up[i, j] / peak).numpy()
                    rgba = cmap(norm)
                    rgba[..., 3] = 0.85 * norm   # where the filter is silent, the image shows through
                    ax.imshow(rgba)
                else:
                    ax.text(0.5, 0.5, "silent", transform=ax.transAxes, ha="center", va="center", fontsize=8,
                            color="white")
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    what = image_classes[i] if image_classes else f"image {i + 1}"
                    ax.set_title(f"{what}\nfilter #{j + 1}", fontsize=8)
                ax.set_xlabel(f"filter {filters[j]}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle(f"Where the top filters of class “{class_name}” fire, on its images and on other classes' "
                 "(each filter scaled to its largest activation over these images; transparent where silent)",
                 fontsize=10)
    fig.tight_layout()
    from ...figures import finished
    return finished(fig)


def _gate_of(r: ModelResult) -> np.ndarray | None:
    t = r.tables.get("gate_matrix")
    return None if t is None or not len(t) else _table_matrix(t, "gate", "filter", "class")


def _mi_of_result(r: ModelResult) -> np.ndarray | None:
    t = r.tables.get("mutual_information")
    return None if t is None or not len(t) else _table_matrix(t, "mi", "class", "filter")


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    """The gate matrices, MIS of CSG vs standard training, and what a class's top filters see."""
    group = [r for r in results_of(results, group=CSG_GROUP) if r.evaluate]
    if not group:
        return {}
    out: dict[str, Any] = {}
    from ...core.pipeline import load_data, load_trained
    test = load_data(run, "test")
    gates = {r.label or r.key: g for r in group if (g := _gate_of(r)) is not None}
    if gates:
        out["csg_gate_matrix"] = plot_gate_matrices(gates, test.classes)
    mis = {r.label or r.key: mi.max(0) for r in group if (mi := _mi_of_result(r)) is not None}
    if mis:
        out["csg_mis"] = plot_mis(mis)
    cls = test.classes.index(FIGURE_CLASS) if FIGURE_CLASS in test.classes else 0
    images, image_classes = figure_images(test, cls)
    rows = {}
    for r in group:
        mi = _mi_of_result(r)
        if mi is None:
            continue
        model = load_trained(run, r.key)
        rows[r.label or r.key] = (feature_maps(model, images, device=run.device), top_filters(mi, _gate_of(r), cls))
    if rows and len(images):
        out["csg_filter_maps"] = plot_filter_maps(images, rows, test.classes[cls], image_classes)
    return out


# ----------------------------------------------------------------------------- report


def _twin(r: ModelResult, group: list[ModelResult]) -> ModelResult | None:
    """The ungated model of the same shape as gated ``r``: its ``twin`` in params.yaml."""
    return next((o for o in group if o.key == r.entry.twin), None)


def csg_table(results: Mapping[str, ModelResult]) -> pd.DataFrame:
    """One row per model of the ``csg`` group: accuracy (and its difference to the ungated twin),
    gate density and gated accuracy, MIS, filter localisation and the detection AUROCs."""
    group = list(results_of(results, group=CSG_GROUP))
    rows = []
    for r in group:
        gate, mis, loc, det = (r.metric(m) or {} for m in ("gate", "mis", "filter_localisation",
                                                            "adversarial_detection"))
        acc = (r.train or {}).get("test_accuracy")
        twin = _twin(r, group) if r.entry.arch.startswith("csg_") else None
        twin_acc = (twin.train or {}).get("test_accuracy") if twin else None
        rows.append({"model": r.key, "label": r.label or r.key, "test_accuracy": acc,
                     "accuracy_vs_twin": None if acc is None or twin_acc is None else acc - twin_acc,
                     "accuracy_true_gate": gate.get("accuracy_true_gate"), "density": gate.get("density"),
                     "mis": mis.get("mis"), "filter_localisation": loc.get("mean"),
                     "localisation_assignment": loc.get("assignment"), "auroc_forest": det.get("auroc_forest"),
                     "auroc_class_mean": det.get("auroc_class_mean"), "auroc_gate": det.get("auroc_gate"),
                     "attack_success_rate": det.get("attack_success_rate")})
    return pd.DataFrame(rows)


def report(results: Mapping[str, ModelResult]) -> str:
    table = csg_table(results)
    if not len(table):
        return ""

    def f(v: Any, nd: int = 2, signed: bool = False) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        return f"{v:+.{nd}f}" if signed else f"{v:.{nd}f}"

    header = ["model", "test acc. (%)", "Δ vs ungated twin", "acc. with true-label gate (%)", "gate density",
              "MIS (nats)", "filter localisation", "detection AUROC (forest)", "AUROC (class-mean template)",
              "AUROC (gate template)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.itertuples():
        loc = f(r.filter_localisation, 3) + (f" ({r.localisation_assignment})" if r.localisation_assignment else "")
        lines.append("| " + " | ".join([r.label, f(r.test_accuracy), f(r.accuracy_vs_twin, 2, True),
                                         f(r.accuracy_true_gate), f(r.density), f(r.mis, 3), loc, f(r.auroc_forest, 3),
                                         f(r.auroc_class_mean, 3), f(r.auroc_gate, 3)]) + " |")
    claims = "\n".join(f"- {c}" for c in CSG_CLAIMS)
    return ("### Class-specific gates (CSG, Liang et al., ECCV 2020)\n\n" + "\n".join(lines) + "\n\n"
            "Gate density: ‖G‖₁/|G| (1 for an ungated network); the true-label gate sees the label, so its accuracy is "
            "an upper bound, not a test accuracy.  Filter localisation: the grid pointing game on each class's filter "
            "maps, the filters weighted by the gate (gate) or assigned to their highest-MI class (mi).  Detection: PGD "
            "images against clean ones, from the pooled last-layer activations weighted by the predicted class's gate "
            "column (a random forest, cross-validated) or by their distance to a class template.\n\n"
            "The paper's claims (ECCV 2020, on CIFAR-10, ImageNet and PASCAL VOC):\n\n" + claims + "\n\n"
            "![gate matrix](figures/csg_gate_matrix.png) ![MIS](figures/csg_mis.png)\n\n"
            "![top filters](figures/csg_filter_maps.png)\n")
