"""A 2-D toy problem that shows alignment pressure (B-cos v1 §3; v2 §3).

Two classes of points in the plane, each spread around its own direction.  Each class has
one unit, ``logit_c = unit_c(x) / T + b``, trained with binary cross-entropy on one-hot
targets (the B-cos loss).  A B-cos unit's output is bounded by how well its weight aligns
with the input, ``|B-cos(x; w)| = ‖x‖·|cos(x, w)|^B``, so a unit that must give its own
class a large output can only do so by pointing at that class's inputs, and the more so
the larger B.  A linear unit can give a large output to inputs it does not point at, and
is pushed towards the direction that best *separates* the classes instead.

Everything here is small and deterministic: full-batch Adam on a few hundred points, a
fixed seed for the data and for every unit's initial weights.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .methods.bcos.layers import BcosLinear
from .layers.logit import LogitLayer
from .train import loss_fn

__all__ = ["angular_clusters", "toy_classifier", "train_toy", "unit_weights", "alignment", "class_probability_grid"]


def angular_clusters(angles_deg: Sequence[float] = (20.0, 70.0), n_per_class: int = 150, spread_deg: float = 12.0,
                     radius: tuple[float, float] = (0.4, 1.2), seed: int = 0) -> tuple[Tensor, Tensor]:
    """Points ``x`` (N, 2) and labels ``y`` (N,): class c lies around the direction ``angles_deg[c]``
    (normal angular noise of ``spread_deg``), at radii drawn uniformly from ``radius``."""
    if not angles_deg:
        raise ValueError("angular_clusters needs at least one class direction")
    lo, hi = radius
    if not 0 <= lo <= hi:
        raise ValueError(f"radius must be (low, high) with 0 ≤ low ≤ high (got {radius})")
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, angle in enumerate(angles_deg):
        theta = torch.deg2rad(angle + spread_deg * torch.randn(n_per_class, generator=g, dtype=torch.float64))
        r = lo + (hi - lo) * torch.rand(n_per_class, generator=g, dtype=torch.float64)
        xs.append(torch.stack([r * theta.cos(), r * theta.sin()], 1))
        ys.append(torch.full((n_per_class,), c, dtype=torch.long))
    return torch.cat(xs).float(), torch.cat(ys)


def toy_classifier(b: float | None, num_classes: int = 2, temperature: float = 0.1, bias: float = -2.0,
                   seed: int = 0) -> nn.Sequential:
    """One unit per class on 2-D inputs, then the fixed logit layer ``z / T + b``.

    ``b=None``: a plain linear unit (``nn.Linear`` without bias, weights of any norm);
    otherwise a B-cos unit with that B (``BcosLinear``: unit-norm weights, B = 1 is linear).
    The initial weights depend only on ``seed``, so every B starts from the same directions.
    """
    torch.manual_seed(seed)
    unit: nn.Module = nn.Linear(2, num_classes, bias=False) if b is None else BcosLinear(2, num_classes, b=b)
    return nn.Sequential(unit, LogitLayer(num_classes, temperature=temperature, bias=bias))


def train_toy(model: nn.Sequential, x: Tensor, y: Tensor, steps: int = 300, lr: float = 0.05) -> list[float]:
    """Full-batch Adam on the binary cross-entropy of one-hot targets; returns the loss per step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = loss_fn("bce", model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def unit_weights(model: nn.Sequential) -> Tensor:
    """The units' weight vectors (K, 2) as the model applies them (ŵ for B-cos units)."""
    unit = model[0]
    w = unit.effective_weight() if isinstance(unit, BcosLinear) else unit.weight
    return w.detach().clone()


def alignment(weights: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Per class c, the mean of cos(w_c, x) over the inputs x of class c: (K,).

    1 means the unit points exactly at its class's inputs, 0 that it is orthogonal to them."""
    w_dir = weights / weights.norm(dim=1, keepdim=True).clamp_min(1e-12)
    x_dir = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = x_dir @ w_dir.T  # (N, K)
    return torch.stack([cos[y == c, c].mean() if (y == c).any() else torch.tensor(math.nan)
                        for c in range(len(weights))])


@torch.no_grad()
def class_probability_grid(model: nn.Module, lim: float = 1.5, n: int = 121) -> tuple[Tensor, Tensor, Tensor]:
    """The model's class probabilities sigmoid(logit_c) on an n×n grid over [−lim, lim]²:
    grid coordinates ``xx``, ``yy`` (n, n) and probabilities (K, n, n)."""
    t = torch.linspace(-lim, lim, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    logits = model(torch.stack([xx.flatten(), yy.flatten()], 1))
    return xx, yy, torch.sigmoid(logits).T.reshape(-1, n, n)
