"""The figures of the tutorials (notebooks/tutorials/).

Like ``bcos_lib.figures``, each function takes data and returns a matplotlib Figure and
none reads files or calls plt.show(); the maps are drawn with that module's helpers.  They
live in a module of their own so that a tutorial's plot does not make ``dvc repro`` rerun
the pipeline's figures stage, which depends on figures.py.
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .figures import _np, finished, show_contributions, show_image, show_rgba

__all__ = ["plot_bcos_response", "plot_toy_alignment", "plot_dynamic_linear"]


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
    return finished(fig)


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
    return finished(fig)


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
    return finished(fig)
