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

from .base import ImageClassifier

__all__ = ["ConvNet", "DEFAULT_CHANNELS", "DEFAULT_STRIDES"]



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
