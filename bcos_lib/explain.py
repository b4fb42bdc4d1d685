"""Explanations of dynamic-linear networks: ``y(x) = W(x) x``.

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
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers.explanation_mode import explanation_mode, is_explainable
from .utils import evaluating, find_module

__all__ = ["Explanation", "explain", "colour_explanation", "dynamic_linear_output", "as_target_matrix"]


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
    if colour and (encoding == "add_inverse" or (encoding == "none" and is_explainable(model))):
        n, t = targets.shape
        rgba = colour_explanation(weights.flatten(0, 1), xd.expand_as(weights).flatten(0, 1), smooth=smooth,
                                  paired=encoding == "add_inverse").unflatten(0, (n, t))
    return Explanation(logits=out, targets=targets, target_outputs=out.gather(1, targets), bias=bias,
                       weights=weights, contributions=contributions, contribution_map=contributions.sum(2), rgba=rgba)


def colour_explanation(weights: Tensor, inputs: Tensor, smooth: int = 3, percentile: float = 99.5,
                       paired: bool = True) -> Tensor:
    """B-cos colour explanation (v1 §3.5) from W and the inputs ``[x, 1 − x]``, both (N, 2C, H, W).

    W is divided by its per-pixel max |W| over channels and clamped at ≥ 0; colour =
    W[:C] / (W[:C] + W[C:]); opacity = ‖W‖₂ over channels, zero where the pixel's
    contribution Σ_channels W ⊙ x is negative, smoothed with an avg-pool of ``smooth``, divided by its
    ``percentile``-th percentile and clipped to [0, 1].  Returns (N, H, W, 4) RGBA in [0, 1]
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
        alpha = F.avg_pool2d(alpha, smooth, stride=1, padding=smooth // 2, count_include_pad=False)[..., :h, :w]
    q = torch.quantile(alpha.flatten(1), percentile / 100.0, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    alpha = (alpha / q).clamp(0, 1)
    if c == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    return torch.cat([rgb, alpha], 1).permute(0, 2, 3, 1).contiguous()
