"""What every classifier in the project shares: its input encoding and its logit bias.

``prepare_input`` turns images in [0, 1] into what ``forward`` expects: ``[x, 1 − x]`` for
B-cos-style models, the images themselves for conventional ones (which normalise inside).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers.encoding import add_inverse, check_encoded_input
from ..layers.explanation_mode import is_explainable

__all__ = ["ImageClassifier", "prepare_input"]


class ImageClassifier(nn.Module):
    """Base class: ``image_channels``, ``num_classes``, ``encoding`` and the default loss."""

    #: "add_inverse" (B-cos, CoDA: forward takes [x, 1 − x]) or "none" (forward takes x)
    encoding: str = "none"
    #: "bce" (B-cos: one-hot binary cross-entropy) or "ce"
    default_loss: str = "ce"

    def __init__(self, image_channels: int, num_classes: int):
        super().__init__()
        self.image_channels, self.num_classes = image_channels, num_classes

    @property
    def input_channels(self) -> int:
        return 2 * self.image_channels if self.encoding == "add_inverse" else self.image_channels

    @property
    def explainable(self) -> bool:
        """True when the model is dynamic linear (its explanation sums to the logit)."""
        return is_explainable(self)

    def prepare_input(self, images: Tensor) -> Tensor:
        """Images in [0, 1], (N, image_channels, H, W) → the model's input."""
        if images.dim() != 4 or images.shape[1] != self.image_channels:
            enc = " (prepare_input encodes them as [x, 1 − x] itself)" if self.encoding == "add_inverse" else ""
            raise ValueError(f"expected raw images of shape (N, {self.image_channels}, H, W) in [0, 1]{enc}, "
                             f"got {tuple(images.shape)}")
        return add_inverse(images) if self.encoding == "add_inverse" else images

    def check_input(self, x: Tensor) -> None:
        if self.encoding == "add_inverse":
            check_encoded_input(x, self.image_channels)
        elif x.dim() != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"{type(self).__name__} expects images of shape (N, {self.image_channels}, H, W), "
                             f"got {tuple(x.shape)}")

    def logit_bias(self) -> Tensor | None:
        """The fixed per-class logit bias b (the part of the logit no explanation covers)."""
        logit = getattr(self, "logit", None)
        return getattr(logit, "bias", None) if logit is not None else None


def prepare_input(model: nn.Module, images: Tensor) -> Tensor:
    """``model.prepare_input(images)`` for project models, ``images`` for any other module."""
    return model.prepare_input(images) if isinstance(model, ImageClassifier) else images
