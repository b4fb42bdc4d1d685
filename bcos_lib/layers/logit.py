"""The logit layer of B-cos networks: ``logit = z / T + b`` (B-cos v1 §3.4, v2 §4.1).

b is a fixed (not learnt) bias, log(1/(K−1)) by default (−2.197 for K = 10), so that an
input with z = 0 has probability 1/K under the binary cross-entropy loss.  T is a
fixed temperature.  z / T is linear in x in explanation mode, so the contributions sum
to ``logit − b``; b is the same for every input and is reported next to the explanation.

v1 chose T per B.  Its CIFAR-10 experiments (public v1 code, ``experiment_parameters.py``)
used T = 10^t with t = −3, −3, −2, 1, 2, 2, 3 for B = 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5,
together with the per-B layer scale ``10^(−2 + 1.5·(2.5 − B))`` of every layer
(``bcos_lib.layers.bcos.v1_cifar_layer_scale``).  :func:`v1_logit_temperature` returns
that table, interpolated linearly in log10 T between its entries and held at the end
values outside [1, 2.5], so that every real B ≥ 1 has a temperature.  (v1's final layer
*divides* z by this number, as here, although its docstring calls it an inverse temperature.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LogitLayer", "default_logit_bias", "v2_logit_temperature", "v1_logit_temperature", "V1_CIFAR_LOG10_TEMPERATURE"]

#: B → log10 T of the v1 CIFAR-10 experiments (B-cos v1, public code)
V1_CIFAR_LOG10_TEMPERATURE: dict[float, float] = {1.0: -3.0, 1.25: -3.0, 1.5: -2.0, 1.75: 1.0, 2.0: 2.0,
                                                  2.25: 2.0, 2.5: 3.0}


def v1_logit_temperature(b: float) -> float:
    """v1's logit temperature for B: the CIFAR-10 table, log-linear between entries, clamped outside."""
    b = float(b)
    if not math.isfinite(b) or b < 1:
        raise ValueError(f"B must be a real number ≥ 1 (got {b})")
    bs = sorted(V1_CIFAR_LOG10_TEMPERATURE)
    if b >= bs[-1]:
        return 10.0 ** V1_CIFAR_LOG10_TEMPERATURE[bs[-1]]
    for lo, hi in zip(bs, bs[1:]):
        if lo <= b <= hi:
            t_lo, t_hi = V1_CIFAR_LOG10_TEMPERATURE[lo], V1_CIFAR_LOG10_TEMPERATURE[hi]
            return 10.0 ** (t_lo + (t_hi - t_lo) * (b - lo) / (hi - lo))
    raise AssertionError("unreachable")  # b ≥ 1 = bs[0]


def default_logit_bias(num_classes: int) -> float:
    """log(1/(K−1)): the bias that gives sigmoid(b) = 1/K."""
    return math.log(1.0 / (num_classes - 1)) if num_classes > 1 else 0.0


class LogitLayer(nn.Module):
    """``z / temperature + bias`` with both fixed."""

    def __init__(self, num_classes: int, temperature: float = 1.0, bias: float | None = None):
        super().__init__()
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"logit temperature must be > 0 (got {temperature})")
        self.temperature = float(temperature)
        b = default_logit_bias(num_classes) if bias is None else float(bias)
        self.register_buffer("bias", torch.full((num_classes,), b))

    def forward(self, z: Tensor) -> Tensor:
        return z / self.temperature + self.bias.to(z.dtype)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, bias={self.bias[0].item():.4f}"


def v2_logit_temperature(b: float, in_features: int) -> float:
    """A temperature that gives B-cos classifiers the same logit scale at initialisation for every B.

    Our choice, not the paper's: every hidden layer of a v2 network is followed by an
    uncentred batch norm, so only the last B-cos layer sets the logits' scale.  A unit of
    that layer outputs ‖x‖·|cos|^B, and for weights not yet aligned |cos| ≈ 1/√d (d its
    input size), so its output shrinks by ≈ d^(−(B−1)/2) relative to B = 1.  Dividing by
    T = d^(−(B−1)/2) undoes that (T = 1 at B = 1, 0.125 at B = 2 with d = 64).  With T = 1
    at B = 2 the logits start ~d^(1/2) times too small and training is slow; with one small T
    for every B, B = 1 becomes unstable (both measured on Fashion-MNIST, see params.yaml).
    """
    return float(in_features) ** (-(float(b) - 1.0) / 2.0)
