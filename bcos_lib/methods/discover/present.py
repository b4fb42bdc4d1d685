"""DISCOVER's figures and report section: activation density per layer against the paper's 1/U,
the winning neurons of a few images with their text labels, and the dissection table.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from ...core.utils import evaluating
from ...core.contract import ModelResult

#: DISCOVER (Panousis & Chatzis, NeurIPS 2023) §3: the share of active units with U = 24
#: competitors per block (one winner per block: 1/24 ≈ 4 %), the paper's sparsity claim
DISCOVER_DENSITY = 1 / 24
#: DISCOVER, ImageNet top-1 (%) of the LWTA DeiTs (the authors' public code)
DISCOVER_IMAGENET_ACCURACY = {"DeiT-T/8": 77.0, "DeiT-S/12": 72.5}
PAPER_NUMBERS = {"DISCOVER_DENSITY": DISCOVER_DENSITY, "DISCOVER_IMAGENET_ACCURACY": DISCOVER_IMAGENET_ACCURACY}




# ----------------------------------------------------------------------------- models


def plot_density(tables: Mapping[str, pd.DataFrame], paper_density: float | None = None):
    """Density per activation layer, one panel per architecture (CNN: ``features.*``, ViT: ``blocks.*``),
    a bar per model (label → its ``density`` table); dashed: 1/U of each LWTA model; dotted: the paper."""
    import matplotlib.pyplot as plt

    families: dict[str, dict[str, pd.DataFrame]] = {}
    for label, t in tables.items():
        fam = "ViT (MLP activations)" if str(t["layer"].iloc[0]).startswith("blocks") else "CNN"
        families.setdefault(fam, {})[label] = t
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(5.2 * max(1, len(families)), 3.4), squeeze=False)
    for ax, (fam, group) in zip(axes[0], sorted(families.items())):
        width = 0.8 / len(group)
        for j, (label, t) in enumerate(group.items()):
            x = t["index"].to_numpy() + (j - (len(group) - 1) / 2) * width
            ax.bar(x, 100 * t["density"], width=width, label=label)
            u = int(t["competitors"].max())
            if u > 1:
                ax.axhline(100 / u, ls="--", lw=0.8, color="k")
                ax.text(1.0, 100 / u, f" 1/U = {100 / u:.1f} %", va="bottom", fontsize=7,
                        transform=ax.get_yaxis_transform())
        if paper_density is not None:
            ax.axhline(100 * paper_density, ls=":", lw=1, color="tab:red")
            ax.text(1.0, 100 * paper_density, f" paper ≈ {100 * paper_density:.0f} % (U = 24)", va="top",
                    fontsize=7, color="tab:red", transform=ax.get_yaxis_transform())
        layers = sorted({int(i) for t in group.values() for i in t["index"]})
        ax.set_xticks(layers)
        ax.set_xlabel("activation layer")
        ax.set_ylabel("non-zero units (%)")
        ax.set_title(fam)
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    from ...figures import finished
    return finished(fig)


@torch.no_grad()
def winning_neurons(model: nn.Module, images: Tensor, layer: str, n_neurons: int = 3) -> dict[str, Tensor]:
    """For each image: its predicted class and the ``n_neurons`` neurons of ``layer`` that add most to
    that class's logit (spatially averaged activation × readout weight), with their activation maps.

    Returns ``pred`` (N,), ``neurons`` (N, n), ``contribution`` (N, n), ``maps`` (N, n, h, w).
    """
    from .dissect import _module, readout_weights
    from ...models.base import prepare_input

    captured: list[Tensor] = []
    handle = _module(model, layer).register_forward_hook(lambda m, i, o: captured.append(o.detach().float()))
    with evaluating(model):
        try:
            logits = model(prepare_input(model, images))
        finally:
            handle.remove()
    out = captured[0]
    if out.dim() == 3:  # (N, tokens, C) → (N, C, h, w) on the token grid
        side = math.isqrt(out.shape[1])
        out = out.transpose(1, 2).reshape(out.shape[0], -1, side, out.shape[1] // side)
    pred = logits.argmax(1)
    w = readout_weights(model, layer, images)               # (K, C)
    contribution = out.mean((2, 3)) * w[pred]               # (N, C)
    top = contribution.topk(n_neurons, dim=1)
    maps = out.gather(1, top.indices[..., None, None].expand(-1, -1, *out.shape[2:]))
    return {"pred": pred, "neurons": top.indices, "contribution": top.values, "maps": maps}


def plot_winning_neurons(model: nn.Module, images: Tensor, labels: Tensor, classes: Sequence[str],
                         dissection: pd.DataFrame, layer: str, n_neurons: int = 3, title: str = ""):
    """"Explain a decision by the winning neurons' descriptions" (DISCOVER, Fig. 1): for every image,
    the neurons of ``layer`` that add most to the predicted class, each shown as its activation map
    over the image, titled with its text label (``dissection``: the dissection metric's table)."""
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    win = winning_neurons(model, images, layer, n_neurons)
    names = dissection.set_index("neuron")["label"]
    n = len(images)
    fig, axes = plt.subplots(n, n_neurons + 1, figsize=(2.0 * (n_neurons + 1) + 0.8, 2.1 * n + 0.6), squeeze=False)
    mappable = None
    for i in range(n):
        img = images[i].float().mean(0)
        ax = axes[i, 0]
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"true: {classes[int(labels[i])]}\npredicted: {classes[int(win['pred'][i])]}", fontsize=8)
        for j in range(n_neurons):
            ax = axes[i, j + 1]
            m = F.interpolate(win["maps"][i, j][None, None], size=img.shape, mode="bilinear", align_corners=False)[0, 0]
            m = m.clamp_min(0)
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            mappable = ax.imshow(m / m.max().clamp_min(1e-12), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            k = int(win["neurons"][i, j])
            ax.set_title(f"neuron {k}: “{names.get(k, '?')}”\nadds {float(win['contribution'][i, j]):+.2f} to the logit",
                         fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes[:, 1:].ravel().tolist(), fraction=0.025, pad=0.02)
        bar.set_label("activation (scaled to its maximum)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle((title + "\n" if title else "") + "each neuron's text label (dissection) and what it adds to the "
                 "predicted class's logit; its activation map over the image", fontsize=9)
    from ...figures import finished
    return finished(fig)


def _dissected(results: Mapping[str, ModelResult]) -> list[ModelResult]:
    return [r for r in results.values() if r.metric("activation_density") or r.metric("dissection")]


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    """``discover_density``: density per layer of every model with the activation_density metric;
    ``discover_neurons_<key>``: a few test images explained by their winning neurons' labels."""
    from ...core.pipeline import ModelFileError, load_data, load_trained
    from ...stages.explain import pick_images

    out: dict[str, Any] = {}
    rs = _dissected(results)
    dens = {r.label: r.tables["density"] for r in rs if "density" in r.tables}
    if dens:
        out["discover_density"] = plot_density(dens, DISCOVER_DENSITY)
    test = None
    for r in rs:
        if "dissection" not in r.tables:
            continue
        try:
            model = load_trained(run, r.key)
        except ModelFileError:
            continue
        test = test or load_data(run, "test")
        idx = pick_images(test, min(4, run.params.figures.n_images))
        layer = r.metric("dissection")["layer"]
        out[f"discover_neurons_{r.key}"] = plot_winning_neurons(model, test.images[idx], test.labels[idx], test.classes,
                                                                r.tables["dissection"], layer, title=r.label)
    return out


def report(results: Mapping[str, ModelResult]) -> str:
    """The DISCOVER section: accuracy, density and dissection quality of every model that ran the
    metrics (LWTA models beside their twins), with the paper's density claim."""

    rows = []
    for r in _dissected(results):
        d, q = r.metric("activation_density") or {}, r.metric("dissection") or {}
        acc = (r.train or {}).get("test_accuracy", d.get("accuracy"))
        stoch = d.get("accuracy_stochastic")
        rows.append(f"| `{r.key}` | {r.label} | {d.get('competitors', '–')} | {_f(acc, 2)} | "
                    f"{_f(stoch, 2) if stoch is not None else '–'} | {_pct(d.get('mean_density'))} | "
                    f"{_pct(d.get('last_density'))} | {_pct(q.get('share_class_concept'))} | "
                    f"{_f(q.get('mean_soft_wpmi'), 2)} | "
                    f"{q.get('n_distinct_labels', '–')}/{q.get('n_neurons', '–')} |")
    if not rows:
        return ""
    lines = ["### DISCOVER: competition (LWTA) and dissection", "",
             "| model | label | U | test accuracy (%) | accuracy, sampled winners (%) | density, mean of layers | "
             "density, last layer | labels that fit the class | mean soft-WPMI | distinct labels / neurons |",
             "|---|---|---|---|---|---|---|---|---|---|", *rows,
             f"| paper (DeiT, ImageNet) | | 24 | | | ≈ {100 * DISCOVER_DENSITY:.0f} % | | | | |", "",
             "Density: the fraction of non-zero outputs of every activation layer (ReLU, GELU, LWTA) on test images. "
             "Labels: soft-WPMI over annotated concepts (class names, attributes, pixel concepts) for the neurons "
             "of the "
             "last hidden layer; a label *fits* when it is a concept of the class the neuron's largest classifier "
             "weight goes to.", ""]
    return "\n".join(lines)


def _f(v: Any, digits: int) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f} %"
