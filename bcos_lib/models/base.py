"""What every classifier in the project shares: its input encoding, its loss, and what its
explanation is.

``prepare_input`` turns images in [0, 1] into what ``forward`` expects: ``[x, 1 − x]`` for
B-cos-style models, the images themselves for conventional ones (which normalise inside).
A model *declares* whether it is dynamic linear (``dynamic_linear``: in explanation mode
``y = W(x) x + b`` exactly, B-cos v2 §3, CoDA Nets §3.2) and which fixed terms ``b`` its
explanation leaves out (``explanation_bias``); the shared explain/evaluate code reads both.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..layers.encoding import add_inverse, check_encoded_input

#: encodings whose input holds each image channel twice, as x and as 1 − x
PAIRED_ENCODINGS = ("add_inverse", "add_inverse_normalised")

__all__ = ["ImageClassifier", "prepare_input", "optional_layer"]


class ImageClassifier(nn.Module):
    """Base class: ``image_channels``, ``num_classes``, ``encoding`` and the default loss."""

    #: "none" (the images), "add_inverse" ([x, 1 − x], B-cos v1 §3.3) or "add_inverse_normalised"
    #: ([x, 1 − x] minus input_mean, divided by input_std: a B-cosified model with input_norm="layer")
    encoding: str = "none"
    #: "bce" (B-cos: one-hot binary cross-entropy) or "ce"
    default_loss: str = "ce"
    #: True when, in explanation mode, the logits are exactly W(x) x + explanation_bias()
    dynamic_linear: bool = False

    def __init__(self, image_channels: int, num_classes: int):
        super().__init__()
        self.image_channels, self.num_classes = image_channels, num_classes

    @property
    def input_channels(self) -> int:
        return 2 * self.image_channels if self.encoding in PAIRED_ENCODINGS else self.image_channels

    @property
    def explainable(self) -> bool:
        """True when the model explains itself: it is dynamic linear (``dynamic_linear``), so
        its contributions W(x) ⊙ x sum to the logit minus :meth:`explanation_bias`."""
        return bool(self.dynamic_linear)

    def prepare_input(self, images: Tensor) -> Tensor:
        """Images in [0, 1], (N, image_channels, H, W) → the model's input."""
        if images.dim() != 4 or images.shape[1] != self.image_channels:
            enc = " (prepare_input encodes them as [x, 1 − x] itself)" if self.encoding == "add_inverse" else ""
            raise ValueError(f"expected raw images of shape (N, {self.image_channels}, H, W) in [0, 1]{enc}, "
                             f"got {tuple(images.shape)}")
        if self.encoding == "add_inverse_normalised":
            return (add_inverse(images) - self.input_mean.to(images.dtype)) / self.input_std.to(images.dtype)
        return add_inverse(images) if self.encoding == "add_inverse" else images

    def check_input(self, x: Tensor) -> None:
        if self.encoding == "add_inverse":
            check_encoded_input(x, self.image_channels)
        elif self.encoding == "add_inverse_normalised":
            if x.dim() != 4 or x.shape[1] != 2 * self.image_channels:
                raise ValueError(f"{type(self).__name__} expects (N, {2 * self.image_channels}, H, W) input: images "
                                 f"encoded as [x, 1 − x] and normalised (model.prepare_input(images)), got "
                                 f"{tuple(x.shape)}")
        elif x.dim() != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"{type(self).__name__} expects images of shape (N, {self.image_channels}, H, W), "
                             f"got {tuple(x.shape)}")

    def explanation_bias(self) -> Tensor | None:
        """The fixed per-class terms b (num_classes,) that no input contribution carries: the
        logit layer's bias by default; a model with other fixed terms overrides this."""
        logit = getattr(self, "logit", None)
        return getattr(logit, "bias", None) if logit is not None else None

    def explanation_layers(self) -> dict[str, str]:
        """Hidden layers worth explaining ("interpretable depth"): module name → readable title.
        Empty by default."""
        return {}


def prepare_input(model: nn.Module, images: Tensor) -> Tensor:
    """``model.prepare_input(images)`` for project models (also inside ``torch.compile``'s wrapper
    and a DistributedDataParallel wrapper, as the training step sees them with ``train.compile`` and
    under ``torchrun``), ``images`` for any other module."""
    model = getattr(model, "_orig_mod", model)   # torch.compile's OptimizedModule
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model.prepare_input(images) if isinstance(model, ImageClassifier) else images


def optional_layer(factory: Callable[..., nn.Module] | None, *args: int) -> nn.Module:
    """``factory(*args)``, or an identity where a family has no such layer (``factory`` None)."""
    return factory(*args) if factory is not None else nn.Identity()
