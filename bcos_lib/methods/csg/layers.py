"""Class-specific gates (Liang, Ouyang, Zeng, Su, He, Wang, Zhu: "Training Interpretable
Convolutional Neural Networks by Differentiating Class-specific Filters", ECCV 2020, §3).

A gate matrix G ∈ [0, 1]^(C×K) sits on the C feature maps of the last convolutional layer
(K classes), initialised to 0.5.  On a *CSG step* (§3.2) the feature maps of an image of
class y are multiplied channel-wise by the column G[:, y], so that each filter learns to
matter for few classes; on a *standard step* and at test time the gate is open (the
identity), so the network is an ordinary classifier.  The gate is trained with the rest of
the network on CSG steps, with the sparsity loss (§3.3)

    L_sparse = λ · ReLU(‖G‖₁ − d·|G|),     |G| = C·K entries, d the density target,

which penalises only a density above d; after every CSG step each filter's row is divided by
its maximum over the classes and clipped to [0, 1] (:meth:`ClassSpecificGate.renormalise_`),
so every filter stays fully open for at least one class.

The labels reach the gate through :func:`gate_labels`, a context manager that sets them on
every gate of a model for one forward pass (as :func:`bcos_lib.layers.explanation_mode` sets
a flag): the network's ``forward(x)`` keeps its signature, so the gate can sit in any network.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ["ClassSpecificGate", "gate_labels", "class_gates"]


class ClassSpecificGate(nn.Module):
    """G (``channels`` × ``num_classes``), applied to (N, C, H, W) or (N, C) features.

    The gate is closed onto a class's column only while :attr:`labels` is set (see
    :func:`gate_labels`); otherwise the features pass unchanged.

    G is stored as the parameter ``weight`` = G / ``lr_scale`` (in the ``state_dict``, learnt by
    the run's optimiser): Adam moves a parameter by about its learning rate per step whatever the
    gradient's size, so the stored scale makes G move ``lr_scale`` times faster than the backbone's
    weights.  With the backbone's learning rate (1e-3) alone G would move by ~1e-3 per step, and
    the first renormalisation opens every row to 1 (a row of 0.5s divided by its max): reaching
    the density target from there takes thousands of CSG steps, more than a short CPU run has.
    """

    def __init__(self, channels: int, num_classes: int, init: float = 0.5, lr_scale: float = 1.0):
        super().__init__()
        if channels < 1 or num_classes < 1:
            raise ValueError(f"a gate needs ≥ 1 channel and ≥ 1 class (got {channels}, {num_classes})")
        if not 0.0 < init <= 1.0:
            raise ValueError(f"the gate's initial value must lie in (0, 1] (got {init})")
        if not lr_scale > 0:
            raise ValueError(f"the gate's lr_scale must be > 0 (got {lr_scale})")
        self.lr_scale = float(lr_scale)
        self.weight = nn.Parameter(torch.full((channels, num_classes), float(init) / self.lr_scale))
        self.labels: Tensor | None = None

    @property
    def gate(self) -> Tensor:
        """G = lr_scale · weight, (C, K)."""
        return self.weight * self.lr_scale

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    @property
    def num_classes(self) -> int:
        return self.weight.shape[1]

    def forward(self, features: Tensor) -> Tensor:
        if self.labels is None:
            return features  # open: standard steps and test time
        if features.dim() not in (2, 4) or features.shape[1] != self.channels:
            raise ValueError(f"the class-specific gate has {self.channels} channels and takes (N, {self.channels}) or "
                             f"(N, {self.channels}, H, W) features, got {tuple(features.shape)}")
        labels = self.labels
        if labels.shape != (features.shape[0],):
            raise ValueError(f"gate labels must be one class per image, shape ({features.shape[0]},); "
                             f"got {tuple(labels.shape)}")
        columns = self.gate[:, labels].T.to(features.dtype)  # (N, C): the column G[:, y_n] of each image
        return features * (columns[:, :, None, None] if features.dim() == 4 else columns)

    def density(self) -> Tensor:
        """‖G‖₁ / |G|: the mean gate value (1 = every filter open for every class)."""
        return self.gate.abs().mean()

    def sparsity_loss(self, weight: float, density: float) -> Tensor:
        """λ·ReLU(‖G‖₁ − d·|G|) with λ = ``weight``, d = ``density`` (ECCV 2020 §3.3)."""
        return weight * torch.relu(self.gate.abs().sum() - density * self.gate.numel())

    @torch.no_grad()
    def renormalise_(self) -> None:
        """Divide each filter's row by its maximum over the classes, then clip to [0, 1].

        A row whose maximum is not positive (every entry driven to ≤ 0 by one step) cannot be
        divided by it; it is reset to fully open for its largest entry's class only, which is
        what the division does to a row with a positive maximum and nothing else above 0.
        """
        g = self.gate
        row_max = g.max(dim=1, keepdim=True).values
        one_hot = torch.nn.functional.one_hot(g.argmax(dim=1), g.shape[1]).to(g.dtype)
        divided = g / row_max.clamp_min(torch.finfo(g.dtype).tiny)
        self.weight.copy_(torch.where(row_max > 0, divided, one_hot).clamp(0.0, 1.0) / self.lr_scale)

    def filter_classes(self) -> Tensor:
        """The class each filter is most open for, (C,)."""
        return self.gate.detach().argmax(dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_classes={self.num_classes}"


def class_gates(model: nn.Module) -> list[ClassSpecificGate]:
    """Every :class:`ClassSpecificGate` of ``model``, in module order (empty for an ungated model)."""
    return [m for m in model.modules() if isinstance(m, ClassSpecificGate)]


@contextmanager
def gate_labels(model: nn.Module, labels: Tensor) -> Iterator[nn.Module]:
    """Close every gate of ``model`` onto the columns of ``labels`` for the block (a CSG pass).

    ``labels`` (N,) are class indices in [0, K); the previous state is restored afterwards.
    """
    gates = class_gates(model)
    if not gates:
        raise ValueError(f"{type(model).__name__} has no ClassSpecificGate: a CSG pass needs a gated model "
                         "(e.g. csg_std_cnn or csg_bcos_cnn)")
    labels = torch.as_tensor(labels).long()
    for g in gates:
        if labels.dim() != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= g.num_classes)):
            raise ValueError(f"gate labels must be (N,) classes in [0, {g.num_classes}); got shape "
                             f"{tuple(labels.shape)} with values {labels.unique().tolist()[:10]}")
    saved = [(g, g.labels) for g in gates]
    try:
        for g in gates:
            g.labels = labels.to(g.gate.device)
        yield model
    finally:
        for g, old in saved:
            g.labels = old
