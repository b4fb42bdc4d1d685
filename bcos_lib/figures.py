"""Every figure the notebooks show and the pipeline writes.

Each function takes data (tensors, DataFrames, the dicts the stages save) and returns a
matplotlib Figure; none reads files or calls plt.show().  Colours: contribution maps use
a diverging map centred at 0 (red = evidence for the class, blue = against).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["show_image", "show_contributions", "show_rgba", "plot_explanations", "plot_model_comparison",
           "plot_multiclass", "plot_layers", "plot_training_curves", "plot_b_sweep", "plot_samples",
           "plot_localisation", "plot_deletion"]


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().float().numpy() if isinstance(t, Tensor) else np.asarray(t)


def show_image(ax: Any, image: Tensor, title: str | None = None) -> None:
    """An image (C, H, W) in [0, 1], grey or RGB."""
    im = _np(image)
    if im.shape[0] == 1:
        ax.imshow(im[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.transpose(im[:3], (1, 2, 0)).clip(0, 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def show_contributions(ax: Any, cmap_values: Tensor, title: str | None = None, percentile: float = 99.5) -> None:
    """A contribution map (H, W), symmetric colour range at the ``percentile`` of |values|."""
    v = _np(cmap_values)
    lim = float(np.percentile(np.abs(v), percentile)) or 1e-12
    ax.imshow(v, cmap="bwr", vmin=-lim, vmax=lim)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def show_rgba(ax: Any, rgba: Tensor, title: str | None = None) -> None:
    """A colour explanation (H, W, 4) on a black background (as in the B-cos papers)."""
    v = _np(rgba)
    ax.imshow(np.zeros(v.shape[:2]), cmap="gray", vmin=0, vmax=1)
    ax.imshow(v)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def plot_samples(images: Tensor, labels: Tensor, classes: Sequence[str], n: int = 20) -> Figure:
    """A grid of dataset images with their class names."""
    n = min(n, len(images))
    cols = min(10, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.35 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(ax, images[i], classes[int(labels[i])])
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_explanations(saved: dict[str, Any]) -> Figure:
    """One model's explanations (a dict as saved by the explain stage): image, contribution
    map, and colour explanation (B-cos-style models) per image."""
    n = len(saved["images"])
    rows = 3 if saved.get("rgba") is not None else 2
    fig, axes = plt.subplots(rows, n, figsize=(1.3 * n, 1.45 * rows), squeeze=False)
    classes = saved["classes"]
    for i in range(n):
        pred = int(saved["targets"][i])
        show_image(axes[0, i], saved["images"][i], f"{classes[int(saved['labels'][i])]}")
        show_contributions(axes[1, i], saved["contribution_map"][i], f"→ {classes[pred]}")
        if rows == 3:
            show_rgba(axes[2, i], saved["rgba"][i])
    axes[0, 0].set_ylabel("image")
    name = "W(x)ᵀx contributions" if saved.get("explainable") else "Input×Gradient"
    fig.suptitle(f"{saved.get('label', saved.get('key', ''))}: {name} for the predicted class", fontsize=9)
    fig.tight_layout()
    return fig


def plot_model_comparison(saved_by_model: dict[str, dict[str, Any]]) -> Figure:
    """Images, then for each model its contribution map (and colour explanation when it has one)."""
    first = next(iter(saved_by_model.values()))
    n = len(first["images"])
    rows: list[tuple[str, str, Any]] = [("image", "image", None)]
    for key, s in saved_by_model.items():
        lab = s.get("label", key)
        rows.append((f"{lab}\n" + ("W(x)⊙x" if s.get("explainable") else "Input×Grad"), "map", s))
        if s.get("rgba") is not None:
            rows.append((f"{lab}\ncolour", "rgba", s))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.25 * n + 1.2, 1.3 * len(rows)), squeeze=False)
    for r, (name, kind, s) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            if kind == "image":
                show_image(ax, first["images"][i], first["classes"][int(first["labels"][i])] if r == 0 else None)
            elif kind == "map":
                show_contributions(ax, s["contribution_map"][i])
            else:
                show_rgba(ax, s["rgba"][i])
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def plot_multiclass(saved: dict[str, Any]) -> Figure:
    """Explanations of several classes (the highest logits) for the same images."""
    m = saved["multi"]
    n_img, k = m["targets"].shape
    has_rgba = m.get("rgba") is not None
    cols = 1 + k * (2 if has_rgba else 1)
    fig, axes = plt.subplots(n_img, cols, figsize=(1.3 * cols, 1.45 * n_img), squeeze=False)
    classes = saved["classes"]
    for i in range(n_img):
        show_image(axes[i, 0], saved["images"][i], "image")
        for j in range(k):
            c = classes[int(m["targets"][i, j])]
            col = 1 + j * (2 if has_rgba else 1)
            show_contributions(axes[i, col], m["contribution_map"][i, j], c)
            if has_rgba:
                show_rgba(axes[i, col + 1], m["rgba"][i, j], c)
    fig.suptitle(f"{saved.get('label', '')}: the same image explained for different classes", fontsize=9)
    fig.tight_layout()
    return fig


def plot_layers(saved: dict[str, Any]) -> Figure:
    """Explanations of intermediate layers: the most active channel of each layer, for one image."""
    layers = saved["layers"]
    has_rgba = any(v.get("rgba") is not None for v in layers.values())
    cols = 1 + len(layers)
    rows = 2 if has_rgba else 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows), squeeze=False)
    show_image(axes[0, 0], saved["images"][0], "image")
    if has_rgba:
        axes[1, 0].set_axis_off()
    for j, (name, v) in enumerate(layers.items(), start=1):
        show_contributions(axes[0, j], v["contribution_map"], f"{name}\nch {v['channel']}")
        if has_rgba and v.get("rgba") is not None:
            show_rgba(axes[1, j], v["rgba"])
    fig.suptitle(f"{saved.get('label', '')}: explanations of hidden units (interpretable depth)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_training_curves(histories: dict[str, pd.DataFrame]) -> Figure:
    """Test accuracy and train loss per epoch for each model."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, h in histories.items():
        a1.plot(h["epoch"], h["test_accuracy"], marker="o", label=key)
        a2.plot(h["epoch"], h["train_loss"], marker="o", label=key)
    a1.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    a2.set(xlabel="epoch", ylabel="train loss", title="train loss (bce or ce)")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_b_sweep(sweep: pd.DataFrame, paper: pd.DataFrame | None = None) -> Figure:
    """Accuracy and localisation against B.  ``sweep``: columns b, test_accuracy and
    (optional) localisation; ``paper``: columns b, accuracy (the v1 CIFAR-10 numbers)."""
    has_loc = "localisation" in sweep and sweep["localisation"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_loc else 1, figsize=(9 if has_loc else 4.8, 3.3), squeeze=False)
    a = axes[0, 0]
    a.plot(sweep["b"], sweep["test_accuracy"], marker="o", label="this pipeline (Fashion-MNIST)")
    a.set(xlabel="B", ylabel="test accuracy (%)", title="accuracy vs B")
    if paper is not None and len(paper):
        a2 = a.twinx()
        a2.plot(paper["b"], paper["accuracy"], marker="s", ls="--", color="tab:gray", label="paper v1 (CIFAR-10)")
        a2.set_ylabel("paper accuracy (%)", color="tab:gray")
        h1, l1 = a.get_legend_handles_labels()
        h2, l2 = a2.get_legend_handles_labels()
        a.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    if has_loc:
        b = axes[0, 1]
        b.plot(sweep["b"], sweep["localisation"], marker="o", color="tab:green")
        b.set(xlabel="B", ylabel="mean localisation (own explanation)", title="grid pointing game vs B", ylim=(0, 1))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- evaluation (SPEC §6)
def _method_labels(methods: pd.Series) -> pd.Series:
    """Method names → their plot labels (``bcos_lib.attribution.method_label``); unknown names stay."""
    from .attribution import METHODS, method_label

    known = set(METHODS) | {"random"}
    return methods.map(lambda m: method_label(m) if m in known else m)


def plot_localisation(scores: pd.DataFrame, ax: Any = None, uniform: float | None = None) -> Figure:
    """Grid pointing game scores (the rows of ``bcos_lib.metrics.score_grids``, several models
    concatenated with a ``model`` column): one box per method and model, and a dashed line at
    the score of a uniform map, 1/n² (from ``uniform`` or the number of cells per grid)."""
    import seaborn as sns

    df = scores.assign(method_label=_method_labels(scores["method"]))
    order = list(dict.fromkeys(df["method_label"]))
    hue = "model" if "model" in df.columns and df["model"].nunique() > 1 else None
    if ax is None:
        n_boxes = len(order) * (df["model"].nunique() if hue else 1)
        fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * n_boxes + 2.5), 3.4))
    else:
        fig = ax.figure
    with warnings.catch_warnings():
        # seaborn 0.13 passes Matplotlib's deprecated `vert` to bxp (Matplotlib ≥ 3.11 warns); not ours to fix
        warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(data=df, x="method_label", y="score", hue=hue, order=order, ax=ax, fliersize=1.5, linewidth=0.8)
    if uniform is None and "cell" in df.columns and len(df):
        uniform = 1.0 / (int(df["cell"].max()) + 1)
    if uniform is not None:
        ax.axhline(uniform, ls="--", lw=1, color="tab:gray", label="uniform")
        ax.text(ax.get_xlim()[1], uniform, " uniform", va="center", ha="left", fontsize=7, color="tab:gray")
    ax.set(xlabel="", ylabel="localisation score", ylim=(-0.02, 1.02),
           title="grid pointing game (share of positive attribution in the target's cell)")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.title.set_fontsize(9)
    if hue:
        ax.legend(fontsize=7, title="model", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_deletion(deletion: pd.DataFrame, ax: Any = None) -> Figure:
    """Pixel-deletion curves (the rows of ``bcos_lib.metrics.pixel_deletion``, several models
    concatenated with a ``model`` column): the mean probability of the predicted class
    against the fraction of pixels removed, one colour per method (the same in every panel),
    solid = most important first, dashed = least important first, dotted = random order.
    One panel per model (one axis when ``ax`` is given: then the colours name model and method)."""
    import seaborn as sns

    if deletion.empty:
        raise ValueError("no pixel-deletion results to plot (evaluate.deletion_methods was empty)")
    df = deletion.assign(method=_method_labels(deletion["method"]))
    models = list(dict.fromkeys(df["model"])) if "model" in df.columns else [None]
    if ax is not None and len(models) > 1:
        df = df.assign(method=df["model"].astype(str) + ": " + df["method"])
    names = list(dict.fromkeys(df["method"]))
    palette = dict(zip(names, sns.color_palette("tab10", len(names))))
    dashes = {"most": "", "least": (4, 2), "random": (1, 1.5)}
    if ax is not None:
        fig, panels = ax.figure, [(ax, df, "pixel deletion" if len(models) > 1 else str(models[0] or "pixel deletion"))]
    else:
        fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models) + 1.8, 3.3), squeeze=False, sharey=True)
        panels = [(a, df if m is None else df[df["model"] == m], "pixel deletion" if m is None else str(m))
                  for a, m in zip(axes[0], models)]
    for a, d, title in panels:
        sns.lineplot(data=d, x="fraction", y="score", hue="method", palette=palette, style="order", dashes=dashes,
                     marker="o", markersize=3, ax=a, legend=False)
        a.set(xlabel="fraction of pixels removed", ylabel="probability of the predicted class", title=title,
              xlim=(0, 1), ylim=(-0.02, 1.02))
    from matplotlib.lines import Line2D

    orders = [o for o in dashes if o in set(df["order"])]
    handles = [Line2D([], [], color=palette[n], marker="o", markersize=3, label=n) for n in names]
    order_names = {"most": "most important first", "least": "least important first", "random": "random order"}
    handles += [Line2D([], [], color="black", ls=(0, dashes[o]) if dashes[o] else "-", label=order_names[o])
                for o in orders]
    panels[-1][0].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- tutorials
__all__ += ["plot_bcos_response", "plot_toy_alignment", "plot_dynamic_linear"]


def plot_bcos_response(angles_deg: np.ndarray | Tensor, responses: dict[str, np.ndarray | Tensor]) -> Figure:
    """A unit's output for inputs of norm 1 against the angle between input and weight, one
    curve per label (e.g. ``"B = 2"``): as a function of the angle, and in polar form."""
    theta = _np(angles_deg)
    fig = plt.figure(figsize=(9.5, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    polar = fig.add_subplot(1, 2, 2, projection="polar")
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(responses)))
    for (label, r), colour in zip(responses.items(), colours):
        r = _np(r)
        ax.plot(theta, r, color=colour, label=label)
        # |output| as the radius: solid where the output is positive, dotted where negative
        pos = np.where(r >= 0, r, np.nan)
        neg = np.where(r < 0, -r, np.nan)
        polar.plot(np.deg2rad(theta), pos, color=colour)
        polar.plot(np.deg2rad(theta), neg, color=colour, ls=":")
    ax.axhline(0, color="tab:gray", lw=0.6)
    ax.set(xlabel="angle between x and w (degrees)", ylabel="unit output (‖x‖ = 1)", xlim=(theta.min(), theta.max()),
           title="output against the angle")
    ax.set_xticks(np.arange(-180, 181, 90))
    ax.legend(fontsize=7)
    polar.set_title("|output| around w (dotted: negative)", fontsize=9)
    polar.set_rticks([0.5, 1.0])
    polar.tick_params(labelsize=7)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def plot_toy_alignment(x: Tensor, y: Tensor, results: dict[str, dict[str, Any]],
                       class_names: Sequence[str] | None = None) -> Figure:
    """The 2-D alignment experiment: one panel per trained model, then the alignment per model.

    ``results[label]`` holds ``weights`` (K, 2), ``alignment`` (K,) and optionally ``grid`` =
    (xx, yy, probabilities (K, n, n)) from ``bcos_lib.toy.class_probability_grid``.  Each panel
    shows the inputs coloured by class, the region where each class's probability exceeds
    0.5 (shaded) and each unit's weight direction (arrow)."""
    xs, ys = _np(x), _np(y).astype(int)
    k = int(ys.max()) + 1
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(k)]
    colours = plt.cm.tab10(np.arange(k))
    n = len(results)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.6 * n + 3.2, 2.9), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n + [1.25]})
    lim = float(np.abs(xs).max()) * 1.15
    for ax, (label, r) in zip(axes[0], results.items()):
        if r.get("grid") is not None:
            xx, yy, probs = (_np(t) for t in r["grid"])
            for c in range(k):
                ax.contourf(xx, yy, probs[c], levels=[0.5, 1.0], colors=[colours[c]], alpha=0.15)
                ax.contour(xx, yy, probs[c], levels=[0.5], colors=[colours[c]], linewidths=0.8)
        for c in range(k):
            pts = xs[ys == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=4, color=colours[c], alpha=0.6, label=names[c])
        w = _np(r["weights"])
        w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12) * lim * 0.85
        for c in range(k):
            ax.annotate("", xy=(w[c, 0], w[c, 1]), xytext=(0, 0),
                        arrowprops={"arrowstyle": "-|>", "color": colours[c], "lw": 1.8, "shrinkA": 0, "shrinkB": 0})
        ax.plot(0, 0, "k+", ms=6)
        cos = ", ".join(f"{float(a):.2f}" for a in _np(r["alignment"]))
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=f"{label}\ncos(w_c, x) = {cos}")
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="lower left", markerscale=2)
    bar = axes[0, n]
    labels = list(results)
    width = 0.8 / k
    for c in range(k):
        vals = [float(_np(results[lab]["alignment"])[c]) for lab in labels]
        bar.bar(np.arange(n) + (c - (k - 1) / 2) * width, vals, width, color=colours[c], label=names[c])
    bar.set_xticks(np.arange(n), [lab.replace(", ", "\n") for lab in labels], fontsize=7)
    bar.set(ylim=(0, 1), ylabel="mean cos(w_c, x) over class c", title="alignment of each unit with its class")
    bar.title.set_fontsize(8)
    bar.yaxis.label.set_fontsize(8)
    bar.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def plot_dynamic_linear(image: Tensor, weights: Tensor, contributions: Tensor, contribution_map: Tensor,
                        rgba: Tensor | None = None, channel_names: Sequence[str] | None = None,
                        title: str | None = None) -> Figure:
    """One explanation taken apart: the image, W(x) and W(x) ⊙ x for each input channel, their
    sum over channels (the contribution map) and the colour explanation.

    ``weights`` and ``contributions`` are (C, H, W) for one image and one target,
    ``contribution_map`` (H, W), ``rgba`` (H, W, 4)."""
    c = weights.shape[0]
    names = list(channel_names) if channel_names is not None else [f"channel {i}" for i in range(c)]
    cols = 1 + 2 * c + 1 + (rgba is not None)
    fig, axes = plt.subplots(1, cols, figsize=(1.55 * cols, 1.95), squeeze=False)
    ax = iter(axes[0])
    show_image(next(ax), image, "image")
    for i in range(c):
        show_contributions(next(ax), weights[i], f"W(x), {names[i]}")
    for i in range(c):
        show_contributions(next(ax), contributions[i], f"W(x)⊙x, {names[i]}")
    show_contributions(next(ax), contribution_map, "Σ channels\n(contribution map)")
    if rgba is not None:
        show_rgba(next(ax), rgba, "colour\nexplanation")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
