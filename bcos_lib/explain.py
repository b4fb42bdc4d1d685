"""Explanations: the model's own (dynamic-linear networks, ``y(x) = W(x) x``) and the post-hoc
attributions that explain any model.

Explanations of dynamic-linear networks: ``y(x) = W(x) x``.

In explanation mode (``bcos_lib.layers.explanation_mode``) a B-cos network is exactly
linear in its input for the fixed factors of *this* input, so for class c

    W_c(x) = ∂y_c/∂x            (one backward pass, the factors held constant)
    contributions = W_c(x) ⊙ x   (per channel)
    contribution_map = Σ_channels W_c(x) ⊙ x,   Σ_pixels contribution_map = y_c − b_c

where b_c is the fixed logit bias (B-cos v2 §3).  For an intermediate layer the same holds
for the spatially summed activation of one channel ("interpretable depth"); for a
transformer layer with (N, tokens, C) outputs, for one channel summed over the tokens.  For a
conventional network the same formula is Input×Gradient, which does *not* sum to the logit.

``explain`` takes a batch and one or several target classes per image; the forward pass
is shared by all targets of a batch and the W's come from batched vector-Jacobian
products.  Gradients never reach the model's parameters or the caller's tensors, and
the model's train/eval mode is restored.

**Attribution maps by name.** Attribution maps by name: the model's own explanation and captum's post-hoc baselines.

This is step 3 of the grid pointing game (CoDA Nets §5.1, B-cos v1 §5.2): for each class in
the grid, the model's attribution for that class over the whole grid (B-cos / CoDA:
``W(x) ⊙ x`` summed over channels; post-hoc attributions: their own map).  :func:`attribute` returns every
attribution's map in one shape, (N, T, H, W), summed over the input channels, so that the
metrics in :mod:`bcos_lib.metrics` never need to know which attribution made a map.

Attributions live in a registry (:func:`register_attribution`; :func:`list_attributions` gives the
names, :func:`attribution_label` how tables and figures call them); a paper's method package of
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

The post-hoc attributions are captum's, not re-implemented here; they see the model as
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
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core.utils import evaluating, find_module
from .layers.explanation_mode import explanation_mode, is_explainable

__all__ = ["Explanation", "explain", "colour_explanation", "dynamic_linear_output", "as_target_matrix", "Attribution",
           "register_attribution", "get_attribution", "list_attributions", "posthoc_attributions", "attribute",
           "attribution_label", "config_options", "gradcam_layer", "quiet_evaluation"]


@dataclass
class Explanation:
    """The result of :func:`explain`; T = targets per image (1 unless several were asked for).

    ``logits`` (N, K) — the model's output (for a layer: the layer's channel sums, (N, C_l))
    ``targets`` (N, T) — the explained classes (or channels)
    ``target_outputs`` (N, T) — the explained outputs y_t
    ``bias`` (N, T) — the fixed part of y_t that no input carries (the logit bias; 0 for layers)
    ``weights`` (N, T, C, H, W) — W_t(x)
    ``contributions`` (N, T, C, H, W) — W_t(x) ⊙ x
    ``contribution_map`` (N, T, H, W) — contributions summed over channels
    ``rgba`` (N, T, H, W, 4) or None — the colour explanation (inputs encoded as [x, 1 − x] only)
    """

    logits: Tensor
    targets: Tensor
    target_outputs: Tensor
    bias: Tensor
    weights: Tensor
    contributions: Tensor
    contribution_map: Tensor
    rgba: Tensor | None

    def squeeze_targets(self) -> "Explanation":
        """Drop the T dimension when there is a single target per image."""
        if self.targets.shape[1] != 1:
            return self
        return Explanation(self.logits, self.targets[:, 0], self.target_outputs[:, 0], self.bias[:, 0],
                           self.weights[:, 0], self.contributions[:, 0], self.contribution_map[:, 0],
                           None if self.rgba is None else self.rgba[:, 0])


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


def dynamic_linear_output(model: nn.Module, x: Tensor, layer: str | None = None) -> Tensor:
    """The output that :func:`explain` differentiates: the logits, or the channels of ``layer`` summed
    over positions ((N, C, H, W) feature maps) or over tokens ((N, tokens, C) transformer layers)."""
    if layer is None:
        return model(x)
    captured: list[Tensor] = []
    handle = find_module(model, layer).register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    out = captured[0]
    if out.dim() == 3:  # (N, tokens, C) of a transformer layer: sum over the tokens
        return out.sum(1)
    return out.flatten(2).sum(-1) if out.dim() > 2 else out


@contextmanager
def _parameters_frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients for the block (restored after).

    W(x) = ∂y/∂x needs no parameter gradient; with the parameters frozen autograd records
    nothing for computations on parameters alone (e.g. the unit-norm weights ŵ = w/‖w‖).
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _batched_vjp(out: Tensor, x: Tensor, targets: Tensor) -> Tensor:
    """∂out[n, targets[n, t]]/∂x for all t, sharing one forward: (N, T, *x.shape[1:]).

    On the CPU one backward pass per target through the retained graph is faster than the
    vmapped (``is_grads_batched``) backward, whose convolution backward runs per target
    anyway and adds copies; elsewhere the vmapped backward is tried first.
    """
    n, t = targets.shape
    grad_out = torch.zeros(t, *out.shape, dtype=out.dtype, device=out.device)
    grad_out.scatter_(2, targets.T.unsqueeze(-1), 1.0)
    if t == 1:
        (g,) = torch.autograd.grad(out, x, grad_out[0])
        return g.unsqueeze(1).contiguous()
    if x.device.type != "cpu":
        try:
            (g,) = torch.autograd.grad(out, x, grad_out, is_grads_batched=True, retain_graph=True)
            return g.transpose(0, 1).contiguous()
        except RuntimeError:  # an op without a batching rule: one backward per target, same forward
            pass
    grads = [torch.autograd.grad(out, x, grad_out[i], retain_graph=i < t - 1)[0] for i in range(t)]
    return torch.stack(grads, 1).contiguous()


def explain(model: nn.Module, x: Tensor, targets: Tensor | int | None = None, layer: str | None = None,
            smooth: int = 3, colour: bool = True, explanation_mode_on: bool = True) -> Explanation:
    """Explain ``model``'s output for the model inputs ``x`` (already encoded, e.g. ``[x, 1 − x]``).

    ``targets``: None (the predicted class), an int, (N,) or (N, T) classes — or channels of
    ``layer`` (a module name, e.g. ``"features.3"``).  ``explanation_mode_on=False`` gives
    the plain gradient (the dynamic factors are then differentiated too).
    """
    if x.dim() != 4:
        raise ValueError(f"explain expects a batch of images (N, C, H, W), got {tuple(x.shape)}")
    x = x.detach().clone()
    # on the CPU the channels-last layout makes the convolutions' backward passes faster;
    # a model that cannot take it (a .view on a permuted activation) gets the plain layout
    x_in = x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x
    x_in.requires_grad_(True)
    with evaluating(model), _parameters_frozen(model), torch.enable_grad(), explanation_mode(model, explanation_mode_on):
        try:
            out = dynamic_linear_output(model, x_in, layer)
        except RuntimeError:
            if x_in is x:
                raise
            x_in = x.requires_grad_(True)
            out = dynamic_linear_output(model, x_in, layer)
        if targets is None:
            targets = out.argmax(1)
        targets = as_target_matrix(targets, len(x), out.device)
        if (targets < 0).any() or (targets >= out.shape[1]).any():
            raise ValueError(f"targets must lie in [0, {out.shape[1]})")
        weights = _batched_vjp(out, x_in, targets)
    out = out.detach()
    xd = x.detach().unsqueeze(1)
    contributions = weights * xd
    bias_vec = None
    if layer is None and hasattr(model, "explanation_bias"):
        bias_vec = model.explanation_bias()
    bias = (bias_vec.to(out.dtype)[targets] if bias_vec is not None else torch.zeros(targets.shape, dtype=out.dtype,
                                                                                      device=out.device))
    rgba = None
    encoding = getattr(model, "encoding", None)
    # x-only B-cos models get the input-coloured variant (see colour_explanation)
    from .models.base import PAIRED_ENCODINGS
    paired = encoding in PAIRED_ENCODINGS
    if colour and (paired or (encoding == "none" and is_explainable(model))):
        n, t = targets.shape
        rgba = colour_explanation(weights.flatten(0, 1), xd.expand_as(weights).flatten(0, 1), smooth=smooth,
                                  paired=paired).unflatten(0, (n, t))
    return Explanation(logits=out, targets=targets, target_outputs=out.gather(1, targets), bias=bias,
                       weights=weights, contributions=contributions, contribution_map=contributions.sum(2), rgba=rgba)


def colour_explanation(weights: Tensor, inputs: Tensor, smooth: int = 3, percentile: float = 99.5,
                       paired: bool = True, count_include_pad: bool = True) -> Tensor:
    """B-cos colour explanation (v1 §3.5) from W and the inputs ``[x, 1 − x]``, both (N, 2C, H, W).

    W is divided by its per-pixel max |W| over channels and clamped at ≥ 0; colour =
    W[:C] / (W[:C] + W[C:]); opacity = ‖W‖₂ over channels, zero where the pixel's
    contribution Σ_channels W ⊙ x is negative, smoothed with an avg-pool of ``smooth`` (stride 1,
    zero padding ``smooth // 2`` *counted* in the average, as the official renderer
    ``gradient_to_image`` does), divided by its ``percentile``-th percentile and clipped to
    [0, 1].  The padding matters beyond the border: it lowers the border pixels' opacity and
    so the percentile that divides every pixel.  ``count_include_pad=False`` (average over the
    pixels inside the image only) is kept as a variant; the default is the paper's.  Returns (N, H, W, 4) RGBA in [0, 1]
    (grey images give an RGB of three equal channels).

    ``paired=False``: the inputs are the images ``x`` alone (N, C, H, W), a model without the
    ``[x, 1 − x]`` encoding.  Its weights say nothing about colour (there is no inverse channel
    to weigh against), so the colour is the input pixel itself, seen through the same opacity:
    the image as far as the model uses it.
    """
    n, c2, h, w = weights.shape
    if inputs.shape != weights.shape:
        raise ValueError(f"weights {tuple(weights.shape)} and inputs {tuple(inputs.shape)} must have the same shape")
    if paired and c2 % 2:
        raise ValueError(f"colour explanations need weights of [x, 1 − x] inputs (an even channel count), got {c2}; "
                         "pass paired=False for a model that takes the images alone")
    c = c2 // 2 if paired else c2
    wd = weights.detach().float()
    contrib = (wd * inputs.detach().float()).sum(1, keepdim=True)
    if paired:
        normed = wd / wd.abs().amax(1, keepdim=True).clamp_min(1e-12)
        normed = normed.clamp_min(0)
        rgb = normed[:, :c] / (normed[:, :c] + normed[:, c:]).clamp_min(1e-12)
    else:
        rgb = inputs.detach().float().clamp(0, 1)
    alpha = wd.norm(dim=1, keepdim=True)
    alpha = torch.where(contrib < 0, torch.zeros_like(alpha), alpha)
    if smooth > 1:
        alpha = F.avg_pool2d(alpha, smooth, stride=1, padding=smooth // 2,
                             count_include_pad=count_include_pad)[..., :h, :w]
    q = torch.quantile(alpha.flatten(1), percentile / 100.0, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    alpha = (alpha / q).clamp(0, 1)
    if c == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    return torch.cat([rgb, alpha], 1).permute(0, 2, 3, 1).contiguous()


# ============================================================================= attributions
@dataclass(frozen=True)
class Attribution:
    """An attribution: ``fn(model, x, targets (N, T), options) -> maps (N, T, H, W)``.

    ``defaults``: the options it accepts, with their defaults; ``from_config``: the options that
    the evaluate section of params.yaml sets for it; ``needs_dynamic_linear``: only for models
    that explain themselves (``model.explainable``)."""

    name: str
    label: str
    fn: Callable[[nn.Module, Tensor, Tensor, dict[str, Any]], Tensor]
    defaults: dict[str, Any] = field(default_factory=dict)
    from_config: Callable[[Any], dict[str, Any]] | None = None
    needs_dynamic_linear: bool = False


_ATTRIBUTIONS: dict[str, Attribution] = {}
#: labels of rankings that are not attributions (pixel deletion's baseline)
_OTHER_LABELS = {"random": "random order"}


def register_attribution(a: Attribution) -> Attribution:
    from .core.registry import ATTRIBUTIONS
    if a.name in _ATTRIBUTIONS or a.name in _OTHER_LABELS:
        raise KeyError(f"attribution {a.name!r} is registered twice")
    if a.name not in ATTRIBUTIONS:
        raise KeyError(f"attribution {a.name!r} is not declared in bcos_lib.core.registry.ATTRIBUTIONS "
                       f"(params.yaml is checked against that list)")
    _ATTRIBUTIONS[a.name] = a
    return a


def list_attributions() -> list[str]:
    """Every registered attribution, in registration order (the order of tables)."""
    return list(_ATTRIBUTIONS)


def posthoc_attributions() -> list[str]:
    """The attributions that explain any model (not only a dynamic-linear one)."""
    return [n for n in list_attributions() if not _ATTRIBUTIONS[n].needs_dynamic_linear]


def get_attribution(name: str) -> Attribution:
    if name not in _ATTRIBUTIONS:
        raise ValueError(f"unknown attribution {name!r}; known: {', '.join(_ATTRIBUTIONS)}")
    return _ATTRIBUTIONS[name]


def attribution_label(name: str) -> str:
    """How plots and tables name an attribution (``"ig"`` → ``"Integrated Gradients"``)."""
    if name in _OTHER_LABELS:
        return _OTHER_LABELS[name]
    return get_attribution(name).label


def config_options(name: str, cfg: Any) -> dict[str, Any]:
    """The options that the evaluate config ``cfg`` sets for attribution ``name``."""
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
        raise TypeError(f"attribution {a.name!r} got unknown option(s) {unknown}; "
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
    """Run a one-target-per-row captum attribution on every (image, target) pair, ``chunk_size`` rows at a time.

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


def attribute(model: nn.Module, x: Tensor, targets: Tensor | int, attribution: str, **opts: Any) -> Tensor:
    """Attribution maps of ``attribution`` for ``targets`` on the model inputs ``x`` (already encoded).

    ``targets``: an int, (N,) or (N, T) classes.  Returns (N, T, H, W): each map summed
    over the input channels (for ``"own"``, ``explain(...).contribution_map``).  The model
    runs in eval mode (restored after); no gradient reaches its parameters.

    Options (defaults in brackets): ``ig``: ``steps`` [20], ``integration`` [gausslegendre],
    ``internal_batch_size`` [64]; ``gradcam``: ``layer`` [the last spatial feature map,
    see :func:`gradcam_layer`], ``interpolate_mode`` [bilinear], ``relu`` [False];
    ``occlusion``: ``window`` [7], ``stride`` [= window], ``perturbations_per_eval`` [16];
    every post-hoc attribution: ``chunk_size`` [64], the (image, target) rows per captum call.
    """
    a = get_attribution(attribution)
    if x.dim() != 4:
        raise ValueError(f"attribute expects model inputs (N, C, H, W), got {tuple(x.shape)}")
    o = _options(a, opts)
    targets = as_target_matrix(targets, len(x), x.device)
    if a.needs_dynamic_linear and not is_explainable(model):
        raise ValueError(f"attribution {attribution!r} needs a dynamic-linear model (model.explainable); "
                         f"{type(model).__name__} is not: use a post-hoc attribution ({', '.join(posthoc_attributions())})")
    with quiet_evaluation(model), torch.enable_grad():
        return a.fn(model, x.detach(), targets, o)


# ----------------------------------------------------------------------------- the built-in attributions
def _own(model: nn.Module, x: Tensor, targets: Tensor, o: dict[str, Any]) -> Tensor:
    return explain(model, x, targets, colour=False).contribution_map.detach()


def _captum(make: Callable[[nn.Module, Tensor, dict[str, Any]], Callable[[Tensor, Tensor], Tensor]]):
    """An attribution from a factory of one-target-per-row captum calls (see :func:`_per_target`)."""
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
