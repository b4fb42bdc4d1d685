"""A fully convolutional CNN for small images, in three layer families.

``bcos_cnn`` (B-cos v2 by default; ``variant="v1"`` for v1), and ``std_cnn``, a
conventional network of the same shape (the baseline).  The shape: a stack of 3×3
convolutions (some with stride 2), a 1×1 classifier convolution *before* global
average pooling (B-cos v2 §4.1), so the network accepts images of any size, e.g. a
3×3 grid of 28×28 images for the localisation metric.

One builder, ``ConvNet``, takes its sub-layers as arguments (conv, norm, activation),
so a new layer family (DAU, LWTA, …) is a new entry in ``LAYER_FAMILIES``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from ..layers import BcosConv2d, LogitLayer, Normalize, UncentredBatchNorm2d
from ..layers.bcos import v1_cifar_layer_scale
from ..layers.logit import v1_logit_temperature, v2_logit_temperature
from ..registry import register_model
from .base import ImageClassifier

__all__ = ["ConvNet", "bcos_cnn", "std_cnn"]

# Fashion-MNIST's pixel statistics (the std CNN's Normalize layer); other data can pass their own
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


class ConvNet(ImageClassifier):
    """conv-norm-act blocks → 1×1 classifier conv → global average pool → logit layer."""

    def __init__(self, *, image_channels: int, num_classes: int, channels: Sequence[int], strides: Sequence[int],
                 conv: Callable[..., nn.Module], classifier: Callable[..., nn.Module],
                 norm: Callable[[int], nn.Module] | None, act: Callable[[], nn.Module] | None,
                 stem: nn.Module | None, logit: nn.Module | None, encoding: str, default_loss: str, dynamic_linear: bool = False):
        super().__init__(image_channels, num_classes)
        if len(channels) != len(strides):
            raise ValueError(f"channels ({len(channels)}) and strides ({len(strides)}) must have the same length")
        self.encoding, self.default_loss, self.dynamic_linear = encoding, default_loss, dynamic_linear
        self.stem = stem or nn.Identity()
        layers: list[nn.Module] = []
        c_in = self.input_channels
        for c_out, s in zip(channels, strides):
            layers.append(conv(c_in, c_out, kernel_size=3, stride=s, padding=1))
            if norm is not None:
                layers.append(norm(c_out))
            if act is not None:
                layers.append(act())
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = classifier(c_in, num_classes, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logit = logit or nn.Identity()

    def class_maps(self, x: Tensor) -> Tensor:
        """Per-position class evidence before pooling, (N, K, H', W')."""
        self.check_input(x)
        return self.classifier(self.features(self.stem(x)))

    def explanation_layers(self, last: int = 4) -> dict[str, str]:
        """The ``last`` conv/norm outputs of the feature stack (layers with parameters), named as a
        reader of the papers would: "conv layer 5 of 6", "conv layer 5 of 6, after its norm"."""
        layers = [(f"features.{i}", m) for i, m in enumerate(self.features)
                  if next(m.parameters(), None) is not None]  # activations have no layer of their own
        n = sum(1 for _, m in layers if "Norm" not in type(m).__name__)
        names: dict[str, str] = {}
        k = 0
        for name, m in layers:
            if "Norm" in type(m).__name__:
                names[name] = f"conv layer {k} of {n}, after its norm"
            else:
                k += 1
                names[name] = f"conv layer {k} of {n}"
        return dict(list(names.items())[-last:])

    def forward(self, x: Tensor) -> Tensor:
        return self.logit(self.pool(self.class_maps(x)).flatten(1))


DEFAULT_CHANNELS = (32, 32, 64, 64, 128, 128)
DEFAULT_STRIDES = (1, 2, 1, 2, 1, 1)
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
