"""A tiny B-cos Vision Transformer (B-cos v2, Böhle et al., TPAMI 2024, §4: B-cos ViTs).

``bcos_vit``: patch embedding as a B-cos convolution (kernel = stride = patch size), a
learned position embedding, pre-norm transformer blocks of B-cos attention
(:class:`~bcos_lib.layers.BcosAttention`) and a B-cos MLP without activation (the B-cos
scaling is the non-linearity), uncentred layer norms, no biases anywhere; then a B-cos
linear classifier applied to every token *before* the mean over tokens (the token
analogue of the 1×1 classifier before global pooling) and the fixed logit layer.

Position embedding and exactness.  The v2 ViTs add a fixed sin-cos embedding E_p to
the patch tokens: a constant term, i.e. a bias, which the contribution map ``W(x) ⊙ x``
does not cover (the identity then reads Σ contributions = logit − b − (the share of
E)).  Here the embedding is instead added *in proportion to the patch's input mass*:

    token_p = PatchEmbed(x)_p + E_p · m_p(x),   m_p(x) = Σ_{pixels of p, channels} x / (C·p²)

For ``[x, 1 − x]``-encoded images every pixel's channels sum to C, so m_p(x) = 1 and the
forward pass is the usual "add E_p"; but m_p is a *linear* function of the input, so
``E_p · m_p(x)`` is part of ``W(x) x`` and the explanation identity Σ contributions =
logit − b holds exactly.  The position embedding's share of the evidence is spread
evenly over the pixels (and both encoding channels) of its patch.  This relies on the
``[x, 1 − x]`` encoding, which the model checks on every input.

Other image sizes: the learned 7×7 embedding (for 28×28 images, patch 4) is tiled
(``pos_resize="tile"``, the default: an 84×84 3×3 grid of 28×28 images gives every cell
the embedding of a single image; sizes must be multiples of the training size) or
interpolated bilinearly (``pos_resize="interpolate"``, any size).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ImageClassifier, optional_layer

__all__ = ["PositionEmbedding", "TransformerBlock", "VisionTransformer"]


class PositionEmbedding(nn.Module):
    """A learned (D, g_h, g_w) embedding added to (N, D, h, w) patch tokens as ``E · m(x)``,
    with m(x) the mean of the input over each patch's pixels and image channels (1 for
    ``[x, 1 − x]`` inputs, and linear in x)."""

    def __init__(self, dim: int, grid: tuple[int, int], patch_size: int, image_channels: int, resize: str = "tile"):
        super().__init__()
        if resize not in ("tile", "interpolate"):
            raise ValueError(f"pos_resize must be 'tile' or 'interpolate' (got {resize!r})")
        self.grid, self.patch_size, self.image_channels, self.resize = grid, patch_size, image_channels, resize
        self.weight = nn.Parameter(torch.empty(1, dim, *grid))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def embedding(self, h: int, w: int) -> Tensor:
        """The (1, D, h, w) embedding for an h×w token grid."""
        gh, gw = self.grid
        if (h, w) == (gh, gw):
            return self.weight
        if self.resize == "tile":
            if h % gh or w % gw:
                raise ValueError(f"a {h}×{w} token grid is not a multiple of the trained {gh}×{gw} grid: use image "
                                 f"sizes that are multiples of the training size, or pos_resize='interpolate'")
            return self.weight.repeat(1, 1, h // gh, w // gw)
        return F.interpolate(self.weight, size=(h, w), mode="bilinear", align_corners=False)

    def mass(self, x: Tensor) -> Tensor:
        """m_p(x): (N, 1, h, w), the mean over each patch of the channel sums, divided by C."""
        p = self.patch_size
        return F.avg_pool2d(x.sum(1, keepdim=True), p, stride=p) / self.image_channels

    def forward(self, tokens: Tensor, x: Tensor) -> Tensor:
        h, w = tokens.shape[-2:]
        return tokens + self.embedding(h, w).to(tokens.dtype) * self.mass(x)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, patch_size={self.patch_size}, resize={self.resize!r}"


class TransformerBlock(nn.Module):
    """Pre-norm block on (N, T, D): ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, linear: Callable[[int, int], nn.Module],
                 norm: Callable[[int], nn.Module], attention: Callable[[int, int], nn.Module],
                 act: Callable[[], nn.Module] | None):
        super().__init__()
        self.norm1 = norm(dim)
        self.attn = attention(dim, heads)
        self.norm2 = norm(dim)
        self.mlp = nn.Sequential(OrderedDict(fc1=linear(dim, mlp_dim), act=optional_layer(act), fc2=linear(mlp_dim, dim)))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))  # residual additions are linear
        return x + self.mlp(self.norm2(x))


class VisionTransformer(ImageClassifier):
    """patch embedding (+ position) → transformer blocks → norm → per-token classifier →
    mean over tokens → logit layer.  Module names: ``patch_embed``, ``pos_embed``,
    ``blocks.0`` … (outputs (N, tokens, D)), ``norm``, ``token_map`` (an identity that sees the
    normalised last tokens as a spatial (N, D, h, w) map: the ViT's counterpart of a CNN's last
    feature map, where Grad-CAM reads), ``classifier``, ``logit``."""

    def __init__(self, *, image_channels: int, num_classes: int, image_size: int, patch_size: int, dim: int,
                 depth: int, heads: int, mlp_dim: int, patch_embed: Callable[..., nn.Module],
                 linear: Callable[[int, int], nn.Module], norm: Callable[[int], nn.Module],
                 attention: Callable[[int, int], nn.Module], act: Callable[[], nn.Module] | None, pos_resize: str,
                 logit: nn.Module | None, encoding: str, default_loss: str, dynamic_linear: bool = False):
        super().__init__(image_channels, num_classes)
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}")
        self.encoding, self.default_loss, self.dynamic_linear = encoding, default_loss, dynamic_linear
        self.patch_size = patch_size
        grid = (image_size // patch_size,) * 2
        self.patch_embed = patch_embed(self.input_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = PositionEmbedding(dim, grid, patch_size, image_channels, pos_resize)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_dim, linear, norm, attention, act)
                                      for _ in range(depth)])
        self.norm = norm(dim)
        self.token_map = nn.Identity()
        self.classifier = linear(dim, num_classes)
        self.logit = logit or nn.Identity()

    def class_maps(self, x: Tensor) -> Tensor:
        """Per-token class evidence before averaging, (N, K, h, w)."""
        self.check_input(x)
        if x.shape[-2] < self.patch_size or x.shape[-1] < self.patch_size:
            raise ValueError(f"images must be at least {self.patch_size}×{self.patch_size} (got {tuple(x.shape)})")
        tokens = self.pos_embed(self.patch_embed(x), x)  # (N, D, h, w)
        n, _, h, w = tokens.shape
        tokens = self.norm(self.blocks(tokens.flatten(2).transpose(1, 2)))  # (N, h·w, D)
        tokens = self.token_map(tokens.transpose(1, 2).reshape(n, -1, h, w)).flatten(2).transpose(1, 2)
        return self.classifier(tokens).transpose(1, 2).reshape(n, -1, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.logit(self.class_maps(x).mean(dim=(2, 3)))
