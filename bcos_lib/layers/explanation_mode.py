"""Explanation mode: the switch that makes a B-cos (or CoDA) network dynamic linear.

In explanation mode every layer treats its data-dependent factors (|cos|^(B-1), the
patch norm, the uncentred-BN variance, the attention pattern, …) as constants, so
the whole network computes ``y(x) = W(x) x`` exactly and ``W(x) = ∂y/∂x`` is read off
with one backward pass (B-cos v1 §3.2, v2 §3).  The flag lives on each module; one
context manager switches it for a whole model and restores the previous state.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["ExplainableModule", "explanation_mode", "is_explainable"]


class ExplainableModule(nn.Module):
    """Base class for layers that have an explanation mode (``self.explanation_mode``)."""

    explanation_mode: bool

    def __init__(self) -> None:
        super().__init__()
        self.explanation_mode = False


def is_explainable(model: nn.Module) -> bool:
    """True if ``model`` explains itself (its contributions sum to its output minus fixed terms).

    A project model declares it (``ImageClassifier.dynamic_linear``): containing a layer with an
    explanation mode is not enough (a conventional stem in front of DAU layers is not dynamic
    linear in its input).  A bare stack of layers (no declaration) counts when it contains
    one of these layers.
    """
    declared = getattr(model, "dynamic_linear", None)
    if declared is not None:
        return bool(declared)
    return any(isinstance(m, ExplainableModule) for m in model.modules())


@contextmanager
def explanation_mode(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Switch every ExplainableModule of ``model`` to explanation mode for the block."""
    saved = [(m, m.explanation_mode) for m in model.modules() if isinstance(m, ExplainableModule)]
    try:
        for m, _ in saved:
            m.explanation_mode = enabled
        yield model
    finally:
        for m, old in saved:
            m.explanation_mode = old
