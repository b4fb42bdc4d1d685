"""The logit layer of B-cos networks: ``logit = z / T + b`` (B-cos v1 §3.4, v2 §4.1).

b is a fixed (not learnt) bias, log(1/(K−1)) by default (−2.197 for K = 10), so that an
input with z = 0 has probability 1/K under the binary cross-entropy loss.  T is a
fixed temperature.  z / T is linear in x in explanation mode, so the contributions sum
to ``logit − b``; b is the same for every input and is reported next to the explanation.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LogitLayer", "default_logit_bias"]


def default_logit_bias(num_classes: int) -> float:
    """log(1/(K−1)): the bias that gives sigmoid(b) = 1/K."""
    return math.log(1.0 / (num_classes - 1)) if num_classes > 1 else 0.0


class LogitLayer(nn.Module):
    """``z / temperature + bias`` with both fixed."""

    def __init__(self, num_classes: int, temperature: float = 1.0, bias: float | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"logit temperature must be > 0 (got {temperature})")
        self.temperature = float(temperature)
        b = default_logit_bias(num_classes) if bias is None else float(bias)
        self.register_buffer("bias", torch.full((num_classes,), b))

    def forward(self, z: Tensor) -> Tensor:
        return z / self.temperature + self.bias.to(z.dtype)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, bias={self.bias[0].item():.4f}"
