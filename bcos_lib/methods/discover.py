"""DISCOVER (Panousis & Chatzis, "DISCOVER: Making Vision Networks Interpretable via
Competition and Dissection", NeurIPS 2023).

The paper in three steps, and where each lives:

1. **Competition.** Replace the activations of a network by *stochastic local winner-takes-all*
   layers (:class:`bcos_lib.layers.LWTA`): blocks of U units, one sampled winner per block
   (Gumbel-softmax, straight-through, τ ≈ 1.67 in training; the largest unit at test time), so
   only 1/U of the units fire (U = 24 → ≈ 4 %).  Models here: ``lwta_cnn`` — the standard CNN's
   shape (``std_cnn``) with LWTA in place of ReLU — and ``lwta_vit``, a conventional small ViT
   with LWTA in its MLPs.  ``competitors=1`` gives back the usual activation: ``lwta_cnn(1)`` *is*
   ``std_cnn``, ``lwta_vit(1)`` is the GELU ViT (the twins of the comparison).
2. **Training.** The shared ``fit``; the method's options set the Gumbel temperature on the
   LWTA layers and, optionally, add the paper's KL term against a uniform prior over winners
   (off by default, as in the public code).
3. **Dissection.** Every neuron of the last hidden layer gets a text label by soft-WPMI over its
   most activating probe images (:mod:`bcos_lib.dissect`), from annotated concepts or CLIP
   (:mod:`bcos_lib.concepts`).  The paper's claim: sparse, competing neurons are more specific,
   so their descriptions fit better.

Metrics (``evaluate.metrics``), for LWTA models and their twins alike: ``activation_density``
(per-layer fraction of non-zero units, and the accuracy with deterministic and sampled winners)
and ``dissection`` (labels; share of neurons whose label is a concept of the class they
support most; mean soft-WPMI).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..layers import LWTA, Normalize
from ..models.cnn import DEFAULT_CHANNELS, DEFAULT_STRIDES, FMNIST_MEAN, FMNIST_STD, ConvNet
from ..models.vit import PositionEmbedding, VisionTransformer
from ..registry import register_model
from ..utils import evaluating
from . import (EvalContext, Method, Metric, MetricResult, ModelResult, StepInfo, StepOutput, TrainHooks,
               register_method, register_metric)

__all__ = ["lwta_cnn", "lwta_vit", "DiscoverOptions", "DensityOptions", "DissectionOptions", "training",
           "lwta_layers", "set_test_mode", "concept_backend", "plot_density", "plot_winning_neurons",
           "winning_neurons", "figures", "report"]


# ----------------------------------------------------------------------------- models
def _check_widths(widths: Sequence[int], competitors: int, what: str) -> None:
    if isinstance(competitors, bool) or not isinstance(competitors, int) or competitors < 1:
        raise ValueError(f"competitors (U) must be an integer ≥ 1, got {competitors!r}")
    bad = [w for w in widths if w % competitors]
    if bad:
        raise ValueError(f"competitors={competitors} does not divide the {what} {list(bad)}: LWTA needs blocks of U "
                         f"units (models.<key>.kwargs.competitors / .{what} in params.yaml); use widths that are "
                         f"multiples of U, or U = 1 for the usual activation")


def _scale_norms(norms: Sequence[nn.Module], scale: float) -> None:
    if not scale > 0:
        raise ValueError(f"norm_scale must be > 0, got {scale!r}")
    for norm in norms:
        nn.init.constant_(norm.weight, scale)


@register_model
def lwta_cnn(num_classes: int = 10, image_channels: int = 1, channels: Sequence[int] = DEFAULT_CHANNELS,
             strides: Sequence[int] = DEFAULT_STRIDES, competitors: int = 8, norm_scale: float = 1.0,
             mean: float = FMNIST_MEAN, std: float = FMNIST_STD) -> ConvNet:
    """``std_cnn`` with a stochastic LWTA of ``competitors`` channels per block in place of every
    ReLU (DISCOVER §3); ``competitors`` must divide every width.  U = 1: exactly ``std_cnn``.

    ``norm_scale``: the initial scale γ of the batch norms in front of the LWTA layers.  The
    winner is sampled from softmax(h) of the block's pre-activations, which batch norm makes
    unit-variance: then the largest of 8 units wins only about a third of the samples, and the
    network first has to learn larger pre-activations before its competitions mean anything.  A
    larger initial γ makes them decisive from the start (README, DISCOVER: the measured effect)."""
    _check_widths(channels, competitors, "channels")

    def conv(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=False, **kw)

    def classifier(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=True, **kw)

    model = ConvNet(image_channels=image_channels, num_classes=num_classes, channels=channels, strides=strides,
                    conv=conv, classifier=classifier, norm=nn.BatchNorm2d,
                    act=lambda: LWTA(competitors, dim=1, fallback="relu"),
                    stem=Normalize([mean] * image_channels, [std] * image_channels), logit=None,
                    encoding="none", default_loss="ce")
    _scale_norms([m for m in model.features if isinstance(m, nn.BatchNorm2d)], norm_scale)
    return model


class AdditivePositionEmbedding(PositionEmbedding):
    """The usual ViT position embedding, ``tokens + E`` (the B-cos ViT's ``E · m(x)`` keeps its
    explanation exact; a conventional ViT has no such identity to keep)."""

    def forward(self, tokens: Tensor, x: Tensor) -> Tensor:
        return tokens + self.embedding(*tokens.shape[-2:]).to(tokens.dtype)


class SelfAttention(nn.Module):
    """Conventional multi-head self-attention on (N, tokens, D) (``torch.nn.MultiheadAttention``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class ConventionalViT(VisionTransformer):
    """The small ViT of ``bcos_lib.models.vit`` with an additive position embedding."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        old = self.pos_embed
        self.pos_embed = AdditivePositionEmbedding(old.weight.shape[1], old.grid, old.patch_size, old.image_channels,
                                                   old.resize)


@register_model
def lwta_vit(num_classes: int = 10, image_channels: int = 1, image_size: int = 28, patch_size: int = 4,
             dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, competitors: int = 8,
             norm_scale: float = 1.0, pos_resize: str = "tile", mean: float = FMNIST_MEAN,
             std: float = FMNIST_STD) -> VisionTransformer:
    """A conventional small ViT (linear layers with biases, layer norm, softmax attention, the input
    normalised inside) whose MLPs use a stochastic LWTA over blocks of ``competitors`` hidden units
    (DISCOVER's ViTs); U = 1: the usual GELU ViT.  Same shape as ``bcos_vit``.  ``norm_scale``: the
    initial scale of the layer norm in front of every MLP, which sets the scale of the competing
    pre-activations (as in ``lwta_cnn``)."""
    mlp_dim = int(round(mlp_ratio * dim))
    _check_widths([mlp_dim], competitors, "MLP width (mlp_ratio · dim)")

    def patch_embed(ci: int, co: int, **kw) -> nn.Module:
        return nn.Sequential(Normalize([mean] * ci, [std] * ci), nn.Conv2d(ci, co, **kw))

    model = ConventionalViT(image_channels=image_channels, num_classes=num_classes, image_size=image_size,
                            patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim,
                            patch_embed=patch_embed, linear=nn.Linear, norm=nn.LayerNorm, attention=SelfAttention,
                            act=lambda: LWTA(competitors, dim=-1, fallback="gelu"), pos_resize=pos_resize,
                            logit=None, encoding="none", default_loss="ce")
    _scale_norms([block.norm2 for block in model.blocks], norm_scale)
    return model


def lwta_layers(model: nn.Module) -> list[LWTA]:
    """The LWTA layers of ``model`` that compete (U > 1)."""
    return [m for m in model.modules() if isinstance(m, LWTA) and m.competitors > 1]


def set_test_mode(model: nn.Module, mode: str) -> list[str]:
    """Set every LWTA layer's test mode ("deterministic" or "stochastic"); returns the previous modes."""
    layers = lwta_layers(model)
    old = [m.test_mode for m in layers]
    for m in layers:
        m.test_mode = mode
    return old


# ----------------------------------------------------------------------------- training
@dataclass
class DiscoverOptions:
    """``models.<key>.options`` of an LWTA model."""

    temperature: float = 1.67   # Gumbel-softmax τ of the straight-through winner samples in training
    kl_weight: float = 0.0      # weight of the KL(winner posterior ‖ uniform) term; 0 = off, as the public code

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"models.<key>.options.temperature must be > 0 (got {self.temperature})")
        if not self.kl_weight >= 0:
            raise ConfigError(f"models.<key>.options.kl_weight must be ≥ 0 (got {self.kl_weight}); 0 switches the "
                              f"KL term off")


def training(model: nn.Module, options: DiscoverOptions | None, train_config: Any) -> TrainHooks:
    """Set the Gumbel temperature on every LWTA layer; with ``kl_weight`` > 0, a step that adds
    ``kl_weight · Σ_layers KL`` (each layer's mean over blocks, :func:`bcos_lib.layers.lwta_kl`)."""
    opts = options or DiscoverOptions()
    layers = lwta_layers(model)
    for m in layers:
        m.temperature = opts.temperature
        m.track_kl = opts.kl_weight > 0
    if opts.kl_weight == 0 or not layers:
        return TrainHooks()

    def step(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> StepOutput:
        from ..train import default_step
        out = default_step(model, x, y, info)
        kls = [m.last_kl for m in lwta_layers(model) if m.last_kl is not None]
        if not kls:
            raise RuntimeError("the KL term is on but no LWTA layer computed it: is the model in training mode?")
        kl = torch.stack(kls).sum()
        return StepOutput(loss=out.loss + opts.kl_weight * kl, logits=out.logits,
                          terms={**out.terms, "kl": float(kl.detach())})

    return TrainHooks(step=step)


# ----------------------------------------------------------------------------- metrics
@dataclass
class DensityOptions:
    """``evaluate.options.activation_density``."""

    images: int = 2000          # test images the densities are measured on (0 = all)
    stochastic_accuracy: bool = True   # LWTA models: also the test accuracy with sampled winners
    batch_size: int = 500


def _density(ctx: EvalContext) -> MetricResult | None:
    from ..data import subset
    from ..dissect import activation_density, activation_layers
    from ..train import evaluate_accuracy

    model, opts = ctx.model, ctx.options or DensityOptions()
    if not activation_layers(model):
        ctx.log(f"{ctx.key}: activation_density does not apply (no ReLU, GELU or LWTA layer)")
        return None
    probe = subset(ctx.test_data, opts.images, seed=ctx.seed) if opts.images else ctx.test_data
    table = activation_density(model, probe.images, opts.batch_size, ctx.device)
    hidden = table["density"]
    summary: dict[str, Any] = {"mean_density": float(hidden.mean()), "max_density": float(hidden.max()),
                               "last_density": float(hidden.iloc[-1]), "n_layers": len(table),
                               "competitors": int(table["competitors"].max()), "n_images": len(probe)}
    summary["accuracy"] = evaluate_accuracy(model, ctx.test_data, "ce", opts.batch_size, ctx.device)["accuracy"]
    if opts.stochastic_accuracy and lwta_layers(model):
        old = set_test_mode(model, "stochastic")
        torch.manual_seed(ctx.seed)
        try:
            summary["accuracy_stochastic"] = evaluate_accuracy(model, ctx.test_data, "ce", opts.batch_size,
                                                               ctx.device)["accuracy"]
        finally:
            for m, mode in zip(lwta_layers(model), old):
                m.test_mode = mode
    ctx.log(f"{ctx.key}: hidden activation density {summary['mean_density']:.3f} (mean over {len(table)} layers), "
            f"accuracy {summary['accuracy']:.2f} %")
    return MetricResult(summary, {"density": table})


@dataclass
class DissectionOptions:
    """``evaluate.options.dissection``."""

    layer: str = ""                 # module name; "" = the last hidden activation layer
    backend: str = "annotated"      # annotated (class names, attribute table, pixel concepts) | clip (open_clip)
    concepts: str = ""              # annotated: a YAML table `concept: [class, …]` replacing the built-in one;
                                    # clip: a text file, one concept per line ("" = class names + built-in attributes)
    visual_concepts: bool = True    # annotated: add the concepts computed from the pixels
    visual_quantile: float = 0.25   # an image shows a visual concept when in the top/bottom quarter of the probe set
    probe_images: int = 2000        # test images to rank (0 = all)
    top_k: int = 100                # soft-WPMI: most activating images per neuron
    a: float = 10.0                 # soft-WPMI: softmax sharpness of p(c | image)
    lam: float = 1.0                # soft-WPMI: weight of the concept prior, λ
    clip_model: str = "ViT-B-16"    # clip: the open_clip architecture (the paper: CLIP ViT-B/16)
    clip_weights: str = ""          # clip: path to its checkpoint on disk (never downloaded)
    batch_size: int = 500

    def __post_init__(self) -> None:
        from ..concepts import BACKENDS
        where = "evaluate.options.dissection"
        if self.backend not in BACKENDS:
            raise ConfigError(f"{where}.backend: unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)} "
                              f"(annotated works offline; clip needs CLIP weights on disk)")
        if self.top_k < 1 or self.probe_images < 0 or not 0 < self.visual_quantile < 1:
            raise ConfigError(f"{where}: need top_k ≥ 1, probe_images ≥ 0 and 0 < visual_quantile < 1 "
                              f"(got {self.top_k}, {self.probe_images}, {self.visual_quantile})")
        if self.concepts and not _resolve(self.concepts).is_file():
            raise ConfigError(f"{where}.concepts: the concept file {self.concepts} does not exist (paths are relative "
                              f"to the project root); '' uses the built-in concepts")
        if self.backend == "clip" and not (self.clip_weights and _resolve(self.clip_weights).is_file()):
            raise ConfigError(f"{where}.clip_weights: the CLIP backend needs an open_clip checkpoint of "
                              f"{self.clip_model} on disk ({self.clip_weights or 'none given'}); nothing is downloaded "
                              f"here. Put the file on disk and give its path, or use backend: annotated")


def _resolve(path: str):
    from ..paths import resolve
    return resolve(path)


def concept_backend(opts: DissectionOptions, classes: Sequence[str], device: Any = "cpu"):
    """The concept backend ``opts`` asks for (:mod:`bcos_lib.concepts`)."""
    from ..concepts import FASHION_MNIST_ATTRIBUTES, AnnotatedConcepts, ClipConcepts, load_attribute_table
    if opts.backend == "annotated":
        table = load_attribute_table(_resolve(opts.concepts), classes) if opts.concepts else None
        return AnnotatedConcepts(classes, table, visual=opts.visual_concepts, quantile=opts.visual_quantile)
    if opts.concepts:
        words = [w.strip() for w in _resolve(opts.concepts).read_text().splitlines() if w.strip()]
    else:
        words = list(classes) + [a for a in FASHION_MNIST_ATTRIBUTES]
    return ClipConcepts(words, classes, opts.clip_model, _resolve(opts.clip_weights) if opts.clip_weights else "",
                        device=device)


def _dissection(ctx: EvalContext) -> MetricResult | None:
    from ..data import subset
    from ..dissect import activation_layers, dissect, dissection_quality, readout_weights

    model, opts = ctx.model, ctx.options or DissectionOptions()
    if not activation_layers(model):
        ctx.log(f"{ctx.key}: dissection does not apply (no ReLU, GELU or LWTA layer to label)")
        return None
    probe = subset(ctx.test_data, opts.probe_images, seed=ctx.seed) if opts.probe_images else ctx.test_data
    backend = concept_backend(opts, probe.classes, ctx.device)
    d = dissect(model, probe.images, probe.labels, backend, layer=opts.layer or None, top_k=opts.top_k, a=opts.a,
                lam=opts.lam, batch_size=opts.batch_size, device=ctx.device)
    weights = readout_weights(model, d.layer, probe.images[:500], opts.batch_size, ctx.device)
    summary, table = dissection_quality(d, weights, backend.class_concepts, probe.classes)
    summary.update(layer=d.layer, backend=backend.name, n_images=len(probe))
    ctx.log(f"{ctx.key}: {summary['n_neurons']} neurons of {d.layer} labelled; "
            f"{100 * summary['share_class_concept']:.0f} % "
            f"with a concept of the class they support most, mean soft-WPMI {summary['mean_soft_wpmi']:.2f}")
    return MetricResult(summary, {"dissection": table})


register_metric(Metric("activation_density", _density, DensityOptions,
                       "fraction of non-zero units per activation layer (DISCOVER's sparsity) and the test accuracy "
                       "(LWTA: also with sampled winners)"))
register_metric(Metric("dissection", _dissection, DissectionOptions,
                       "text labels of the last hidden layer's neurons by soft-WPMI (DISCOVER §4); share of neurons "
                       "whose label is a concept of the class they support most, mean soft-WPMI"))


# ----------------------------------------------------------------------------- figures
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
    from ..figures import finished
    return finished(fig)


@torch.no_grad()
def winning_neurons(model: nn.Module, images: Tensor, layer: str, n_neurons: int = 3) -> dict[str, Tensor]:
    """For each image: its predicted class and the ``n_neurons`` neurons of ``layer`` that add most to
    that class's logit (spatially averaged activation × readout weight), with their activation maps.

    Returns ``pred`` (N,), ``neurons`` (N, n), ``contribution`` (N, n), ``maps`` (N, n, h, w).
    """
    from ..dissect import _module, readout_weights
    from ..models.base import prepare_input

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
    fig, axes = plt.subplots(n, n_neurons + 1, figsize=(1.9 * (n_neurons + 1), 2.0 * n), squeeze=False)
    for i in range(n):
        img = images[i].float().mean(0)
        ax = axes[i, 0]
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{classes[int(labels[i])]}\n→ {classes[int(win['pred'][i])]}", fontsize=8)
        for j in range(n_neurons):
            ax = axes[i, j + 1]
            m = F.interpolate(win["maps"][i, j][None, None], size=img.shape, mode="bilinear", align_corners=False)[0, 0]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.imshow(m.clamp_min(0), cmap="inferno", alpha=0.6)
            k = int(win["neurons"][i, j])
            ax.set_title(f"#{k}: {names.get(k, '?')}\n(+{float(win['contribution'][i, j]):.2f})", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from ..figures import finished
    return finished(fig)


def _dissected(results: Mapping[str, ModelResult]) -> list[ModelResult]:
    return [r for r in results.values() if r.metric("activation_density") or r.metric("dissection")]


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    """``discover_density``: density per layer of every model with the activation_density metric;
    ``discover_neurons_<key>``: a few test images explained by their winning neurons' labels."""
    from ..paper import DISCOVER_DENSITY
    from ..pipeline import ModelFileError, load_data, load_trained
    from ..stages.explain import pick_images

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
    from ..paper import DISCOVER_DENSITY

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


register_method(Method(
    name="DISCOVER", paper="Panousis & Chatzis, DISCOVER: Making Vision Networks Interpretable via Competition and "
                           "Dissection, NeurIPS 2023",
    models=("lwta_cnn", "lwta_vit"), options=DiscoverOptions, training=training, figures=figures, report=report,
    order=40))
