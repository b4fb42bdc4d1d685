"""Layers of B-cosified networks (Arya, Rao, Böhle, Schiele; NeurIPS 2024, §3).

B-cosification turns the layers of a *pretrained* conventional network into B-cos layers
that start from the pretrained weights:

* a conv/linear unit computes ``(wᵀx + β) · |(wᵀx + β) / ‖x‖|^(B−1)`` with the pretrained,
  *unnormalised* w (§3.2: the weight norm is kept, so at B = 1 the unit is the original one);
  the bias β is removed (§3.2), or kept and faded out over fine-tuning (``bias_scale``, our
  option: at B = 1 with the biases kept the converted network is the original network);
* batch norm becomes *uncentred* batch norm, ``x · γ / √(σ² + ε)`` (B-cos v2 §4.1); the
  centring and β are folded into one per-channel term ``β − μγ/√(σ² + ε)``, the layer's bias,
  which goes with the other biases;
* layer norm keeps its centring (``x − mean(x)`` is linear in x) and its scale
  ``1/√(Var x + ε)`` becomes a constant in explanation mode;
* GELU is ``x · Φ(x)`` with the gate Φ(x) a constant in explanation mode (a ReLU stays a
  ReLU: ``x · 1[x > 0]`` is already dynamic linear);
* attention: softmax(q kᵀ/√d) is a constant in explanation mode (B-cos v2 §4: B-cos ViTs), the
  q, k, v and output projections are B-cos linear layers.

Every layer here is exactly its conventional counterpart when B = 1 and ``bias_scale`` = 1,
and exactly dynamic linear (``y = W(x) x`` in explanation mode) when ``bias_scale`` = 0.
``B`` (``layer.b``) and ``bias_scale`` may change during fine-tuning (a linear B schedule,
a fading bias: :func:`set_b`, :func:`set_bias_scale`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bcos.layers import NORM_EPS, BcosConv2d, BcosLinear, bcos_scale, compute_dtype
from ...layers.explanation_mode import ExplainableModule
from ..bcos.layers import UncentredBatchNorm2d

__all__ = ["BcosifiedConv2d", "BcosifiedLinear", "FoldedBatchNorm2d", "DetachedLayerNorm", "DynamicGELU",
           "BcosifiedAttention", "set_b", "set_bias_scale", "live_biases", "encoded_input_weight"]


class _FadingBias(nn.Module):
    """Mixin state: an optional bias β, used as ``bias_scale · β`` (1: as trained, 0: gone).

    ``bias_scale`` is a buffer, so a saved model remembers whether its biases are gone."""

    bias: nn.Parameter | None

    def _init_bias(self, channels: int, keep_bias: bool) -> None:
        self.bias = nn.Parameter(torch.zeros(channels)) if keep_bias else None
        self.register_buffer("bias_scale", torch.tensor(1.0 if keep_bias else 0.0))

    def _scaled_bias(self, dtype: torch.dtype) -> Tensor | None:
        if self.bias is None or float(self.bias_scale) == 0.0:
            return None
        return (self.bias * self.bias_scale).to(dtype)


class BcosifiedConv2d(_FadingBias, BcosConv2d):
    """A B-cos convolution with unnormalised (pretrained) weights and an optional fading bias.

    ``(wᵀx + s·β) · |(wᵀx + s·β)/‖x‖|^(B−1)`` with s = ``bias_scale``; without a bias it is
    :class:`~bcos_lib.layers.BcosConv2d` with ``normalize_weights=False`` (B-cosification §3.2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, b: float = 2.0, keep_bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, b=b,
                         normalize_weights=False)
        self._init_bias(out_channels, keep_bias)

    def _conv(self, x: Tensor, w: Tensor) -> Tensor:
        lin = super()._conv(x, w)
        bias = self._scaled_bias(lin.dtype)
        return lin if bias is None else lin + bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bias={self.bias is not None}"


class BcosifiedLinear(_FadingBias, BcosLinear):
    """A B-cos linear layer with unnormalised weights and an optional fading bias (last dimension)."""

    def __init__(self, in_features: int, out_features: int, b: float = 2.0, keep_bias: bool = False):
        super().__init__(in_features, out_features, b=b, normalize_weights=False)
        self._init_bias(out_features, keep_bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"BcosifiedLinear expects (..., {self.in_features}) input, got {tuple(x.shape)}")
        lin = F.linear(x, self.weight.to(x.dtype), self._scaled_bias(x.dtype))
        if self.b == 1:
            return lin
        xf = x.to(compute_dtype(x.dtype))
        norm = ((xf * xf).sum(-1, keepdim=True) + NORM_EPS).sqrt()  # ‖x‖, constant in explanation mode
        lin_c = lin.to(norm.dtype)
        return (lin_c * bcos_scale(lin_c, norm, self.b, self.explanation_mode)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, b={self.b}, bias={self.bias is not None}"


class FoldedBatchNorm2d(_FadingBias, UncentredBatchNorm2d):
    """Uncentred batch norm ``x·γ/√(σ² + ε)`` plus the folded term ``s·(β − μγ/√(σ² + ε))``.

    Made from a trained ``nn.BatchNorm2d`` by :meth:`from_batch_norm`: with s = 1 and the
    running statistics (eval mode) it is that layer exactly; with s = 0 it is B-cos v2's
    uncentred batch norm (its variance a constant in explanation mode).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, keep_bias: bool = False):
        super().__init__(num_features, eps, momentum)
        self._init_bias(num_features, keep_bias)

    @classmethod
    @torch.no_grad()
    def from_batch_norm(cls, bn: nn.BatchNorm2d, keep_bias: bool) -> "FoldedBatchNorm2d":
        if not bn.track_running_stats or bn.running_var is None:
            raise ValueError("batch norm without running statistics cannot be folded (track_running_stats=False)")
        new = cls(bn.num_features, bn.eps, bn.momentum if bn.momentum is not None else 0.1, keep_bias)
        gamma = bn.weight.detach() if bn.affine else torch.ones(bn.num_features)
        beta = bn.bias.detach() if bn.affine else torch.zeros(bn.num_features)
        new.weight.copy_(gamma)
        new.running_var.copy_(bn.running_var)
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
        if new.bias is not None:
            new.bias.copy_(beta - bn.running_mean * gamma / (bn.running_var + bn.eps).sqrt())
        return new

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        bias = self._scaled_bias(out.dtype)
        return out if bias is None else out + bias.view(1, -1, 1, 1)


class DetachedLayerNorm(_FadingBias, ExplainableModule):
    """Layer norm over the last dimension, ``(x − mean x)/√(Var x + ε) · γ + s·β``.

    The centring is linear in x and stays; the scale is a constant in explanation mode."""

    def __init__(self, num_features: int, eps: float = 1e-5, keep_bias: bool = False):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self._init_bias(num_features, keep_bias)

    @classmethod
    @torch.no_grad()
    def from_layer_norm(cls, ln: nn.LayerNorm, keep_bias: bool) -> "DetachedLayerNorm":
        if len(ln.normalized_shape) != 1:
            raise ValueError(f"only layer norms over the last dimension are supported (got {ln.normalized_shape})")
        new = cls(ln.normalized_shape[0], ln.eps, keep_bias)
        if ln.weight is not None:
            new.weight.copy_(ln.weight)
        if new.bias is not None and ln.bias is not None:
            new.bias.copy_(ln.bias)
        return new

    def forward(self, x: Tensor) -> Tensor:
        xc = x - x.mean(-1, keepdim=True)
        var = xc.to(compute_dtype(x.dtype)).pow(2).mean(-1, keepdim=True)
        if self.explanation_mode:
            var = var.detach()
        out = xc * (1.0 / (var + self.eps).sqrt()).to(x.dtype) * self.weight.to(x.dtype)
        bias = self._scaled_bias(out.dtype)
        return out if bias is None else out + bias


class DynamicGELU(ExplainableModule):
    """GELU written as ``x · Φ(x)``; the gate Φ(x) is a constant in explanation mode."""

    def forward(self, x: Tensor) -> Tensor:
        gate = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        return x * (gate.detach() if self.explanation_mode else gate)


class BcosifiedAttention(ExplainableModule):
    """Multi-head attention with B-cosified q/k/v/output projections (separate, as pretrained).

    ``forward(query, key, value)`` on (N, T, D) tokens returns ``(out, None)``, the call
    signature of ``nn.MultiheadAttention(batch_first=True)``, so it replaces that module in a
    network's own forward.  In explanation mode q and k are detached: the attention pattern
    is a constant and the output is linear in the values (B-cos v2 §4).
    """

    def __init__(self, dim: int, heads: int, b: float = 2.0, keep_bias: bool = False, out_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads = dim, heads
        self.q_proj, self.k_proj, self.v_proj = (BcosifiedLinear(dim, dim, b, keep_bias) for _ in range(3))
        self.out_proj = BcosifiedLinear(dim, out_dim or dim, b, keep_bias)

    @classmethod
    @torch.no_grad()
    def from_multihead_attention(cls, mha: nn.MultiheadAttention, b: float, keep_bias: bool) -> "BcosifiedAttention":
        if not mha.batch_first:
            raise ValueError("only batch_first nn.MultiheadAttention is supported (torchvision's ViT uses it)")
        if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
            raise ValueError("nn.MultiheadAttention with bias_k/bias_v, add_zero_attn or separate kdim/vdim "
                             "is not supported")
        new = cls(mha.embed_dim, mha.num_heads, b, keep_bias)
        d = mha.embed_dim
        for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
            proj.weight.copy_(mha.in_proj_weight[i * d:(i + 1) * d])
            if proj.bias is not None and mha.in_proj_bias is not None:
                proj.bias.copy_(mha.in_proj_bias[i * d:(i + 1) * d])
        new.out_proj.weight.copy_(mha.out_proj.weight)
        if new.out_proj.bias is not None and mha.out_proj.bias is not None:
            new.out_proj.bias.copy_(mha.out_proj.bias)
        return new

    def forward(self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False,
                **_ignored) -> tuple[Tensor, None]:
        n, tq, d = query.shape
        h = self.heads

        def split(t: Tensor) -> Tensor:  # (N, T, D) → (N, H, T, D/H)
            return t.view(n, t.shape[1], h, d // h).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        if self.explanation_mode:  # the attention pattern is a dynamic weight: constant for the explanation
            q, k = q.detach(), k.detach()
        dt = compute_dtype(q.dtype)
        attn = (torch.matmul(q.to(dt), k.to(dt).transpose(-1, -2)) / math.sqrt(d // h)).softmax(-1).to(v.dtype)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, tq, d)
        return self.out_proj(out), None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"


def encoded_input_weight(weight: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """The first layer's weights for ``[x, 1 − x]`` inputs, with the normalisation folded in.

    The pretrained layer sees ``(x − μ)/σ``.  B-cosification (§3.1) feeds ``[x, 1 − x]``,
    normalised with mean ``(μ, 1 − μ)`` and std ``(σ, σ)``, to the weights ``[W, −W]/2``: the
    same function.  Because ``x + (1 − x) = 1`` at every pixel, the means fold into the
    weights without a bias, ``x − μ = (1 − μ)·x − μ·(1 − x)``, so the layer becomes
    ``[(1 − μ)·W/σ, −μ·W/σ]`` — exactly the original, zero padding included (a padded
    pixel is (0, 0) here and 0 after normalisation there).  ``weight``: (C_out, C, k, k);
    ``mean``, ``std``: (C,).
    """
    mean = mean.to(weight.dtype).view(1, -1, 1, 1)
    std = std.to(weight.dtype).view(1, -1, 1, 1)
    return torch.cat([weight * (1 - mean) / std, -weight * mean / std], dim=1)


def _bcosified(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _FadingBias)]


def set_b(model: nn.Module, b: float) -> None:
    """Set the exponent B of every B-cosified conv/linear layer of ``model`` (a B schedule)."""
    b = float(b)
    if not math.isfinite(b) or b < 1:
        raise ValueError(f"B must be a real number ≥ 1 (got {b})")
    for m in _bcosified(model):
        if isinstance(m, (BcosConv2d, BcosLinear)):
            m.b = b


@torch.no_grad()
def set_bias_scale(model: nn.Module, scale: float) -> None:
    """Scale every kept bias of ``model`` by ``scale`` (1: as pretrained, 0: removed)."""
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"the bias scale must lie in [0, 1] (got {scale})")
    for m in _bcosified(model):
        m.bias_scale.fill_(scale)


def live_biases(model: nn.Module) -> list[str]:
    """Names of the layers whose bias still counts (then the explanation does not sum to the logit)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, _FadingBias) and m.bias is not None and float(m.bias_scale) != 0.0]
