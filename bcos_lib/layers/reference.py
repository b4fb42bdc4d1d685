"""Slow float64 references that follow the equations literally (for tests, not for use).

Each fast layer in ``bcos_lib.layers`` has a reference here written the obvious way:

* B-cos convolution: cut out every input patch explicitly (zero padding, stride,
  dilation, per group), then per patch and filter ``(ŵᵀx)·(|ŵᵀx|/‖x‖)^(B−1)`` with
  ‖x‖ = sqrt(Σ patch² + ε), then MaxOut as an explicit maximum over each unit's M
  B-cos outputs (the fast layer takes the max of the *linear* outputs first, which is
  the same because the B-cos unit is monotone in ŵᵀx), then the fixed layer scale.
* Uncentred batch / layer norm: ``x · γ / sqrt(Var + ε)`` with the variance written out.
* B-cos attention: per head, softmax written as exp / Σ exp.
* Class-specific gate (CSG, ECCV 2020 §3): image by image and channel by channel,
  feature map k of an image of class y times G[k, y]; the sparsity loss as a sum over the
  entries; the renormalisation row by row (divide by the row's maximum, clip to [0, 1]).

The stabilisers ε of the fast layers (``NORM_EPS`` inside the patch norm's square root,
``COS_EPS`` added to |cos|) are part of the function the layers compute, so the
references take them as arguments with the same defaults; pass 0 for the pure equation.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attention import BcosAttention
from .bcos import COS_EPS, NORM_EPS, BcosConv2d, BcosLinear
from .norms import UncentredBatchNorm2d, UncentredLayerNorm

__all__ = ["unfold_patches", "bcos_unit", "bcos_conv2d_reference", "bcos_linear_reference",
           "uncentred_batch_norm_reference", "uncentred_layer_norm_reference", "bcos_attention_reference",
           "reference_forward", "class_gate_reference", "gate_sparsity_reference", "gate_renormalise_reference"]

Pair = tuple[int, int]


def _pair(v: int | Pair) -> Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def unfold_patches(x: Tensor, kernel_size: int | Pair, stride: int | Pair = 1, padding: int | Pair = 0,
                   dilation: int | Pair = 1) -> Tensor:
    """Every k_h×k_w patch of ``x`` (N, C, H, W): (N, C, k_h, k_w, H', W').

    Pads with zeros, then for each kernel offset (i, j) takes the strided slice of the
    pixels that offset sees: pixel (i·d_h + s_h·y', j·d_w + s_w·x') of the padded image.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
    n, c, h, w = x.shape
    xp = x.new_zeros(n, c, h + 2 * ph, w + 2 * pw)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    patches = x.new_zeros(n, c, kh, kw, out_h, out_w)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            patches[:, :, i, j] = xp[:, :, rows, cols]
    return patches


def bcos_unit(w: Tensor, x: Tensor, b: float, normalize_weights: bool = True, norm_eps: float = NORM_EPS,
              cos_eps: float = COS_EPS) -> Tensor:
    """B-cos(x; w) = (ŵᵀx)·(|ŵᵀx / ‖x‖| + ε_cos)^(B−1) for filters w (F, D) and inputs x (..., D) → (..., F)."""
    w_hat = w / w.norm(dim=1, keepdim=True) if normalize_weights else w
    lin = x @ w_hat.T
    norm = ((x * x).sum(-1, keepdim=True) + norm_eps).sqrt()
    cos = lin / norm
    return lin * (cos.abs() + cos_eps) ** (b - 1)


def _max_out(units: Tensor, out_features: int, max_out: int) -> Tensor:
    """Explicit max over each unit's ``max_out`` consecutive filters along the last dimension."""
    per_unit = units.unflatten(-1, (out_features, max_out))
    best = per_unit[..., 0]
    for m in range(1, max_out):
        best = torch.maximum(best, per_unit[..., m])
    return best


def bcos_conv2d_reference(x: Tensor, weight: Tensor, b: float, stride: int | Pair = 1, padding: int | Pair = 0,
                          dilation: int | Pair = 1, groups: int = 1, max_out: int = 1, scale: float = 1.0,
                          normalize_weights: bool = True, norm_eps: float = NORM_EPS,
                          cos_eps: float = COS_EPS) -> Tensor:
    """The B-cos convolution, patch by patch, in float64; ``weight`` is (out·M, C/groups, k_h, k_w)."""
    x, weight = x.double(), weight.double()
    n, c, _, _ = x.shape
    filters, c_g, kh, kw = weight.shape
    out_channels = filters // max_out
    patches = unfold_patches(x, (kh, kw), stride, padding, dilation)  # (N, C, kh, kw, H', W')
    out_h, out_w = patches.shape[-2:]
    # (N, H', W', groups, C/groups·kh·kw): one flat patch per position and group, ordered like the weights
    patches = patches.view(n, groups, c_g, kh, kw, out_h, out_w).permute(0, 5, 6, 1, 2, 3, 4)
    patches = patches.reshape(n, out_h, out_w, groups, c_g * kh * kw)
    w_groups = weight.view(groups, filters // groups, c_g * kh * kw)
    per_group = [bcos_unit(w_groups[g], patches[..., g, :], b, normalize_weights, norm_eps, cos_eps)
                 for g in range(groups)]
    outputs = torch.cat(per_group, dim=-1)  # (N, H', W', out·M); filters of group g come g-th
    outputs = _max_out(outputs, out_channels, max_out)
    return (outputs / scale).permute(0, 3, 1, 2)


def bcos_linear_reference(x: Tensor, weight: Tensor, b: float, max_out: int = 1, scale: float = 1.0,
                          normalize_weights: bool = True, norm_eps: float = NORM_EPS,
                          cos_eps: float = COS_EPS) -> Tensor:
    """B-cos linear layer on the last dimension in float64; ``weight`` is (out·M, in)."""
    outputs = bcos_unit(weight.double(), x.double(), b, normalize_weights, norm_eps, cos_eps)
    return _max_out(outputs, weight.shape[0] // max_out, max_out) / scale


def uncentred_batch_norm_reference(x: Tensor, weight: Tensor, eps: float, var: Tensor | None = None) -> Tensor:
    """``x · γ / sqrt(Var + ε)`` per channel; ``var=None`` uses the batch's (biased) variance
    Σ(x − mean)² / n over N, H, W (training mode), else the given running variance."""
    x = x.double()
    if var is None:
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.sum(dim=(0, 2, 3), keepdim=True) / n
        var = ((x - mean) ** 2).sum(dim=(0, 2, 3)) / n
    gamma = weight.double() / (var.double() + eps).sqrt()
    return x * gamma.view(1, -1, 1, 1)


def uncentred_layer_norm_reference(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``x · γ / sqrt(Var + ε)`` with the (biased) variance of each token's features."""
    x = x.double()
    d = x.shape[-1]
    mean = x.sum(-1, keepdim=True) / d
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / d
    return x / (var + eps).sqrt() * weight.double()


def bcos_attention_reference(x: Tensor, qkv_weight: Tensor, proj_weight: Tensor, heads: int, b: float) -> Tensor:
    """B-cos self-attention on (N, T, D), head by head, with softmax as exp / Σ exp."""
    x = x.double()
    n, t, d = x.shape
    dh = d // heads
    qkv = bcos_linear_reference(x, qkv_weight, b)  # (N, T, 3D): [q heads…, k heads…, v heads…]
    heads_out = []
    for h in range(heads):
        q = qkv[..., h * dh:(h + 1) * dh]
        k = qkv[..., d + h * dh:d + (h + 1) * dh]
        v = qkv[..., 2 * d + h * dh:2 * d + (h + 1) * dh]
        dots = q @ k.transpose(1, 2) / math.sqrt(dh)
        e = (dots - dots.amax(-1, keepdim=True)).exp()  # shift for stability; cancels in the ratio
        heads_out.append((e / e.sum(-1, keepdim=True)) @ v)
    return bcos_linear_reference(torch.cat(heads_out, -1), proj_weight, b)


def reference_forward(module: nn.Module, x: Tensor) -> Tensor:
    """The reference output of one of the project's layers for input ``x`` (float64).

    Batch norm uses the batch variance in training mode and the running variance otherwise.
    """
    if isinstance(module, BcosConv2d):
        if isinstance(module.padding, str):
            raise ValueError("the reference supports integer padding only")
        return bcos_conv2d_reference(x, module.weight, module.b, module.stride, module.padding, module.dilation,
                                     module.groups, module.max_out, module.scale, module.normalize_weights)
    if isinstance(module, BcosLinear):
        return bcos_linear_reference(x, module.weight, module.b, module.max_out, module.scale,
                                     module.normalize_weights)
    if isinstance(module, UncentredBatchNorm2d):
        return uncentred_batch_norm_reference(x, module.weight, module.eps,
                                              None if module.training else module.running_var)
    if isinstance(module, UncentredLayerNorm):
        return uncentred_layer_norm_reference(x, module.weight, module.eps)
    if isinstance(module, BcosAttention):
        if not (isinstance(module.qkv, BcosLinear) and isinstance(module.proj, BcosLinear)):
            raise TypeError("the attention reference covers B-cos projections only")
        if module.qkv.max_out != 1 or module.qkv.b != module.proj.b:
            raise ValueError("the attention reference covers max_out = 1 and one B for all projections")
        return bcos_attention_reference(x, module.qkv.weight, module.proj.weight, module.heads, module.qkv.b)
    raise TypeError(f"no reference for {type(module).__name__}")


def class_gate_reference(features: Tensor, gate: Tensor, labels: Tensor) -> Tensor:
    """CSG forward (ECCV 2020 §3.2): out[n, k] = features[n, k] · G[k, labels[n]], in float64."""
    f, g = features.double(), gate.double()
    out = torch.empty_like(f)
    for n in range(f.shape[0]):
        for k in range(f.shape[1]):
            out[n, k] = f[n, k] * g[k, int(labels[n])]
    return out


def gate_sparsity_reference(gate: Tensor, weight: float, density: float) -> float:
    """λ · max(0, Σ_kc |G[k, c]| − d · (number of entries)) (ECCV 2020 §3.3)."""
    total = sum(abs(float(v)) for v in gate.double().flatten())
    return weight * max(0.0, total - density * gate.numel())


def gate_renormalise_reference(gate: Tensor) -> Tensor:
    """Each row divided by its maximum over the classes, then clipped to [0, 1]; a row with no
    positive entry becomes one-hot at its largest entry (float64)."""
    g = gate.double().clone()
    for k in range(g.shape[0]):
        row = g[k]
        m = float(row.max())
        if m > 0:
            g[k] = (row / m).clamp(0.0, 1.0)
        else:
            top = int(row.argmax())
            g[k] = 0.0
            g[k, top] = 1.0
    return g
