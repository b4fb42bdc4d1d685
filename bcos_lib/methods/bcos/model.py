"""The B-cos networks' builders (B-cos v1, CVPR 2022; v2, TPAMI 2024): the shared
architectures (:mod:`bcos_lib.models`) built from the B-cos layers of this package
(:mod:`.layers`: B-cos conv/linear, v1 Eq. 3; :mod:`.attention`; :mod:`.norms`).

Training is the shared loop with binary cross-entropy on one-hot targets (v1 §3.4; the models'
``default_loss``), so the method adds no training hooks."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ...layers.logit import LogitLayer, v1_logit_temperature, v2_logit_temperature
from ...models.cnn import DEFAULT_CHANNELS, DEFAULT_STRIDES, ConvNet
from ...models.resnet import DEFAULT_BLOCKS, DEFAULT_WIDTHS, ResNet
from ...models.resnet import DEFAULT_STRIDES as RESNET_STRIDES
from ...models.vit import VisionTransformer
from ...core.registry import register_model
from .layers import BcosAttention
from .layers import BcosConv2d, BcosLinear, v1_cifar_layer_scale
from .layers import UncentredBatchNorm2d, UncentredLayerNorm

__all__ = ["bcos_cnn", "bcos_resnet", "bcos_vit", "ENCODINGS"]

ENCODINGS = ("add_inverse", "none")


@register_model
def bcos_cnn(num_classes: int = 10, image_channels: int = 1, channels: Sequence[int] = DEFAULT_CHANNELS,
             strides: Sequence[int] = DEFAULT_STRIDES, b: float = 2.0, variant: str = "v2",
             max_out: int | None = None, logit_temperature: float | None = None,
             logit_bias: float | None = None, layer_scale: float | str | None = None,
             encoding: str = "add_inverse") -> ConvNet:
    """B-cos CNN.  v2: B-cos convs + uncentred BN, no ReLU, classifier before pooling.
    v1: B-cos convs with MaxOut and a fixed layer scale, no normalisation.

    v1 defaults are the v1 CIFAR-10 configuration: ``max_out`` 2, ``layer_scale="cifar"``
    (every layer divided by 10^(−2+1.5·(2.5−B))) and ``logit_temperature`` from the per-B
    table (:func:`bcos_lib.layers.logit.v1_logit_temperature`).  The table and the scale were
    tuned together: with the v1 *module* default scale k·√C_in/100 (``layer_scale="auto"``)
    the table's T gives initial logits of ~1e9 at B = 1 and ~1e-7 at B = 2.5 for this
    network, so pass your own ``logit_temperature`` with ``"auto"`` or a numeric scale.
    v2 defaults: ``max_out`` 1, no layer scale, T = d^(−(B−1)/2) with d the classifier's input
    channels (:func:`bcos_lib.layers.logit.v2_logit_temperature`: the same logit scale at
    initialisation for every B).

    ``encoding``: ``"add_inverse"`` (the papers: the input is ``[x, 1 − x]``, so dark pixels
    can contribute as much as bright ones) or ``"none"`` (the input is ``x`` alone: a black
    pixel has no norm and contributes exactly 0).  On Fashion-MNIST, whose background is
    black, ``"none"`` keeps the background out of every explanation (README, localisation)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS} (got {encoding!r})")
    if variant not in ("v1", "v2"):
        raise ValueError(f"variant must be 'v1' or 'v2' (got {variant!r})")
    v1 = variant == "v1"
    m = (2 if v1 else 1) if max_out is None else max_out
    if not v1 and layer_scale is not None:
        raise ValueError("layer_scale is a v1 setting (v2 has no layer scale); use variant='v1'")
    scale: float | str | None = None
    if v1:
        scale = v1_cifar_layer_scale(b) if layer_scale in (None, "cifar") else layer_scale
        if isinstance(scale, str) and scale != "auto":
            raise ValueError(f"layer_scale must be 'cifar', 'auto' or a number (got {layer_scale!r})")
    if logit_temperature is None:
        logit_temperature = v1_logit_temperature(b) if v1 else v2_logit_temperature(b, channels[-1])

    def conv(ci: int, co: int, **kw) -> BcosConv2d:
        return BcosConv2d(ci, co, b=b, max_out=m, scale=scale, **kw)

    def classifier(ci: int, co: int, **kw) -> BcosConv2d:
        return BcosConv2d(ci, co, b=b, max_out=1, scale=scale, **kw)

    return ConvNet(image_channels=image_channels, num_classes=num_classes, channels=channels, strides=strides,
                   conv=conv, classifier=classifier, norm=None if v1 else UncentredBatchNorm2d, act=None,
                   stem=None, logit=LogitLayer(num_classes, logit_temperature, logit_bias),
                   encoding=encoding, default_loss="bce", dynamic_linear=True)


@register_model
def bcos_resnet(num_classes: int = 10, image_channels: int = 1, widths: Sequence[int] = DEFAULT_WIDTHS,
                blocks: Sequence[int] = DEFAULT_BLOCKS, strides: Sequence[int] = RESNET_STRIDES, b: float = 2.0,
                stem_pool: bool = False, logit_temperature: float = 1.0,
                logit_bias: float | None = None) -> ResNet:
    """B-cos v2 ResNet: B-cos convs (exponent ``b``) + uncentred BN, no ReLU, no biases.
    ``stem_pool`` adds a 3×3/2 avg-pool after the stem (v2's replacement of the max-pool;
    off for 28×28 images)."""

    def conv(ci: int, co: int, **kw) -> BcosConv2d:
        return BcosConv2d(ci, co, b=b, **kw)

    return ResNet(image_channels=image_channels, num_classes=num_classes, widths=widths, blocks=blocks,
                  strides=strides, conv=conv, classifier=conv, norm=UncentredBatchNorm2d, act=None,
                  stem_pool=(lambda: nn.AvgPool2d(3, stride=2, padding=1)) if stem_pool else None,
                  input_norm=None, logit=LogitLayer(num_classes, logit_temperature, logit_bias),
                  encoding="add_inverse", default_loss="bce", dynamic_linear=True)


@register_model
def bcos_vit(num_classes: int = 10, image_channels: int = 1, image_size: int = 28, patch_size: int = 4,
             dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, b: float = 2.0,
             pos_resize: str = "tile", logit_temperature: float = 1.0,
             logit_bias: float | None = None) -> VisionTransformer:
    """A tiny B-cos ViT: 28×28 images, 4×4 patches → 7×7 = 49 tokens, dim 64, 4 blocks of
    4 heads, MLP ratio 2, no class token (mean over tokens); ~0.14 M parameters."""

    def patch_embed(ci: int, co: int, **kw) -> BcosConv2d:
        return BcosConv2d(ci, co, b=b, **kw)

    def linear(i: int, o: int) -> BcosLinear:
        return BcosLinear(i, o, b=b)

    def attention(d: int, h: int) -> BcosAttention:
        return BcosAttention(d, h, linear=linear)

    return VisionTransformer(image_channels=image_channels, num_classes=num_classes, image_size=image_size,
                             patch_size=patch_size, dim=dim, depth=depth, heads=heads,
                             mlp_dim=int(round(mlp_ratio * dim)), patch_embed=patch_embed, linear=linear,
                             norm=UncentredLayerNorm, attention=attention, act=None, pos_resize=pos_resize,
                             logit=LogitLayer(num_classes, logit_temperature, logit_bias), encoding="add_inverse",
                             default_loss="bce", dynamic_linear=True)
