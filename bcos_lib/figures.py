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

__all__ = ["finished", "show_image", "show_contributions", "show_rgba", "plot_explanations", "plot_model_comparison",
           "plot_multiclass", "plot_layers", "plot_training_curves", "plot_samples",
           "plot_localisation", "plot_deletion"]


def finished(fig: Figure) -> Figure:
    """``fig``, closed in pyplot and returned: every figure function of the library ends with it.

    A notebook then shows the figure once, as the cell's value or through ``display()`` (a closed
    figure still draws), instead of a second time when the inline backend draws every figure
    pyplot still holds at the end of the cell; and a loop that draws one figure per model does
    not pile them up in pyplot (its "more than 20 figures" warning)."""
    plt.close(fig)
    return fig


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


def contribution_key(fig: Figure, axes: Any, label: str = "contribution to the class logit") -> Any:
    """The colour key of :func:`show_contributions` maps, as a colour bar beside ``axes``: red =
    evidence for the class, blue = against it, white = none.  Each map is scaled to its own
    largest values, so the key names the sign, not a value."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), cmap="bwr"), ax=axes, fraction=0.025, pad=0.02,
                       ticks=[-1, 0, 1])
    bar.ax.set_yticklabels(["against", "0", "for"], fontsize=7)
    bar.set_label(label, fontsize=7)
    return bar


def row_label(ax: Any, text: str) -> None:
    """A label left of a row of images (``set_ylabel`` does not show on axes that are switched off)."""
    ax.text(-0.08, 0.5, text, transform=ax.transAxes, ha="right", va="center", fontsize=7)


COLOUR_EXPLANATION = "colour explanation\n(opacity = contribution\nfor the {})"


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
    return finished(fig)


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
    name = "contributions W(x)⊙x" if saved.get("explainable") else "Input×Gradient"
    row_label(axes[0, 0], "image\n(true class)")
    row_label(axes[1, 0], f"{name}\n(→ predicted class)")
    if rows == 3:
        row_label(axes[2, 0], COLOUR_EXPLANATION.format("class"))
    fig.suptitle(f"{saved.get('label', saved.get('key', ''))}: {name} for the predicted class", fontsize=9)
    fig.tight_layout(rect=(0.1, 0, 0.93, 1))
    contribution_key(fig, axes[1, :].tolist())
    return finished(fig)


def plot_model_comparison(saved_by_model: dict[str, dict[str, Any]]) -> Figure:
    """Images, then for each model its contribution map (and colour explanation when it has one)."""
    first = next(iter(saved_by_model.values()))
    n = len(first["images"])
    rows: list[tuple[str, str, Any]] = [("image", "image", None)]
    for key, s in saved_by_model.items():
        lab = s.get("label", key)
        rows.append((f"{lab}\n" + ("W(x)⊙x" if s.get("explainable") else "Input×Gradient"), "map", s))
        if s.get("rgba") is not None:
            rows.append((f"{lab}\ncolour explanation", "rgba", s))
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
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    contribution_key(fig, axes.ravel().tolist())
    if any(kind == "rgba" for _, kind, _ in rows):
        fig.text(0.5, -0.01, "colour explanation: the input colour each pixel's weights align with, "
                 "opacity = contribution for the class (black: none)", ha="center", va="top", fontsize=7)
    return finished(fig)


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
            show_contributions(axes[i, col], m["contribution_map"][i, j], f"for “{c}”")
            if has_rgba:
                show_rgba(axes[i, col + 1], m["rgba"][i, j], f"colour, “{c}”")
    fig.suptitle(f"{saved.get('label', '')}: the same image explained for its {k} highest-scoring classes",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    contribution_key(fig, axes.ravel().tolist())
    return finished(fig)


def layer_title(name: str, entry: dict[str, Any] | None = None) -> str:
    """How a figure names a hidden layer: the ``title`` the explain stage stored with it, else
    the position in the network that its module path (``features.8``) gives."""
    if entry and entry.get("title"):
        return str(entry["title"])
    parts = name.split(".")
    if len(parts) == 2 and parts[1].isdigit():
        return f"hidden layer {int(parts[1]) + 1}"
    return name


def plot_layers(saved: dict[str, Any], titles: dict[str, str] | None = None) -> Figure:
    """Explanations of intermediate layers: the most active channel of each layer, for one image.
    ``titles`` names the layers (default: :func:`layer_title`)."""
    layers = saved["layers"]
    has_rgba = any(v.get("rgba") is not None for v in layers.values())
    cols = 1 + len(layers)
    rows = 2 if has_rgba else 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows), squeeze=False)
    show_image(axes[0, 0], saved["images"][0], "image")
    if has_rgba:
        axes[1, 0].set_axis_off()
    for j, (name, v) in enumerate(layers.items(), start=1):
        title = ((titles or {}).get(name) or layer_title(name, v)).replace(", ", ",\n")
        show_contributions(axes[0, j], v["contribution_map"], f"{title}\nunit {v['channel']}")
        if has_rgba and v.get("rgba") is not None:
            show_rgba(axes[1, j], v["rgba"])
    if has_rgba:
        axes[1, 0].text(0.5, 0.5, COLOUR_EXPLANATION.format("unit"), transform=axes[1, 0].transAxes, ha="center", va="center",
                        fontsize=7)
    fig.suptitle(f"{saved.get('label', '')}: what the most active unit of each layer responds to, "
                 "explained in the input", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    contribution_key(fig, axes[0, :].tolist(), label="contribution to the unit")
    return finished(fig)


_LOSS_NAMES = {"bce": "binary cross-entropy", "ce": "cross-entropy"}


def plot_training_curves(histories: dict[str, pd.DataFrame], losses: dict[str, str] | None = None) -> Figure:
    """Test and training accuracy per epoch for each model (integer epochs).

    Losses of different kinds (binary cross-entropy for B-cos models, cross-entropy for
    conventional ones) are not on one scale, so the training loss is drawn only when
    ``losses`` (model key → ``"bce"`` / ``"ce"``) names each model's loss: one panel per kind.
    """
    from matplotlib.ticker import MaxNLocator

    kinds = list(dict.fromkeys((losses or {}).get(k) for k in histories)) if losses else []
    if None in kinds:
        kinds = []  # a model whose loss is unknown: no loss panels rather than a misleading one
    fig, axes = plt.subplots(1, 2 + len(kinds), figsize=(4.5 * (2 + len(kinds)), 3.2), squeeze=False)
    a1, a2, *loss_axes = axes[0]
    colours = dict(zip(histories, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10))
    for key, h in histories.items():
        tested = h.dropna(subset=["test_accuracy"])   # the epochs tested (train.test_every; always the last)
        a1.plot(tested["epoch"], tested["test_accuracy"], marker="o", color=colours[key], label=key)
        a2.plot(h["epoch"], h["train_accuracy"], marker="o", color=colours[key], label=key)
        for kind, a in zip(kinds, loss_axes):
            if losses[key] == kind:
                a.plot(h["epoch"], h["train_loss"], marker="o", color=colours[key], label=key)
    a1.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (the epochs tested)")
    a2.set(xlabel="epoch", ylabel="training accuracy (%)", title="training accuracy (running, per epoch)")
    for kind, a in zip(kinds, loss_axes):
        a.set(xlabel="epoch", ylabel=f"training loss ({_LOSS_NAMES.get(kind, kind)})",
              title=f"training loss: {_LOSS_NAMES.get(kind, kind)}")
        a.legend(fontsize=7)
    for a in axes[0]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.legend(fontsize=7)
    fig.tight_layout()
    return finished(fig)


def _attribution_labels(attributions: pd.Series) -> pd.Series:
    """Attribution names → their plot labels (``bcos_lib.explain.attribution_label``); unknown names stay."""
    from .explain import attribution_label, list_attributions

    known = set(list_attributions()) | {"random"}
    return attributions.map(lambda m: attribution_label(m) if m in known else m)


def _grid(n: int, width: float, height: float, ncol_max: int = 3, **kw: Any) -> tuple[Figure, list[Any]]:
    """A figure of ``n`` panels in rows of at most ``ncol_max`` (each ``width`` × ``height`` inches);
    the unused panels of the last row are removed."""
    ncol = max(1, min(ncol_max, n))
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False, **kw)
    flat = list(axes.flat)
    for extra in flat[n:]:
        extra.remove()
    return fig, flat[:n]


def plot_localisation(scores: pd.DataFrame, ax: Any = None, uniform: float | None = None) -> Figure:
    """Grid pointing game scores (the rows of ``bcos_lib.metrics.score_grids``, several models
    concatenated with a ``model`` column): one panel per model (rows of three), a horizontal box
    per attribution, and a dashed line at the score of a uniform map, 1/n² (from
    ``uniform`` or the number of cells per grid).  With ``ax``: one panel, the models as colours."""
    import seaborn as sns

    df = scores.assign(attribution_label=_attribution_labels(scores["attribution"]))
    order = list(dict.fromkeys(df["attribution_label"]))
    if uniform is None and "cell" in df.columns and len(df):
        uniform = 1.0 / (int(df["cell"].max()) + 1)
    models = list(dict.fromkeys(df["model"])) if "model" in df.columns else [None]
    if ax is not None:
        hue = "model" if len(models) > 1 else None
        panels, fig = [(ax, df, None, hue)], ax.figure
    else:
        fig, axes = _grid(len(models), 4.2, 0.42 * len(order) + 1.3, sharex=True)
        panels = [(a, df if m is None else df[df["model"] == m], m, None) for a, m in zip(axes, models)]
    for i, (a, d, model, hue) in enumerate(panels):
        attributions = [m for m in order if m in set(d["attribution_label"])]
        with warnings.catch_warnings():
            # seaborn 0.13 passes Matplotlib's deprecated `vert` to bxp (Matplotlib ≥ 3.11 warns); not ours to fix
            warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
            sns.boxplot(data=d, y="attribution_label", x="score", hue=hue, order=attributions, orient="h", ax=a,
                        fliersize=1.5, linewidth=0.8, color=None if hue else "tab:blue")
        if uniform is not None:
            a.axvline(uniform, ls="--", lw=1, color="tab:gray", label="uniform")
            a.text(uniform, -0.6, f" uniform map: 1/{round(1 / uniform)}", va="bottom", ha="left", fontsize=8,
                   color="tab:gray")
        a.set(ylabel="", xlabel="localisation score (share in the target's cell)", xlim=(-0.02, 1.02))
        a.set_title(str(model) if model is not None else "grid pointing game", fontsize=10)
        a.tick_params(axis="both", labelsize=9)
        if hue:
            a.legend(fontsize=8, title="model", title_fontsize=8)
    fig.suptitle("Grid pointing game: share of positive attribution in the target class's cell (higher is better)",
                 fontsize=10)
    fig.tight_layout()
    return finished(fig)


def plot_deletion(deletion: pd.DataFrame, ax: Any = None) -> Figure:
    """Pixel-deletion curves (the rows of ``bcos_lib.metrics.pixel_deletion``, several models
    concatenated with a ``model`` column): the mean probability of the predicted class
    against the fraction of pixels removed, one colour per attribution (the same in every
    panel), solid = most important first, dashed = least important first; the random order,
    the baseline of both, is one grey dotted line.  The legend has one entry for each of these.
    One panel per model (one axis when ``ax`` is given: then the colours name model and attribution)."""
    import seaborn as sns

    if deletion.empty:
        raise ValueError("no pixel-deletion results to plot (evaluate.deletion_attributions was empty)")
    df = deletion.assign(attribution=_attribution_labels(deletion["attribution"]))
    models = list(dict.fromkeys(df["model"])) if "model" in df.columns else [None]
    if ax is not None and len(models) > 1:
        df = df.assign(attribution=df["model"].astype(str) + ": " + df["attribution"])
    is_random = df["order"] == "random"
    names = list(dict.fromkeys(df.loc[~is_random, "attribution"]))
    palette = dict(zip(names, sns.color_palette("tab10", len(names))))
    palette.update({n: (0.45, 0.45, 0.45) for n in dict.fromkeys(df.loc[is_random, "attribution"])})
    dashes = {"most": "", "least": (5, 2), "random": ""}
    if ax is not None:
        fig, panels = ax.figure, [(ax, df, "pixel deletion" if len(models) > 1 else str(models[0] or "pixel deletion"))]
    else:
        fig, axes = _grid(len(models), 3.9, 3.3, sharey=True)
        panels = [(a, df if m is None else df[df["model"] == m], "pixel deletion" if m is None else str(m))
                  for a, m in zip(axes, models)]
    for a, d, title in panels:
        rnd = d[d["order"] == "random"]
        if len(rnd):   # the baseline: a broad light band under the curves, not one more dashed line
            sns.lineplot(data=rnd, x="fraction", y="score", color=(0.75, 0.75, 0.75), lw=5, ax=a, legend=False,
                         errorbar=None)
        sns.lineplot(data=d[d["order"] != "random"], x="fraction", y="score", hue="attribution", palette=palette,
                     style="order", dashes=dashes, marker="o", markersize=3, ax=a, legend=False)
        a.set(xlabel="fraction of pixels removed", ylabel="probability of the predicted class",
              xlim=(0, 1), ylim=(-0.02, 1.02))
        a.set_title(title, fontsize=10)
    from matplotlib.lines import Line2D

    present = set(df["order"])
    blank = Line2D([], [], ls="none", label=" ")
    handles = [Line2D([], [], ls="none", label="attribution (colour)")]
    handles += [Line2D([], [], color=palette[n], marker="o", markersize=3, label=n) for n in names]
    handles += [blank, Line2D([], [], ls="none", label="order of removal (line)")]
    handles += [Line2D([], [], color="black", ls=(0, dashes[o]) if dashes[o] else "-", label=label)
                for o, label in (("most", "most important first"), ("least", "least important first")) if o in present]
    if "random" in present:
        handles += [blank, Line2D([], [], color=(0.75, 0.75, 0.75), lw=5, label="random order (baseline)")]
    legend = panels[-1][0].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8,
                                  frameon=False, handlelength=2.5)
    for text in legend.get_texts():
        if text.get_text() in ("attribution (colour)", "order of removal (line)"):
            text.set_fontweight("bold")
    fig.tight_layout()
    return finished(fig)
