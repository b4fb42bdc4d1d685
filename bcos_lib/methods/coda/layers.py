"""Dynamic Alignment Units (Böhle, Fritz, Schiele; CoDA Nets, CVPR 2021, §3.1–3.2, eqs. 2–4).

A DAU computes its weight vector from its own input x (one k×k×C_in patch for the
convolutional unit) with a low-rank affine map, squashes it and takes the dot product:

    w(x) = B·(A x) + b,          A: d → r (no bias),  B: r → d,  b ∈ R^d,  d = C_in·k²
    a(x) = g(w(x))ᵀ x,           g(w) = ‖w‖² / (1 + ‖w‖²) · ŵ     ("squash", eq. 3)
                                 g(w) = ŵ                          ("l2", the normalising alternative)

Because ‖g(w)‖ < 1 (or = 1), |a(x)| ≤ ‖x‖, with equality only when w(x) points along x:
a unit can output much only for inputs that it *aligns* its weights with (CoDA §3.2).
Each of the ``out_channels`` units has its own B and b; A is shared by the layer's units
(the public code's convolution to rank r followed by a 1×1 convolution).

**Fast path.**  w(x) is never materialised per position.  With ũ = [A x; 1] ∈ R^(r+1) and
B̃_o = [B_o, b_o] ∈ R^(d×(r+1)) for unit o,

    w_o(x)ᵀ x = ũᵀ (B̃_oᵀ x)     — B̃ᵀx for every unit and position is ONE convolution
                                    with O·(r+1) filters;
    ‖w_o(x)‖² = ũᵀ (B̃_oᵀ B̃_o) ũ  — the (r+1)×(r+1) Gram matrix depends on the parameters only
                                    (contracted with the products ũ_i ũ_j, i ≤ j, in one matrix product).

So the output is a(x) = s·w(x)ᵀx with s = ‖w‖²/(1+‖w‖²)/‖w‖ ("squash") or 1/‖w‖ ("l2").

**Explanation mode** (CoDA §3.3): w(x) and its norm are constants, i.e. ũ and s are
detached; a(x) = s·w(x)ᵀx is then linear in x, so a network of DAUs (with sum pooling and
the fixed logit layer) is exactly ``y = W(x) x``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.explanation_mode import ExplainableModule

__all__ = ["DynamicAlignmentConv2d", "DynamicAlignmentLinear", "SQUASHES", "NORM_EPS", "alignment_scale"]

#: the two weight normalisations g(w) of CoDA §3.2, by name
SQUASHES = ("squash", "l2")
NORM_EPS = 1e-8  # inside the square root of ‖w‖: ‖w‖ = sqrt(‖w‖² + ε), so the gradient is finite at w = 0


def alignment_scale(sq_norm: Tensor, squash: str) -> Tensor:
    """s with g(w) = s·w, from ‖w‖²: ``‖w‖²/(1 + ‖w‖²) / ‖w‖`` for "squash", ``1/‖w‖`` for "l2"
    (‖w‖ in the denominator as sqrt(‖w‖² + ε))."""
    inv_norm = (sq_norm + NORM_EPS).rsqrt()
    return sq_norm / (1 + sq_norm) * inv_norm if squash == "squash" else inv_norm


def _check(in_channels: int, out_channels: int, rank: int, squash: str) -> None:
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"DAU {name} must be an integer ≥ 1 (got {v!r})")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"DAU rank must be an integer ≥ 1 (got {rank!r}): w(x) = B·(A x) + b with A of rank r")
    if squash not in SQUASHES:
        raise ValueError(f"DAU squash must be one of {SQUASHES} (got {squash!r})")


class DynamicAlignmentConv2d(ExplainableModule):
    """A convolutional DAU layer: ``out_channels`` units, each ``a_o(x) = g(w_o(x))ᵀx`` on every k×k patch.

    Parameters: ``a_weight`` (r, C_in, k, k) — A, shared; ``b_weight`` (O, r, C_in, k, k) — B_o as
    r patch-shaped columns; ``bias`` (O, C_in, k, k) — b_o.  ``padding`` defaults to k // 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, rank: int = 8, squash: str = "squash"):
        super().__init__()
        _check(in_channels, out_channels, rank, squash)
        if not isinstance(kernel_size, int) or kernel_size < 1 or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"DAU kernel_size and stride must be integers ≥ 1 (got {kernel_size!r}, {stride!r})")
        self.in_channels, self.out_channels, self.rank, self.squash = in_channels, out_channels, rank, squash
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else int(padding)
        if self.padding < 0:
            raise ValueError(f"DAU padding must be ≥ 0 (got {padding})")
        d = in_channels * kernel_size ** 2
        self.a_weight = nn.Parameter(torch.empty(rank, in_channels, kernel_size, kernel_size))
        self.b_weight = nn.Parameter(torch.empty(out_channels, rank, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        # u = A x has entries of the size of a patch's values (fan-in d); B's columns are scaled so that
        # ‖B u‖ ≈ ‖u‖ ≈ 1 for inputs of unit-sized values, and b adds a random direction of norm ≈ 1:
        # ‖w‖ ≈ 1 at initialisation, where the squash ‖w‖²/(1+‖w‖²) is neither saturated nor vanishing
        nn.init.normal_(self.a_weight, std=1 / math.sqrt(d))
        nn.init.normal_(self.b_weight, std=1 / math.sqrt(rank * d))
        nn.init.normal_(self.bias, std=1 / math.sqrt(d))

    def _sq_norm(self, stacked: Tensor, u1: Tensor) -> Tensor:
        """‖w_o(x)‖² = ũᵀ G_o ũ at every position, (N, O, H', W'), with G_o = B̃_oᵀB̃_o.  G_o is
        symmetric, so the form is Σ_{i≤j} c_ij G_o,ij ũ_i ũ_j (c = 1 on the diagonal, 2 off it): the
        (r+1)(r+2)/2 products ũ_i ũ_j are formed once per position and contracted with every unit's
        packed Gram matrix in one matrix product, instead of an (N, O·(r+1), H', W') intermediate
        (the pipeline's CoDA net on one CPU thread: a training step in batches of 32 155 → 134 ms,
        1 000 test images in batches of 64 1.85 → 1.10 s; equal to float rounding)."""
        r1 = self.rank + 1
        gram = stacked.flatten(1).view(self.out_channels, r1, -1)
        gram = gram @ gram.transpose(1, 2)                                                # (O, r+1, r+1)
        i, j = torch.triu_indices(r1, r1, device=u1.device)
        packed = gram[:, i, j] * torch.where(i == j, 1.0, 2.0).to(gram.dtype)            # (O, P)
        n, _, ho, wo = u1.shape
        pairs = (u1[:, i] * u1[:, j]).flatten(2)                                          # (N, P, H'·W')
        return (packed @ pairs).view(n, self.out_channels, ho, wo).clamp_min(0)

    def _stacked(self) -> Tensor:
        """B̃ = [B_o, b_o] per unit as conv filters: (O·(r+1), C_in, k, k), unit o's r+1 filters consecutive."""
        return torch.cat([self.b_weight, self.bias.unsqueeze(1)], 1).flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        if self.kernel_size > min(x.shape[-2:]):
            raise ValueError(f"{type(self).__name__}: kernel {self.kernel_size}×{self.kernel_size} is larger than its "
                             f"{x.shape[-2]}×{x.shape[-1]} input (its patches would be mostly zero padding); use a "
                             "smaller kernel or fewer stride-2 layers before it")
        stacked = self._stacked().to(x.dtype)
        u = F.conv2d(x, self.a_weight.to(x.dtype), None, self.stride, self.padding)        # A x: (N, r, H', W')
        u1 = torch.cat([u, torch.ones_like(u[:, :1])], 1)                                 # ũ = [A x; 1]
        proj = F.conv2d(x, stacked, None, self.stride, self.padding)                      # B̃ᵀx: (N, O·(r+1), H', W')
        n, _, ho, wo = proj.shape
        proj = proj.view(n, self.out_channels, self.rank + 1, ho, wo)
        sq_norm = self._sq_norm(stacked, u1)                                              # ‖w_o(x)‖²
        scale = alignment_scale(sq_norm, self.squash)
        if self.explanation_mode:  # w(x) and its norm are constants: a(x) = s·w(x)ᵀx is linear in x
            u1, scale = u1.detach(), scale.detach()
        lin = (proj * u1.unsqueeze(1)).sum(2)                                            # w_o(x)ᵀx
        return scale * lin

    def dynamic_weights(self, x: Tensor) -> Tensor:
        """w(x) materialised, (N, O, C_in, k, k, H', W') — slow; for figures and the tutorial."""
        u = F.conv2d(x, self.a_weight.to(x.dtype), None, self.stride, self.padding)
        return (torch.einsum("nrhw,orcij->nocijhw", u, self.b_weight.to(x.dtype))
                + self.bias.to(x.dtype)[None, :, :, :, :, None, None])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, rank={self.rank}, squash={self.squash}")


class DynamicAlignmentLinear(ExplainableModule):
    """A linear DAU layer on the last dimension: ``a_o(x) = g(B_o A x + b_o)ᵀ x`` (a 1×1 DAU without positions)."""

    def __init__(self, in_features: int, out_features: int, rank: int = 8, squash: str = "squash"):
        super().__init__()
        _check(in_features, out_features, rank, squash)
        self.unit = DynamicAlignmentConv2d(in_features, out_features, kernel_size=1, rank=rank, squash=squash)
        self.in_features, self.out_features, self.rank, self.squash = in_features, out_features, rank, squash

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects (..., {self.in_features}) input, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        self.unit.explanation_mode = self.explanation_mode
        out = self.unit(x.reshape(-1, self.in_features, 1, 1))
        return out.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, squash={self.squash}"
