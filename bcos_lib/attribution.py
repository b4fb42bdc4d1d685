"""Attribution maps by method name: the model's own explanation and captum's post-hoc baselines.

This is step 3 of the grid pointing game (CoDA Nets §5.1, B-cos v1 §5.2): for each class in
the grid, the model's attribution for that class over the whole grid (B-cos / CoDA:
``W(x) ⊙ x`` summed over channels; post-hoc methods: their own map).  :func:`attribute` returns every
method's map in one shape, (N, T, H, W), summed over the input channels, so that the
metrics in :mod:`bcos_lib.metrics` never need to know which method made a map.

Methods live in a registry (:func:`register_attribution`; :func:`list_attributions` gives the
names, :func:`method_label` how tables and figures call them); a method file of
:mod:`bcos_lib.methods` may register more.  Built in:

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .explain import as_target_matrix, explain
from .layers.explanation_mode import is_explainable
from .utils import evaluating, find_module

if TYPE_CHECKING:  # pragma: no cover
    from .config import EvaluateConfig

__all__ = ["Attribution", "register_attribution", "get_attribution", "list_attributions", "posthoc_attributions",
           "attribute", "method_label", "config_options", "gradcam_layer", "as_target_matrix", "quiet_evaluation"]


@dataclass(frozen=True)
class Attribution:
    """An attribution method: ``fn(model, x, targets (N, T), options) -> maps (N, T, H, W)``.

    ``defaults``: the options it accepts, with their defaults; ``from_config``: the options that
    the evaluate section of params.yaml sets for it; ``needs_dynamic_linear``: only for models
    that explain themselves (``model.explainable``)."""

    name: str
    label: str
    fn: Callable[[nn.Module, Tensor, Tensor, dict[str, Any]], Tensor]
    defaults: dict[str, Any] = field(default_factory=dict)
    from_config: Callable[["EvaluateConfig"], dict[str, Any]] | None = None
    needs_dynamic_linear: bool = False


_ATTRIBUTIONS: dict[str, Attribution] = {}
#: labels of rankings that are not attributions (pixel deletion's baseline)
_OTHER_LABELS = {"random": "random order"}


def register_attribution(a: Attribution) -> Attribution:
    if a.name in _ATTRIBUTIONS or a.name in _OTHER_LABELS:
        raise KeyError(f"attribution method {a.name!r} is registered twice")
    _ATTRIBUTIONS[a.name] = a
    return a


def _ensure_loaded() -> None:
    from .methods import load_methods
    load_methods()


def list_attributions() -> list[str]:
    """Every registered attribution method, in registration order (the order of tables)."""
    _ensure_loaded()
    return list(_ATTRIBUTIONS)


def posthoc_attributions() -> list[str]:
    """The methods that explain any model (not only a dynamic-linear one)."""
    return [n for n in list_attributions() if not _ATTRIBUTIONS[n].needs_dynamic_linear]


def get_attribution(name: str) -> Attribution:
    _ensure_loaded()
    if name not in _ATTRIBUTIONS:
        raise ValueError(f"unknown attribution method {name!r}; known: {', '.join(_ATTRIBUTIONS)}")
    return _ATTRIBUTIONS[name]


def method_label(name: str) -> str:
    """How plots and tables name a method (``"ig"`` → ``"Integrated Gradients"``)."""
    if name in _OTHER_LABELS:
        return _OTHER_LABELS[name]
    return get_attribution(name).label


def config_options(name: str, cfg: "EvaluateConfig") -> dict[str, Any]:
    """The options that the evaluate config ``cfg`` sets for method ``name``."""
    a = get_attribution(name)
    return a.from_config(cfg) if a.from_config is not None else {}


# captum warns on every call that it made the inputs require gradients and that it set hooks
# on activations (DeepLIFT, Guided Backprop): both are intended here
_EXPECTED_WARNINGS = (r".*did not already require gradients.*", r".*Setting forward, backward hooks.*",
                      r".*Setting backward hooks on ReLU.*")


@contextmanager
def quiet_evaluation(model: nn.Module) -> Iterator[None]:
    """Eval mode (restored after), without captum's expected warnings."""
    with evaluating(model), warnings.catch_warnings():
        for pattern in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
        yield


def _options(a: Attribution, opts: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(a.defaults))
    if unknown:
        raise TypeError(f"attribution method {a.name!r} got unknown option(s) {unknown}; "
                        f"it accepts: {', '.join(a.defaults) or 'none'}")
    return {**a.defaults, **opts}


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
        with quiet_evaluation(model), torch.no_grad():
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
    return find_module(model, layer) if isinstance(layer, str) else layer


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
    a = get_attribution(method)
    if x.dim() != 4:
        raise ValueError(f"attribute expects model inputs (N, C, H, W), got {tuple(x.shape)}")
    o = _options(a, opts)
    targets = as_target_matrix(targets, len(x), x.device)
    if a.needs_dynamic_linear and not is_explainable(model):
        raise ValueError(f"method {method!r} needs a dynamic-linear model (model.explainable); "
                         f"{type(model).__name__} is not: use a post-hoc method ({', '.join(posthoc_attributions())})")
    with quiet_evaluation(model), torch.enable_grad():
        return a.fn(model, x.detach(), targets, o)


# ----------------------------------------------------------------------------- the built-in methods
def _own(model: nn.Module, x: Tensor, targets: Tensor, o: dict[str, Any]) -> Tensor:
    return explain(model, x, targets, colour=False).contribution_map.detach()


def _captum(make: Callable[[nn.Module, Tensor, dict[str, Any]], Callable[[Tensor, Tensor], Tensor]]):
    """A method from a factory of one-target-per-row captum calls (see :func:`_per_target`)."""
    def fn(model: nn.Module, x: Tensor, targets: Tensor, o: dict[str, Any]) -> Tensor:
        return _per_target(make(model, x, o), x, targets, o["chunk_size"])
    return fn


def _ixg(model: nn.Module, x: Tensor, o: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    from captum.attr import InputXGradient
    ixg = InputXGradient(model)
    return lambda xc, tc: ixg.attribute(xc, target=tc)


def _ig(model: nn.Module, x: Tensor, o: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    from captum.attr import IntegratedGradients
    ig = IntegratedGradients(model)
    return lambda xc, tc: ig.attribute(xc, baselines=0.0, target=tc, n_steps=o["steps"], method=o["integration"],
                                       internal_batch_size=o["internal_batch_size"])


def _deeplift(model: nn.Module, x: Tensor, o: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    from captum.attr import DeepLift
    dl = DeepLift(model)
    return lambda xc, tc: dl.attribute(xc, baselines=0.0, target=tc)


def _guided_backprop(model: nn.Module, x: Tensor, o: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    from captum.attr import GuidedBackprop
    gb = GuidedBackprop(model)
    return lambda xc, tc: gb.attribute(xc, target=tc)


def _gradcam(model: nn.Module, x: Tensor, o: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """The class-weighted feature map, upsampled to the input size."""
    from captum.attr import LayerAttribution, LayerGradCam
    cam = LayerGradCam(model, _resolve_layer(model, o["layer"], x))
    size = tuple(x.shape[2:])

    def fn(xc: Tensor, tc: Tensor) -> Tensor:
        a = cam.attribute(xc, target=tc, relu_attributions=o["relu"])
        return LayerAttribution.interpolate(a, size, interpolate_mode=o["interpolate_mode"])
    return fn


register_attribution(Attribution("own", "own explanation (W(x)⊙x)", _own, needs_dynamic_linear=True))
register_attribution(Attribution("ixg", "Input×Gradient", _captum(_ixg), {"chunk_size": 64}))
register_attribution(Attribution(
    "ig", "Integrated Gradients", _captum(_ig),
    {"steps": 20, "integration": "gausslegendre", "internal_batch_size": 64, "chunk_size": 64},
    from_config=lambda cfg: {"steps": cfg.ig_steps}))
register_attribution(Attribution(
    "gradcam", "Grad-CAM", _captum(_gradcam),
    {"layer": None, "interpolate_mode": "bilinear", "relu": False, "chunk_size": 64}))
register_attribution(Attribution(
    "occlusion", "Occlusion", _occlusion,
    {"window": 7, "stride": None, "perturbations_per_eval": 16, "chunk_size": 64},
    from_config=lambda cfg: {"window": cfg.occlusion_window, "stride": cfg.occlusion_stride}))
register_attribution(Attribution("deeplift", "DeepLIFT", _captum(_deeplift), {"chunk_size": 64}))
register_attribution(Attribution("guided_backprop", "Guided Backprop", _captum(_guided_backprop), {"chunk_size": 64}))
