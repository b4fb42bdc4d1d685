"""DISCOVER's metrics (Panousis & Chatzis, NeurIPS 2023), for LWTA models and their twins alike:
``activation_density`` (per-layer fraction of non-zero units, and the accuracy with deterministic
and sampled winners) and ``dissection`` (text labels of the last hidden layer's neurons by
soft-WPMI, §4; share of neurons whose label is a concept of the class they support most; mean
soft-WPMI).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...core.config import ConfigError
from ...core.contract import EvalContext, Metric, MetricResult
from ...core.registry import register_metric
from ...core.config import ranged
from .model import lwta_layers, set_test_mode



# ----------------------------------------------------------------------------- models


@dataclass
class DensityOptions:
    """``evaluate.options.activation_density``."""

    images: int = ranged(2000, ge=0)          # test images the densities are measured on (0 = all)
    stochastic_accuracy: bool = True   # LWTA models: also the test accuracy with sampled winners
    batch_size: int = ranged(500, ge=1)


def _density(ctx: EvalContext) -> MetricResult | None:
    from ...core.data import subset
    from .dissect import activation_density, activation_layers
    from ...metrics import test_predictions
    from ...train import evaluate_accuracy

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
    # the deterministic-winner accuracy from the stage's shared pass over the test set (no pass of its own)
    predicted = test_predictions(model, ctx.test_data, opts.batch_size, ctx.device)["predicted"].to_numpy()
    correct = int((predicted == ctx.test_data.labels.numpy()).sum())
    summary["accuracy"] = 100.0 * correct / len(predicted) if len(predicted) else 0.0   # as evaluate_accuracy
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
    visual_quantile: float = ranged(0.25, gt=0, lt=1)   # an image shows a visual concept when in the top/bottom quarter of the probe set
    probe_images: int = ranged(2000, ge=0)        # test images to rank (0 = all)
    top_k: int = ranged(100, ge=1)                # soft-WPMI: most activating images per neuron
    a: float = ranged(10.0, gt=0)                 # soft-WPMI: softmax sharpness of p(c | image)
    lam: float = ranged(1.0, ge=0)                # soft-WPMI: weight of the concept prior, λ
    clip_model: str = "ViT-B-16"    # clip: the open_clip architecture (the paper: CLIP ViT-B/16)
    clip_weights: str = ""          # clip: path to its checkpoint on disk (never downloaded)
    batch_size: int = ranged(500, ge=1)

    def __post_init__(self) -> None:
        from .concepts import BACKENDS
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
    from ...core.paths import resolve
    return resolve(path)


def concept_backend(opts: DissectionOptions, classes: Sequence[str], device: Any = "cpu"):
    """The concept backend ``opts`` asks for (:mod:`.concepts`)."""
    from .concepts import FASHION_MNIST_ATTRIBUTES, AnnotatedConcepts, ClipConcepts, load_attribute_table
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
    from ...core.data import subset
    from .dissect import activation_layers, dissect, dissection_quality, readout_weights

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
