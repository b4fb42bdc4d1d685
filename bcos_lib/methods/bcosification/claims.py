"""B-cosification's claims that this companion tests (see :mod:`bcos_lib.claims`).

The cost claim is measured as the paper does (§4): the epochs each model needs to reach the
from-scratch B-cos model's final accuracy, linearly interpolated between epochs, both curves
starting at chance; the statistic is their ratio (from scratch ÷ B-cosified)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...claims import Arm, Claim, Samples, SourceContext, register_source
from ...core.contract import ModelResult


def epochs_to_reach(history: pd.DataFrame, target: float, start: float, column: str = "test_accuracy") -> float | None:
    """The (linearly interpolated) number of epochs after which ``history[column]`` first reaches
    ``target``; the curve starts at (0, ``start``).  None if it never does."""
    epochs = [0.0] + history["epoch"].astype(float).tolist()
    values = [start] + history[column].astype(float).tolist()
    for (e0, v0), (e1, v1) in zip(zip(epochs, values), zip(epochs[1:], values[1:])):
        if v1 >= target:
            return e1 if v1 == v0 or v0 >= target else e0 + (e1 - e0) * (target - v0) / (v1 - v0)
    return None


@register_source("epochs_ratio")
def _epochs_ratio(r: ModelResult, arm: Arm, ctx: SourceContext) -> Samples | None:
    """Epochs the from-scratch model (``arm.column``) needs to reach its final accuracy ÷ the
    epochs the B-cosified model ``r`` needs to reach it (None when either never does)."""
    scratch = ctx.partner(arm.column)
    if scratch is None or scratch.history is None or r.history is None:
        return None
    target = float(scratch.history["test_accuracy"].iloc[-1])
    chance = 100.0 / 10
    e_s, e_c = epochs_to_reach(scratch.history, target, chance), epochs_to_reach(r.history, target, chance)
    return Samples(np.array([e_s / e_c])) if e_s and e_c else None


CLAIMS = (
    Claim("bcosification.cost", short="B-cosified net reaches the from-scratch accuracy in fewer epochs (ratio)",
          claim="A B-cosified network reaches the accuracy of a B-cos network trained from "
          "scratch in fewer epochs (ratio of epochs, from scratch ÷ B-cosified)",
          paper="B-cosification (NeurIPS 2024) §4", paper_value="4.7× (DenseNet-121), 9× (ViT-S), ImageNet",
          metric="epochs_ratio", test="value", arms=(Arm("bcosified_cnn", column="bcos_cnn_scratch"),),
          threshold=1.0, unit="×"),
    Claim("bcosification.localisation", short="B-cosified net localises on par with one from scratch (within 0.05)",
          claim="A B-cosified network localises on par with one trained from scratch "
          "(own explanations on the same grids; within 0.05)",
          paper="B-cosification (NeurIPS 2024) §4", paper_value="on-par localisation (ImageNet)",
          metric="fixed_grid_localisation", arms=(Arm("bcosified_cnn", "own"), Arm("bcos_cnn_scratch", "own")),
          threshold=-0.05),
)
