"""Attribution maps by method name: the model's own explanation and captum's post-hoc baselines.

This is step 3 of the grid pointing game (CoDA Nets §5, B-cos v1 §5.2): for each class in the grid, compute
the model's attribution for that class over the whole grid (B-cos / CoDA: ``W(x) ⊙ x``
summed over channels; post-hoc methods: their own map).  :func:`attribute` returns every
method's map in one shape, (N, T, H, W), summed over the input channels, so that the
metrics in :mod:`bcos_lib.metrics` never need to know which method made a map.

Methods (``METHODS``):

``own``              the dynamic-linear explanation ``Σ_channels W(x) ⊙ x`` (:func:`bcos_lib.explain.explain`),
                     only for models that have an explanation mode (``model.explainable``)
``ixg``              Input×Gradient (captum ``InputXGradient``)
``ig``               Integrated Gradients from a zero baseline (captum ``IntegratedGradients``)
``gradcam``          Grad-CAM on the last spatial feature map, upsampled to the input size
                     (captum ``LayerGradCam`` + ``LayerAttribution.interpolate``)
``occlusion``        occlusion by zero-valued windows (captum ``Occlusion``)
``deeplift``         DeepLIFT from a zero baseline (captum ``DeepLift``)
``guided_backprop``  Guided Backpropagation (captum ``GuidedBackprop``)

The post-hoc methods are captum's, not re-implemented here; they see the model as
trained (explanation mode off), so on a B-cos model their gradients include the dynamic
factors.  A B-cos network without ReLUs is positively homogeneous (f(αx) = α f(x) + b for
α > 0), so its gradient is the same all along the path from 0 to x: Integrated Gradients
from a zero baseline and DeepLIFT (which has no non-linearity to rescale there) then give
exactly Input×Gradient, and Guided Backprop gives the plain gradient.  All of them work on the model *inputs* (already encoded: ``[x, 1 − x]`` for
B-cos models), and every baseline is 0 there — inside the [0, 1] range that B-cos layers
accept.  Several targets per image are handled by repeating each image once per target
(one batched backward for all of them); occlusion instead perturbs each image once and
reads every target's logit from the same forward passes.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .explain import explain
from .layers.explanation_mode import is_explainable

__all__ = ["METHODS", "POSTHOC_METHODS", "attribute", "method_label", "gradcam_layer", "as_target_matrix"]

#: every method :func:`attribute` knows, in the order figures list them
METHODS = ("own", "ixg", "ig", "gradcam", "occlusion", "deeplift", "guided_backprop")
#: the captum baselines (every method but the model's own explanation)
POSTHOC_METHODS = METHODS[1:]

_LABELS = {
    "own": "own explanation (W(x)⊙x)",
    "ixg": "Input×Gradient",
    "ig": "Integrated Gradients",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
    "deeplift": "DeepLIFT",
    "guided_backprop": "Guided Backprop",
    "random": "random order",
}

#: the options each method accepts, with their defaults
_OPTIONS: dict[str, dict[str, Any]] = {
    "own": {},
    "ixg": {"chunk_size": 64},
    "ig": {"steps": 20, "integration": "gausslegendre", "internal_batch_size": 64, "chunk_size": 64},
    "gradcam": {"layer": None, "interpolate_mode": "bilinear", "relu": False, "chunk_size": 64},
    "occlusion": {"window": 7, "stride": None, "perturbations_per_eval": 16, "chunk_size": 64},
    "deeplift": {"chunk_size": 64},
    "guided_backprop": {"chunk_size": 64},
}

# captum warns on every call that it made the inputs require gradients and that it set hooks
# on activations (DeepLIFT, Guided Backprop): both are intended here
_EXPECTED_WARNINGS = (r".*did not already require gradients.*", r".*Setting forward, backward hooks.*",
                      r".*Setting backward hooks on ReLU.*")


def method_label(name: str) -> str:
    """How plots and tables name a method (``"ig"`` → ``"Integrated Gradients"``)."""
    if name not in _LABELS:
        raise ValueError(f"unknown attribution method {name!r}; known: {', '.join(_LABELS)}")
    return _LABELS[name]


def as_target_matrix(targets: Tensor | int, n: int, device: torch.device | str | None = None) -> Tensor:
    """An int, (N,) or (N, T) classes → a (N, T) LongTensor."""
    targets = torch.as_tensor(targets, device=device).long()
    if targets.dim() == 0:
        targets = targets.expand(n)
    if targets.dim() == 1:
        targets = targets.unsqueeze(1)
    if targets.dim() != 2 or targets.shape[0] != n:
        raise ValueError(f"targets must be an int, (N,) or (N, T) with N = {n}; got shape {tuple(targets.shape)}")
    return targets


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch statistics frozen, so images do not influence each other), restored after."""
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            for pattern in _EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
            yield
    finally:
        model.train(was)


def _options(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    accepted = _OPTIONS[method]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise TypeError(f"attribution method {method!r} got unknown option(s) {unknown}; "
                        f"it accepts: {', '.join(accepted) or 'none'}")
    return {**accepted, **opts}


def gradcam_layer(model: nn.Module, x: Tensor) -> nn.Module:
    """The layer Grad-CAM reads: the last module that outputs a spatial (4-d, > 1×1) feature map.

    Candidates are the children of ``model.features`` when the model has that Sequential
    (the project's CNNs: the last conv block's output), otherwise every leaf module; the
    choice follows execution order, found with one forward pass on the first image.
    """
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features):
        candidates = list(features.children())
    else:
        candidates = [m for m in model.modules() if m is not model and not list(m.children())]
    executed: list[nn.Module] = []

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1:
            executed.append(module)

    handles = [m.register_forward_hook(record) for m in candidates]
    try:
        with _evaluating(model), torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not executed:
        raise ValueError("Grad-CAM needs a layer with a spatial (N, C, H, W) output and found none; "
                         "pass layer=<module or name> explicitly")
    return executed[-1]


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None, x: Tensor) -> nn.Module:
    if layer is None:
        return gradcam_layer(model, x)
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise KeyError(f"model has no layer {layer!r}; layers: {', '.join(n for n in modules if n)}")
        return modules[layer]
    return layer


def _per_target(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, targets: Tensor, chunk_size: int) -> Tensor:
    """Run a one-target-per-row captum method on every (image, target) pair, ``chunk_size`` rows at a time.

    Each image is repeated once per target (rows n·T … n·T + T − 1 are image n), so one
    batched backward serves all targets of a chunk.  Returns (N, T, H, W), summed over channels.
    """
    n, t = targets.shape
    rows = x.repeat_interleave(t, dim=0)
    flat_targets = targets.reshape(-1)
    maps = []
    for i in range(0, len(rows), max(1, chunk_size)):
        a = fn(rows[i:i + chunk_size], flat_targets[i:i + chunk_size])
        maps.append(a.detach().sum(1))
    return torch.cat(maps).reshape(n, t, *x.shape[2:])


def _occlusion(model: nn.Module, x: Tensor, targets: Tensor, o: dict[str, Any]) -> Tensor:
    from captum.attr import Occlusion

    c = x.shape[1]
    stride = o["stride"] or o["window"]
    occ = Occlusion(model)
    kwargs = dict(sliding_window_shapes=(c, o["window"], o["window"]), strides=(c, stride, stride), baselines=0.0,
                  perturbations_per_eval=o["perturbations_per_eval"])
    maps = []
    for i in range(0, len(x), max(1, o["chunk_size"])):
        xc, tc = x[i:i + o["chunk_size"]], targets[i:i + o["chunk_size"]]
        # target=None: captum attributes every logit of every image from the same perturbed
        # forward passes, as an (N·K, C, H, W) tensor; then each image's targets are picked
        a = occ.attribute(xc, target=None, **kwargs)
        k = a.shape[0] // len(xc)
        if a.shape[0] != len(xc) * k or k <= int(tc.max()):
            raise RuntimeError(f"captum's Occlusion returned {tuple(a.shape)} attributions for {len(xc)} images; "
                               "expected one map per (image, logit)")
        a = a.reshape(len(xc), k, *a.shape[1:]).sum(2)
        maps.append(a.gather(1, tc[:, :, None, None].expand(-1, -1, *a.shape[2:])))
    return torch.cat(maps)


def attribute(model: nn.Module, x: Tensor, targets: Tensor | int, method: str, **opts: Any) -> Tensor:
    """Attribution maps of ``method`` for ``targets`` on the model inputs ``x`` (already encoded).

    ``targets``: an int, (N,) or (N, T) classes.  Returns (N, T, H, W): each map summed
    over the input channels (for ``"own"``, ``explain(...).contribution_map``).  The model
    runs in eval mode (restored after); no gradient reaches its parameters.

    Options (defaults in brackets): ``ig``: ``steps`` [20], ``integration`` [gausslegendre],
    ``internal_batch_size`` [64]; ``gradcam``: ``layer`` [the last spatial feature map,
    see :func:`gradcam_layer`], ``interpolate_mode`` [bilinear], ``relu`` [False];
    ``occlusion``: ``window`` [7], ``stride`` [= window], ``perturbations_per_eval`` [16];
    every post-hoc method: ``chunk_size`` [64], the (image, target) rows per captum call.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
    if x.dim() != 4:
        raise ValueError(f"attribute expects model inputs (N, C, H, W), got {tuple(x.shape)}")
    o = _options(method, opts)
    targets = as_target_matrix(targets, len(x), x.device)
    if method == "own":
        if not is_explainable(model):
            raise ValueError(f"method 'own' needs a dynamic-linear model (one with an explanation mode, "
                             f"model.explainable); {type(model).__name__} has none: use a post-hoc method "
                             f"({', '.join(POSTHOC_METHODS)})")
        return explain(model, x, targets, colour=False).contribution_map.detach()

    from captum.attr import (DeepLift, GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution,
                             LayerGradCam)

    x = x.detach()
    with _evaluating(model), torch.enable_grad():
        if method == "occlusion":
            return _occlusion(model, x, targets, o)
        if method == "ixg":
            ixg = InputXGradient(model)
            fn = lambda xc, tc: ixg.attribute(xc, target=tc)  # noqa: E731
        elif method == "ig":
            ig = IntegratedGradients(model)
            fn = lambda xc, tc: ig.attribute(xc, baselines=0.0, target=tc, n_steps=o["steps"],  # noqa: E731
                                             method=o["integration"], internal_batch_size=o["internal_batch_size"])
        elif method == "deeplift":
            dl = DeepLift(model)
            fn = lambda xc, tc: dl.attribute(xc, baselines=0.0, target=tc)  # noqa: E731
        elif method == "guided_backprop":
            gb = GuidedBackprop(model)
            fn = lambda xc, tc: gb.attribute(xc, target=tc)  # noqa: E731
        else:  # gradcam: the class-weighted feature map, upsampled to the input size
            cam = LayerGradCam(model, _resolve_layer(model, o["layer"], x))
            size = tuple(x.shape[2:])

            def fn(xc: Tensor, tc: Tensor) -> Tensor:
                a = cam.attribute(xc, target=tc, relu_attributions=o["relu"])
                return LayerAttribution.interpolate(a, size, interpolate_mode=o["interpolate_mode"])
        return _per_target(fn, x, targets, o["chunk_size"])
