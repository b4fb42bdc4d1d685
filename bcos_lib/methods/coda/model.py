"""CoDA Nets' model side (Böhle, Fritz, Schiele; CVPR 2021): the CoDA network (DAU layers only,
sum pooling, ``logit = z / T + b``, §3.3), the conv-stem hybrid (§5) and the hybrid's exact
explanation at the input of its first DAU layer.  The DAU layers are in :mod:`.layers`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor, nn

from ...core.data import FMNIST_MEAN, FMNIST_STD
from ...layers.encoding import Normalize
from ...layers.logit import LogitLayer
from ...models.cnn import ConvNet
from ...core.registry import register_model
from .layers import SQUASHES, DynamicAlignmentConv2d

__all__ = ["CoDANet", "CoDAHybrid", "SumPool2d", "coda_net", "coda_hybrid", "CIFAR10_CONFIG"]

#: the paper's CIFAR-10 CoDA Net (9 DAU layers; the last, 1×1 with 10 units, is the classifier)
CIFAR10_CONFIG = {"channels": (16, 16, 32, 32, 32, 64, 64, 64), "strides": (1, 1, 2, 1, 1, 2, 1, 1),
                  "kernels": (3, 3, 3, 3, 3, 3, 3, 3), "ranks": (32, 32, 64, 64, 64, 64, 64, 64, 64),
                  "logit_temperature": 1000.0}
ENCODINGS = ("add_inverse", "none")


class SumPool2d(nn.Module):
    """Sum over all positions, (N, C, H, W) → (N, C, 1, 1) (CoDA §3.3: the logits sum the class maps)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=(2, 3), keepdim=True)


def _check_config(channels: Sequence[int], strides: Sequence[int], kernels: Sequence[int], ranks: Sequence[int],
                  logit_temperature: float, squash: str, where: str) -> None:
    """Clear errors, naming the argument, for a configuration that cannot build a CoDA net."""
    n = len(channels)
    if n < 1:
        raise ValueError(f"{where}: channels must list at least one hidden DAU layer")
    if len(strides) != n or len(kernels) != n:
        raise ValueError(f"{where}: channels ({n}), strides ({len(strides)}) and kernels ({len(kernels)}) must have "
                         "the same length")
    if len(ranks) != n + 1:
        raise ValueError(f"{where}: ranks needs one entry per DAU layer including the classifier: {n + 1} "
                         f"(got {len(ranks)})")
    for name, values in (("channels", channels), ("strides", strides), ("kernels", kernels), ("ranks", ranks)):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"{where}: every entry of {name} must be an integer ≥ 1 (got {list(values)})")
    if not isinstance(logit_temperature, (int, float)) or not math.isfinite(logit_temperature) or logit_temperature <= 0:
        raise ValueError(f"{where}: logit_temperature T must be a number > 0 (got {logit_temperature!r}); "
                         "the paper's CIFAR-10 net uses T = 1000")
    if squash not in SQUASHES:
        raise ValueError(f"{where}: squash must be one of {SQUASHES} (got {squash!r})")


def _dau_factory(kernels: Sequence[int], ranks: Sequence[int], squash: str, first_in: int | None = None):
    """The ``conv`` and ``classifier`` arguments of ConvNet: DAU layers with per-layer kernel and rank.

    ConvNet builds its layers in order (the hidden layers, then the classifier), so the i-th
    call gets the i-th kernel and rank.  ``first_in`` replaces the first layer's input
    channels (a hybrid's stem changes them).
    """
    calls = iter(range(len(ranks)))

    def conv(ci: int, co: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> DynamicAlignmentConv2d:
        i = next(calls)
        k = kernels[i]
        ci = first_in if (i == 0 and first_in is not None) else ci
        return DynamicAlignmentConv2d(ci, co, kernel_size=k, stride=stride, padding=k // 2, rank=ranks[i],
                                      squash=squash)

    def classifier(ci: int, co: int, kernel_size: int = 1) -> DynamicAlignmentConv2d:
        return DynamicAlignmentConv2d(ci, co, kernel_size=1, stride=1, padding=0, rank=ranks[next(calls)],
                                      squash=squash)

    return conv, classifier


class CoDANet(ConvNet):
    """DAU layers → 1×1 DAU classifier → **sum** pooling → ``z / T + b`` (CoDA §3.3).

    Built with ``dynamic_linear=True``: in explanation mode it is y = W(x) x + b exactly."""

    #: the logits sum the class maps over positions (ConvNet averages)
    pooling = "sum"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool = SumPool2d()

    def explanation_layers(self) -> dict[str, str]:
        """Hidden DAU layers for the interpretable-depth figure."""
        return {f"features.{i}": f"DAU layer {i + 1}" for i in range(len(self.features))}


class CoDAHybrid(CoDANet):
    """A conventional stem (conv–BN–ReLU) followed by DAU layers (CoDA §5, the ImageNet hybrids).

    The whole network is *not* dynamic linear (the stem has ReLUs and BN shifts), so
    ``explainable`` is False and the shared "own" explanation does not apply.  Its DAU part
    is: :meth:`dau_part` is that part as a model of the stem's output, explained exactly at
    the input of the first DAU layer (``dau_input_layer``).
    """

    #: the module whose output is the first DAU layer's input (Grad-CAM reads the same layer)
    dau_input_layer = "stem"

    def explanation_bias(self) -> Tensor | None:
        """None: at the image the hybrid is not dynamic linear (see :meth:`dau_part` for its DAU part)."""
        return None

    def dau_part(self) -> "DAUPart":
        """The DAU layers, pooling and logit layer as a model of the stem's output (in this model's
        train/eval mode: code that restores the part's mode then restores this model's)."""
        return DAUPart(self).train(self.training)


class DAUPart(nn.Module):
    """``h ↦ logit(sum_pool(classifier(features(h))))`` of a :class:`CoDAHybrid` (h: the stem's output).

    Dynamic linear in h, so :func:`bcos_lib.explain.explain` gives ``W(h) ⊙ h`` summing to logit − b.
    """

    encoding = "none"

    def __init__(self, net: CoDAHybrid):
        super().__init__()
        self.net = net

    def forward(self, h: Tensor) -> Tensor:
        n = self.net
        return n.logit(n.pool(n.classifier(n.features(h))).flatten(1))

    def explanation_bias(self) -> Tensor:
        """The fixed logit bias b of the hybrid's logit layer (what W(h) ⊙ h leaves out)."""
        return self.net.logit.bias


@register_model
def coda_net(num_classes: int = 10, image_channels: int = 1,
             channels: Sequence[int] = CIFAR10_CONFIG["channels"], strides: Sequence[int] = CIFAR10_CONFIG["strides"],
             kernels: Sequence[int] = CIFAR10_CONFIG["kernels"], ranks: Sequence[int] = CIFAR10_CONFIG["ranks"],
             logit_temperature: float = CIFAR10_CONFIG["logit_temperature"], logit_bias: float | None = None,
             squash: str = "squash", encoding: str = "add_inverse") -> CoDANet:
    """CoDA Net: DAU layers only, sum pooling, ``z / T + b`` (the defaults: the paper's CIFAR-10 net).

    ``channels``/``strides``/``kernels``: the hidden DAU layers; ``ranks``: one rank per DAU layer
    *including* the 1×1 classifier (len(channels) + 1).  ``logit_temperature``: T (> 0); the logit
    bias b defaults to log(1/(K−1)) (binary cross-entropy, as the B-cos networks).  ``squash``:
    ``"squash"`` (‖w‖²/(1+‖w‖²)·ŵ, the paper) or ``"l2"`` (ŵ).  ``encoding``: ``"add_inverse"``
    (``[x, 1 − x]``, the paper) or ``"none"`` (the images alone: black pixels contribute 0).
    """
    _check_config(channels, strides, kernels, ranks, logit_temperature, squash, "coda_net")
    if encoding not in ENCODINGS:
        raise ValueError(f"coda_net: encoding must be one of {ENCODINGS} (got {encoding!r})")
    conv, classifier = _dau_factory(kernels, ranks, squash)
    return CoDANet(image_channels=image_channels, num_classes=num_classes, channels=list(channels),
                   strides=list(strides), conv=conv, classifier=classifier, norm=None, act=None, stem=None,
                   logit=LogitLayer(num_classes, float(logit_temperature), logit_bias), encoding=encoding,
                   default_loss="bce", dynamic_linear=True)


@register_model
def coda_hybrid(num_classes: int = 10, image_channels: int = 1, stem_channels: Sequence[int] = (16, 32),
                stem_strides: Sequence[int] = (1, 2), channels: Sequence[int] = (32, 64, 64),
                strides: Sequence[int] = (1, 2, 1), kernels: Sequence[int] = (3, 3, 3),
                ranks: Sequence[int] = (32, 64, 64, 64), logit_temperature: float = 1000.0,
                logit_bias: float | None = None, squash: str = "squash", mean: float = FMNIST_MEAN,
                std: float = FMNIST_STD) -> CoDAHybrid:
    """A conventional stem (3×3 conv without bias + BN + ReLU per entry of ``stem_channels``), then
    DAU layers as in :func:`coda_net` (``channels``, ``strides``, ``kernels``, ``ranks``), sum pooling
    and ``z / T + b``.  The stem takes the images normalised by ``mean``/``std``."""
    _check_config(channels, strides, kernels, ranks, logit_temperature, squash, "coda_hybrid")
    if len(stem_channels) < 1 or len(stem_channels) != len(stem_strides):
        raise ValueError(f"coda_hybrid: stem_channels ({len(stem_channels)}) and stem_strides "
                         f"({len(stem_strides)}) must have the same length ≥ 1")
    stem: list[nn.Module] = [Normalize([mean] * image_channels, [std] * image_channels)]
    c_in = image_channels
    for c, s in zip(stem_channels, stem_strides):
        stem += [nn.Conv2d(c_in, c, 3, s, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        c_in = c
    conv, classifier = _dau_factory(kernels, ranks, squash, first_in=c_in)
    return CoDAHybrid(image_channels=image_channels, num_classes=num_classes, channels=list(channels),
                      strides=list(strides), conv=conv, classifier=classifier, norm=None, act=None,
                      stem=nn.Sequential(*stem), logit=LogitLayer(num_classes, float(logit_temperature), logit_bias),
                      encoding="none", default_loss="bce", dynamic_linear=False)
