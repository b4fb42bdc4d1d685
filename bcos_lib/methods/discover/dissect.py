"""Describe neurons by text: dissection with soft-WPMI (DISCOVER §4, after CLIP-Dissect, Oikarinen
& Weng, ICLR 2023), and the sparsity of a network's hidden layers.

For a layer with C neurons and a probe set of N images:

1. ``A`` (N, C) — every neuron's activation on every image, averaged over the positions
   (conv feature maps) or tokens (transformer layers): :func:`layer_activations`.
2. ``P`` (N, concepts) — how much each image shows each concept, from a backend of
   :mod:`.concepts` (annotations or CLIP).
3. soft-WPMI (:func:`soft_wpmi`) scores every (neuron, concept) pair from the neuron's ``top_k``
   most activating images: with p(c | i) = softmax(a·P_i)_c and rank weights p_r falling
   linearly from ``p_start`` to ``p_end`` over the ranks (CLIP-Dissect's public code: 0.998 →
   0.97),

       log p(c | neuron) = Σ_{r ≤ top_k} log(1 + p_r · (p(c | i_r) − 1))
       score(neuron, c)  = log p(c | neuron) − λ · log mean_neurons p(c | neuron)

   The label of a neuron is its best-scoring concept (``top_k`` 100, ``a`` 10, λ 1 in the paper).

**Dissection quality** (:func:`dissection_quality`): a neuron's label is *right for its class*
when it is a concept of the class the neuron supports most, i.e. of its largest weight into
the classifier (:func:`readout_weights`; for a ViT's MLP the mean gradient of the logits); the
score is the share of such neurons, next to the
mean soft-WPMI of the chosen labels.  **Density** (:func:`activation_density`): the fraction of
non-zero outputs of every activation layer (ReLU, GELU, LWTA), the paper's sparsity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from .layers import LWTA
from ...models.base import prepare_input
from ...core.utils import evaluating

__all__ = ["ACTIVATIONS", "activation_layers", "last_hidden_layer", "layer_activations", "activation_density",
           "soft_wpmi", "Dissection", "dissect", "readout_weights", "dissection_quality"]

#: module types whose outputs count as a network's hidden activations
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.GELU, LWTA)


def activation_layers(model: nn.Module) -> list[str]:
    """Names of the activation modules (ReLU, GELU, LWTA) of ``model``, in definition order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, ACTIVATIONS)]


def last_hidden_layer(model: nn.Module) -> str:
    """The last activation layer: the hidden neurons closest to the classifier."""
    names = activation_layers(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no activation layer (ReLU, GELU or LWTA) to dissect")
    return names[-1]


def _module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise KeyError(f"the model has no layer {name!r}; its activation layers: {', '.join(activation_layers(model))}")
    return modules[name]


def _per_neuron(out: Tensor) -> Tensor:
    """(N, C, H, W) feature maps → mean over positions; (N, tokens, C) → mean over tokens; (N, C) as is."""
    if out.dim() == 4:
        return out.mean((2, 3))
    if out.dim() == 3:
        return out.mean(1)
    return out


@torch.no_grad()
def layer_activations(model: nn.Module, images: Tensor, layer: str, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> Tensor:
    """(N, C): every neuron's output of ``layer``, averaged over positions or tokens, in eval mode."""
    module = _module(model, layer)
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda m, i, o: captured.append(_per_neuron(o).float().cpu()))
    with evaluating(model):
        try:
            for i in range(0, len(images), batch_size):
                model(prepare_input(model, images[i:i + batch_size].to(device)))
        finally:
            handle.remove()
    return torch.cat(captured)


@torch.no_grad()
def activation_density(model: nn.Module, images: Tensor, batch_size: int = 256,
                       device: torch.device | str = "cpu") -> pd.DataFrame:
    """Per activation layer: the fraction of its outputs (units × positions or tokens) that are non-zero
    on ``images`` (eval mode).  Columns: layer, index (1 = first), units (per position), competitors
    (U of an LWTA layer, 1 otherwise), density."""
    names = activation_layers(model)
    counts = {n: [0, 0] for n in names}
    units: dict[str, int] = {}
    handles = []
    for name in names:
        def hook(m, i, o, name=name):
            counts[name][0] += int((o != 0).sum())
            counts[name][1] += o.numel()
            units[name] = o.shape[1] if o.dim() == 4 else o.shape[-1]
        handles.append(_module(model, name).register_forward_hook(hook))
    with evaluating(model):
        try:
            for i in range(0, len(images), batch_size):
                model(prepare_input(model, images[i:i + batch_size].to(device)))
        finally:
            for h in handles:
                h.remove()
    modules = dict(model.named_modules())
    rows = [{"layer": n, "index": k + 1, "units": units.get(n, 0),
             "competitors": getattr(modules[n], "competitors", 1),
             "density": counts[n][0] / max(1, counts[n][1])} for k, n in enumerate(names)]
    return pd.DataFrame(rows, columns=["layer", "index", "units", "competitors", "density"])


def soft_wpmi(similarity: Tensor, activations: Tensor, top_k: int = 100, a: float = 10.0, lam: float = 1.0,
              p_start: float = 0.998, p_end: float = 0.97, min_prob: float = 1e-7) -> Tensor:
    """(neurons, concepts) soft-WPMI scores (module docstring) from P (N, concepts) and A (N, neurons)."""
    if similarity.shape[0] != activations.shape[0]:
        raise ValueError(f"P has {similarity.shape[0]} images but the activations {activations.shape[0]}")
    if top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    k = min(top_k, activations.shape[0])
    p_concept = torch.softmax(a * similarity.double(), dim=1)                  # p(c | image)
    top = activations.double().topk(k, dim=0).indices                          # (k, neurons)
    p_rank = p_start - torch.arange(k, dtype=torch.float64) / k * (p_start - p_end)
    picked = p_concept[top]                                                    # (k, neurons, concepts)
    log_p = torch.log(1 + p_rank.view(k, 1, 1) * (picked - 1) + min_prob).sum(0)
    log_mean = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])       # log mean over neurons
    return log_p - lam * log_mean


@dataclass
class Dissection:
    """The result of :func:`dissect`: a label per neuron and the full score matrix."""

    layer: str
    concepts: list[str]
    kinds: list[str]            # per concept: class / attribute / visual / concept
    scores: Tensor              # (neurons, concepts) soft-WPMI
    labels: list[str]           # per neuron, the best-scoring concept
    label_scores: Tensor        # (neurons,)
    activations: Tensor         # (N, neurons) on the probe set

    def table(self) -> pd.DataFrame:
        kind = dict(zip(self.concepts, self.kinds))
        runner_up = self.scores.topk(min(2, self.scores.shape[1]), dim=1)
        return pd.DataFrame({"neuron": range(len(self.labels)), "label": self.labels,
                             "kind": [kind[l] for l in self.labels], "soft_wpmi": self.label_scores.numpy(),
                             "second": [self.concepts[int(i)] for i in runner_up.indices[:, -1]],
                             "mean_activation": self.activations.mean(0).numpy()})


def dissect(model: nn.Module, images: Tensor, labels: Tensor, backend, layer: str | None = None, top_k: int = 100,
            a: float = 10.0, lam: float = 1.0, batch_size: int = 256, device: torch.device | str = "cpu") -> Dissection:
    """Label every neuron of ``layer`` (default: the last hidden activation layer) with the concept of
    ``backend`` (:mod:`.concepts`) that best describes its top-``top_k`` probe ``images``."""
    layer = layer or last_hidden_layer(model)
    acts = layer_activations(model, images, layer, batch_size, device)
    sim = backend.similarity(images, labels)
    scores = soft_wpmi(sim, acts, top_k=top_k, a=a, lam=lam)
    best = scores.max(1)
    return Dissection(layer=layer, concepts=list(backend.concepts), kinds=list(backend.kinds), scores=scores,
                      labels=[backend.concepts[int(i)] for i in best.indices], label_scores=best.values,
                      activations=acts)


def readout_weights(model: nn.Module, layer: str, images: Tensor | None = None, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> Tensor:
    """(classes, neurons): how much each neuron of ``layer`` adds to each class's logit.

    * ``ConvNet`` (bcos_lib.models.cnn), the last activation of ``features``: the 1×1
      classifier's weights, exactly (the logit is their product with the activations, averaged
      over positions, plus the bias).
    * any other layer: no single weight matrix connects it to the logits (in a ViT the last
      layer norm and the classifier follow the MLP), so the read-out is the local linear one,
      ∂logit_k/∂s_j for a shift s_j of neuron j at every position or token, averaged over
      ``images`` (needed then).  For the ConvNet's last layer the two coincide.
    """
    from ...models.cnn import ConvNet

    if isinstance(model, ConvNet) and layer == last_hidden_layer(model) and layer.startswith("features."):
        return model.classifier.weight.detach().flatten(1).float()
    if images is None:
        raise ValueError(f"the read-out weights of layer {layer!r} of {type(model).__name__} are a mean gradient: "
                         f"pass probe images")
    module = _module(model, layer)
    total: Tensor | None = None
    with evaluating(model):
        for i in range(0, len(images), batch_size):
            shift: list[Tensor] = []

            def add_shift(m, inp, out):
                s = out.new_zeros(out.shape[1] if out.dim() == 4 else out.shape[-1], requires_grad=True)
                shift.append(s)
                return out + (s.view(1, -1, 1, 1) if out.dim() == 4 else s)

            handle = module.register_forward_hook(add_shift)
            try:
                with torch.enable_grad():
                    logits = model(prepare_input(model, images[i:i + batch_size].to(device))).sum(0)
                    rows = [torch.autograd.grad(logits[k], shift[0], retain_graph=k < len(logits) - 1)[0]
                            for k in range(len(logits))]
            finally:
                handle.remove()
            batch = torch.stack(rows).float().cpu()
            total = batch if total is None else total + batch
    return total / len(images)


def dissection_quality(d: Dissection, weights: Tensor, class_concepts: Callable[[int], set[str]],
                       classes: tuple[str, ...] | list[str]) -> tuple[dict[str, float], pd.DataFrame]:
    """Share of neurons labelled with a concept of the class they support most (largest readout weight),
    mean soft-WPMI of the labels, and how many distinct labels there are; plus the per-neuron table."""
    if weights.shape[1] != len(d.labels):
        raise ValueError(f"{weights.shape[1]} readout weights for {len(d.labels)} neurons")
    top_class = weights.argmax(0)
    right = [d.labels[j] in class_concepts(int(top_class[j])) for j in range(len(d.labels))]
    table = d.table()
    table.insert(2, "supports", [classes[int(k)] for k in top_class])
    table.insert(3, "label_fits_class", right)
    summary = {"share_class_concept": float(sum(right) / max(1, len(right))),
               "mean_soft_wpmi": float(d.label_scores.mean()), "n_neurons": len(d.labels),
               "n_distinct_labels": len(set(d.labels)),
               "share_class_name": float(sum(l == classes[int(k)] for l, k in zip(d.labels, top_class))
                                         / max(1, len(d.labels)))}
    return summary, table
