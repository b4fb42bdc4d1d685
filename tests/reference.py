"""Slow float64 references that follow the equations literally (for tests, not for use).

Each fast layer in ``bcos_lib.layers`` has a reference here written the obvious way:

* B-cos convolution: cut out every input patch explicitly (zero padding, stride,
  dilation, per group), then per patch and filter ``(ŵᵀx)·(|ŵᵀx|/‖x‖)^(B−1)`` with
  ‖x‖ = sqrt(Σ patch² + ε), then MaxOut as an explicit maximum over each unit's M
  B-cos outputs (the fast layer takes the max of the *linear* outputs first, which is
  the same because the B-cos unit is monotone in ŵᵀx), then the fixed layer scale.
* Uncentred batch / layer norm: ``x · γ / sqrt(Var + ε)`` with the variance written out.
* B-cos attention: per head, softmax written as exp / Σ exp.
* Dynamic Alignment Unit (CoDA Nets eqs. 2–3): cut out every patch x, build its weight
  vector ``w(x) = B·(A x) + b`` explicitly for every unit, squash it to
  ``g(w) = ‖w‖²/(1 + ‖w‖²) · w/‖w‖`` (or ``w/‖w‖``) and take ``g(w)ᵀx``.
* Class-specific gate (CSG, ECCV 2020 §3): image by image and channel by channel,
  feature map k of an image of class y times G[k, y]; the sparsity loss as a sum over the
  entries; the renormalisation row by row (divide by the row's maximum, clip to [0, 1]).
* LWTA (DISCOVER §3): every block of U units visited one by one, its winner the largest
  h_u (+ g_u, given Gumbel noise), the losers set to 0; the KL term Σ π log(π / (1/U)).

The stabilisers ε of the fast layers (``NORM_EPS`` inside the patch norm's square root,
``COS_EPS`` added to |cos|) are part of the function the layers compute, so the
references take them as arguments with the same defaults; pass 0 for the pure equation.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bcos_lib.methods.bcos.layers import BcosAttention
from bcos_lib.methods.bcos.layers import COS_EPS, NORM_EPS, BcosConv2d, BcosLinear
from bcos_lib.methods.discover.layers import LWTA
from bcos_lib.methods.coda.layers import NORM_EPS as DAU_NORM_EPS
from bcos_lib.methods.coda.layers import DynamicAlignmentConv2d, DynamicAlignmentLinear
from bcos_lib.methods.bcos.layers import UncentredBatchNorm2d, UncentredLayerNorm

__all__ = ["unfold_patches", "bcos_unit", "bcos_conv2d_reference", "bcos_linear_reference",
           "uncentred_batch_norm_reference", "uncentred_layer_norm_reference", "bcos_attention_reference",
           "reference_forward", "class_gate_reference", "gate_sparsity_reference", "gate_renormalise_reference",
           "lwta_reference", "lwta_kl_reference", "dau_unit", "dau_conv2d_reference", "dau_linear_reference"]

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


def lwta_reference(h: Tensor, competitors: int, dim: int = 1, noise: Tensor | None = None) -> Tensor:
    """LWTA by explicit loops: in every block of ``competitors`` consecutive units along ``dim``
    the unit with the largest h_u + g_u (``noise`` g, or none) keeps h_u, the others output 0."""
    d = dim % h.dim()
    hm = h.movedim(d, -1)
    g = torch.zeros_like(hm) if noise is None else noise.movedim(d, -1)
    out = torch.zeros(hm.shape, dtype=h.dtype)  # contiguous, so that a flat view writes into it
    flat_h, flat_g, flat_out = hm.reshape(-1, hm.shape[-1]), g.reshape(-1, hm.shape[-1]), out.view(-1, hm.shape[-1])
    for row in range(flat_h.shape[0]):
        for start in range(0, flat_h.shape[1], competitors):
            best, winner = -math.inf, start
            for u in range(start, start + competitors):
                score = float(flat_h[row, u] + flat_g[row, u])
                if score > best:  # the first of equal scores wins, as torch.argmax
                    best, winner = score, u
            flat_out[row, winner] = flat_h[row, winner]
    return out.movedim(-1, d)


def lwta_kl_reference(h: Tensor, competitors: int, dim: int = 1) -> Tensor:
    """Mean over blocks of Σ_u π_u log(π_u / (1/U)), with π = exp(h) / Σ exp(h) per block."""
    hm = h.movedim(dim % h.dim(), -1).reshape(-1, h.shape[dim])
    total, count = 0.0, 0
    for row in hm:
        for start in range(0, len(row), competitors):
            e = [math.exp(float(v)) for v in row[start:start + competitors]]
            pis = [v / sum(e) for v in e]
            total += sum(p * math.log(p * competitors) for p in pis if p > 0)
            count += 1
    return torch.tensor(total / count, dtype=torch.float64)
def dau_unit(x: Tensor, a_weight: Tensor, b_weight: Tensor, bias: Tensor, squash: str = "squash",
             norm_eps: float = DAU_NORM_EPS, detach_weights: bool = False) -> Tensor:
    """DAUs on flat inputs x (..., d): A (r, d), B (O, d, r), b (O, d) → outputs (..., O).

    For every input and unit, w = B_o (A x) + b_o is built as a d-vector, then
    g(w) = ‖w‖²/(1 + ‖w‖²) · w/‖w‖ ("squash") or w/‖w‖ ("l2"), with ‖w‖ = sqrt(Σ w² + ε) in
    the denominator, and the output is g(w)ᵀx.  ``detach_weights``: g(w) as a constant
    (explanation mode), so the gradient with respect to x is g(w) itself.
    """
    u = x @ a_weight.T                                                    # (..., r)
    w = torch.einsum("...r,odr->...od", u, b_weight) + bias               # (..., O, d)
    sq = (w * w).sum(-1, keepdim=True)
    w_hat = w / (sq + norm_eps).sqrt()
    g = sq / (1 + sq) * w_hat if squash == "squash" else w_hat
    if detach_weights:
        g = g.detach()
    return (g * x.unsqueeze(-2)).sum(-1)


def dau_conv2d_reference(x: Tensor, a_weight: Tensor, b_weight: Tensor, bias: Tensor, stride: int = 1,
                         padding: int = 0, squash: str = "squash", norm_eps: float = DAU_NORM_EPS,
                         detach_weights: bool = False) -> Tensor:
    """The convolutional DAU, patch by patch, in float64 (weights as in ``DynamicAlignmentConv2d``)."""
    x = x.double()
    n = x.shape[0]
    r, c, kh, kw = a_weight.shape
    out = b_weight.shape[0]
    patches = unfold_patches(x, (kh, kw), stride, padding)                 # (N, C, kh, kw, H', W')
    out_h, out_w = patches.shape[-2:]
    flat = patches.permute(0, 4, 5, 1, 2, 3).reshape(n, out_h, out_w, c * kh * kw)
    a = a_weight.double().reshape(r, -1)
    b = b_weight.double().reshape(out, r, -1).transpose(1, 2)              # (O, d, r)
    y = dau_unit(flat, a, b, bias.double().reshape(out, -1), squash, norm_eps, detach_weights)
    return y.permute(0, 3, 1, 2)


def dau_linear_reference(x: Tensor, a_weight: Tensor, b_weight: Tensor, bias: Tensor, squash: str = "squash",
                         norm_eps: float = DAU_NORM_EPS, detach_weights: bool = False) -> Tensor:
    """The linear DAU on the last dimension in float64 (weights of its inner 1×1 unit)."""
    r, out = a_weight.shape[0], b_weight.shape[0]
    return dau_unit(x.double(), a_weight.double().reshape(r, -1), b_weight.double().reshape(out, r, -1).transpose(1, 2),
                    bias.double().reshape(out, -1), squash, norm_eps, detach_weights)


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
    if isinstance(module, LWTA):
        if module.training or module.test_mode != "deterministic":
            raise ValueError("the LWTA reference covers the deterministic winner "
                             "(eval mode, test_mode='deterministic')")
        if module.competitors == 1:
            return x.clamp_min(0) if module.fallback == "relu" else 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        return lwta_reference(x, module.competitors, module.dim)
    if isinstance(module, DynamicAlignmentConv2d):
        return dau_conv2d_reference(x, module.a_weight, module.b_weight, module.bias, module.stride, module.padding,
                                    module.squash, detach_weights=module.explanation_mode)
    if isinstance(module, DynamicAlignmentLinear):
        u = module.unit
        return dau_linear_reference(x, u.a_weight, u.b_weight, u.bias, module.squash,
                                    detach_weights=module.explanation_mode)
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
