"""B-cos multi-head self-attention (B-cos v2, Böhle et al., TPAMI 2024, §4: B-cos ViTs).

For tokens X (T×D) and one head h with projections Q = B-cos_q(X), K = B-cos_k(X),
V = B-cos_v(X) (B-cos linear units, no biases):

    A_h(X) = softmax(Q_h K_hᵀ / √d_h)         (T×T, rows sum to 1)
    out    = B-cos_o([A_1 V_1, …, A_H V_H])

A_h(X) V_h is linear in V for a fixed A, so attention is *dynamic linear* once the
attention pattern counts as a data-dependent weight: in explanation mode Q and K are
detached, A(X) is a constant, and the only path from X to the output runs through the
(dynamic-linear) value and output projections.  Then ``out = W(X) X`` exactly.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .bcos import BcosLinear, compute_dtype
from .explanation_mode import ExplainableModule

__all__ = ["BcosAttention", "attention_weights"]


def attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """softmax(q kᵀ / √d) over the keys, computed in at least float32; (..., T_q, T_k)."""
    dt = compute_dtype(q.dtype)
    dots = torch.matmul(q.to(dt), k.to(dt).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return dots.softmax(-1)


class BcosAttention(ExplainableModule):
    """Multi-head self-attention on (N, T, D) tokens with B-cos q/k/v/output projections.

    ``linear`` builds the projections (``linear(in, out)``); by default B-cos linear
    layers with exponent ``b``.  In explanation mode the attention pattern is a constant.
    """

    def __init__(self, dim: int, heads: int = 4, b: float = 2.0,
                 linear: Callable[[int, int], nn.Module] | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads = dim, heads
        linear = linear or (lambda i, o: BcosLinear(i, o, b=b))
        self.qkv = linear(dim, 3 * dim)
        self.proj = linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"BcosAttention expects (N, tokens, {self.dim}) input, got {tuple(x.shape)}")
        n, t, d = x.shape
        # (N, T, 3, H, d_h) → three tensors (N, H, T, d_h)
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.explanation_mode:  # the attention pattern is a dynamic weight: constant for the explanation
            q, k = q.detach(), k.detach()
        attn = attention_weights(q, k).to(v.dtype)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"
