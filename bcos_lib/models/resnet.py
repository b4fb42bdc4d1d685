"""Small ResNets with basic blocks (He et al. 2016), as a B-cos network and its conventional twin.

``bcos_resnet`` follows B-cos v2 (TPAMI 2024, §4.1): B-cos convolutions without biases,
uncentred batch norm, no ReLU, avg-pool instead of max-pool in the (optional) stem pool,
and the classifier as a 1×1 B-cos convolution *before* global average pooling, then the
fixed logit layer.  The residual addition is linear, so every block — and the whole
network — stays dynamic linear: ``y(x) = W(x) x`` in explanation mode.

``std_resnet`` is the conventional twin: conv (no bias) + BN + ReLU, ReLU after the
addition, a biased 1×1 classifier before pooling, cross-entropy.

One builder, ``ResNet``, takes its layer families as arguments (conv, norm, act, pool),
as ``ConvNet`` does.  Defaults fit 28×28 grey images: a 3×3 stem and three stages of
widths 16/32/64 with strides 1/2/2 and two blocks each (a ResNet-14), ~0.17 M parameters;
fully convolutional, so it takes any image size (e.g. 84×84 grids).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from torch import Tensor, nn

from .base import ImageClassifier, optional_layer

__all__ = ["BasicBlock", "ResNet", "DEFAULT_WIDTHS", "DEFAULT_BLOCKS", "DEFAULT_STRIDES"]

ConvFactory = Callable[..., nn.Module]


class BasicBlock(nn.Module):
    """``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``; the shortcut is a strided 1×1
    conv + norm when the shape changes, the identity otherwise."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv: ConvFactory,
                 norm: Callable[[int], nn.Module] | None, act: Callable[[], nn.Module] | None):
        super().__init__()
        self.conv1 = conv(c_in, c_out, kernel_size=3, stride=stride, padding=1)
        self.norm1 = optional_layer(norm, c_out)
        self.act1 = optional_layer(act)
        self.conv2 = conv(c_out, c_out, kernel_size=3, stride=1, padding=1)
        self.norm2 = optional_layer(norm, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, kernel_size=1, stride=stride, padding=0),
                                          optional_layer(norm, c_out))
        self.act2 = optional_layer(act)

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))  # the residual addition is linear


class ResNet(ImageClassifier):
    """stem conv-norm-act [→ pool] → stages of basic blocks → 1×1 classifier conv → global
    average pool → logit layer.  Module names: ``features.stem``, ``features.stage1`` …,
    ``features.stage2.0`` (a block), ``classifier``, ``logit``."""

    def __init__(self, *, image_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int],
                 strides: Sequence[int], conv: ConvFactory, classifier: ConvFactory,
                 norm: Callable[[int], nn.Module] | None, act: Callable[[], nn.Module] | None,
                 stem_pool: Callable[[], nn.Module] | None, input_norm: nn.Module | None, logit: nn.Module | None,
                 encoding: str, default_loss: str, dynamic_linear: bool = False):
        super().__init__(image_channels, num_classes)
        if not (len(widths) == len(blocks) == len(strides)) or not widths:
            raise ValueError(f"widths {tuple(widths)}, blocks {tuple(blocks)} and strides {tuple(strides)} must be "
                             "non-empty and of the same length (one entry per stage)")
        if any(n < 1 for n in blocks):
            raise ValueError(f"every stage needs ≥ 1 block (got {tuple(blocks)})")
        self.encoding, self.default_loss, self.dynamic_linear = encoding, default_loss, dynamic_linear
        self.input_norm = input_norm or nn.Identity()
        stem = nn.Sequential(OrderedDict(conv=conv(self.input_channels, widths[0], kernel_size=3, stride=1, padding=1),
                                         norm=optional_layer(norm, widths[0]), act=optional_layer(act), pool=optional_layer(stem_pool)))
        stages: list[tuple[str, nn.Module]] = [("stem", stem)]
        c_in = widths[0]
        for i, (c_out, n_blocks, stride) in enumerate(zip(widths, blocks, strides), start=1):
            stage = [BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1, conv, norm, act)
                     for j in range(n_blocks)]
            stages.append((f"stage{i}", nn.Sequential(*stage)))
            c_in = c_out
        self.features = nn.Sequential(OrderedDict(stages))
        self.classifier = classifier(c_in, num_classes, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logit = logit or nn.Identity()

    def class_maps(self, x: Tensor) -> Tensor:
        """Per-position class evidence before pooling, (N, K, H', W')."""
        self.check_input(x)
        return self.classifier(self.features(self.input_norm(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.logit(self.pool(self.class_maps(x)).flatten(1))


DEFAULT_WIDTHS = (16, 32, 64)
DEFAULT_BLOCKS = (2, 2, 2)
DEFAULT_STRIDES = (1, 2, 2)
