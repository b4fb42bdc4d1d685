"""The conventional baselines' builders: the shared architectures (:mod:`bcos_lib.models`) with
ordinary convolutions, batch norm and ReLU, trained with cross-entropy."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ...core.data import FMNIST_MEAN, FMNIST_STD
from ...layers.encoding import Normalize
from ...models.cnn import DEFAULT_CHANNELS, DEFAULT_STRIDES, ConvNet
from ...models.resnet import DEFAULT_BLOCKS, DEFAULT_WIDTHS, ResNet
from ...models.resnet import DEFAULT_STRIDES as RESNET_STRIDES
from ...core.registry import register_model

__all__ = ["std_cnn", "std_resnet"]


@register_model
def std_cnn(num_classes: int = 10, image_channels: int = 1, channels: Sequence[int] = DEFAULT_CHANNELS,
            strides: Sequence[int] = DEFAULT_STRIDES, mean: float = FMNIST_MEAN, std: float = FMNIST_STD) -> ConvNet:
    """The conventional baseline of the same shape: conv (no bias) + BN + ReLU, a biased
    1×1 classifier before pooling, cross-entropy loss."""

    def conv(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=False, **kw)

    def classifier(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=True, **kw)

    return ConvNet(image_channels=image_channels, num_classes=num_classes, channels=channels, strides=strides,
                   conv=conv, classifier=classifier, norm=nn.BatchNorm2d, act=lambda: nn.ReLU(inplace=False),
                   stem=Normalize([mean] * image_channels, [std] * image_channels), logit=None,
                   encoding="none", default_loss="ce")


@register_model
def std_resnet(num_classes: int = 10, image_channels: int = 1, widths: Sequence[int] = DEFAULT_WIDTHS,
               blocks: Sequence[int] = DEFAULT_BLOCKS, strides: Sequence[int] = RESNET_STRIDES,
               stem_pool: bool = False, mean: float = FMNIST_MEAN, std: float = FMNIST_STD) -> ResNet:
    """The conventional twin: conv (no bias) + BN + ReLU, max-pool stem (if ``stem_pool``),
    a biased 1×1 classifier before pooling, cross-entropy loss."""

    def conv(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=False, **kw)

    def classifier(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=True, **kw)

    return ResNet(image_channels=image_channels, num_classes=num_classes, widths=widths, blocks=blocks,
                  strides=strides, conv=conv, classifier=classifier, norm=nn.BatchNorm2d,
                  act=lambda: nn.ReLU(inplace=False),
                  stem_pool=(lambda: nn.MaxPool2d(3, stride=2, padding=1)) if stem_pool else None,
                  input_norm=Normalize([mean] * image_channels, [std] * image_channels), logit=None,
                  encoding="none", default_loss="ce")
