"""Input encodings.

B-cos networks take images in [0, 1] without mean/std normalisation, concatenated with
their inverse, ``[x, 1 − x]`` (B-cos v1 §3.3): every pixel then has a non-zero norm and
dark and bright pixels are equally encodable.  Grey images become 2 channels, RGB 6.
Conventional networks take ``(x − μ)/σ``, done inside the model by ``Normalize``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Normalize", "add_inverse", "check_encoded_input"]


def add_inverse(x: Tensor) -> Tensor:
    """``[x, 1 − x]`` along the channel dimension."""
    return torch.cat([x, 1 - x], dim=1)


def check_encoded_input(x: Tensor, image_channels: int) -> None:
    """Raise a clear error unless ``x`` looks like ``[x, 1 − x]``-encoded images in [0, 1]."""
    expected = 2 * image_channels
    if x.dim() != 4 or x.shape[1] != expected:
        got = tuple(x.shape)
        hint = (" It looks like raw images: encode them with bcos_lib.layers.add_inverse(x) "
                "(or bcos_lib.prepare_input(model, x))." if x.dim() == 4 and x.shape[1] == image_channels else "")
        raise ValueError(
            f"this B-cos model expects (N, {expected}, H, W) input: images with {image_channels} channel(s) "
            f"in [0, 1] encoded as [x, 1 − x]; got shape {got}.{hint}")
    if x.numel():
        lo, hi = float(x.detach().amin()), float(x.detach().amax())
        if lo != lo or hi != hi:  # NaN compares false with everything
            raise ValueError("the input contains NaN: B-cos models expect images in [0, 1] encoded as [x, 1 − x]")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"this B-cos model expects inputs in [0, 1] (images without mean/std normalisation, "
                f"encoded as [x, 1 − x]); got values in [{lo:.3g}, {hi:.3g}]. Do not normalise the "
                "images; scale them to [0, 1] and use bcos_lib.layers.add_inverse(x)")


class Normalize(nn.Module):
    """``(x − mean) / std`` per channel, as the first layer of a conventional model."""

    def __init__(self, mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected (N, {self.mean.shape[1]}, H, W) images in [0, 1], got {tuple(x.shape)}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
