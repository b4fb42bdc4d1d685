"""B-cosification's metric: ``fixed_grid_localisation``, the own explanation's grid pointing game on
grids that are the same for every model and epoch (run after every epoch through
``train.epoch_metrics``, so the converted and the from-scratch model are compared on one grid set).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ...core.contract import EvalContext, Metric, MetricResult
from ...core.registry import register_metric
from ...core.config import ranged




# ----------------------------------------------------------------------------- the model


@dataclass
class FixedGridOptions:
    """``evaluate.options.fixed_grid_localisation``."""

    n_grids: int = ranged(100, ge=1)    # grids (the same for every model and epoch)
    grid_size: int = ranged(0, ge=0)    # 0: evaluate.grid_size
    seed: int = ranged(1, ge=0)         # the grids' draw (independent of base.seed's grids of the localisation metric)

    def __post_init__(self) -> None:
        from ...core.config import ConfigError
        if self.n_grids < 1 or self.grid_size < 0:
            raise ConfigError(f"options: n_grids must be ≥ 1 and grid_size ≥ 0 (got {self.n_grids}, {self.grid_size})")


def fixed_grids(test_data: Any, n: int, n_grids: int, seed: int) -> tuple[Tensor, Tensor]:
    """Grids of n² distinct classes drawn from *all* test images (not a model's confident pool),
    so that every model and every epoch is scored on the same grids."""
    from ...metrics import label_pool, make_grids
    return make_grids(test_data, label_pool(test_data), n, n_grids, seed)


def fixed_grid_localisation(ctx: EvalContext) -> MetricResult | None:
    """Grid pointing game of the own explanation on :func:`fixed_grids` (mean score, and per cell)."""
    from ...metrics import score_grids
    if not getattr(ctx.model, "explainable", False):
        ctx.log(f"fixed_grid_localisation: {ctx.key} is not dynamic linear, it has no explanation of its own")
        return None
    o = ctx.options or FixedGridOptions()
    n = o.grid_size or ctx.cfg.grid_size
    grids, classes = fixed_grids(ctx.test_data, n, o.n_grids, o.seed)
    df = score_grids(ctx.model, grids, classes, "own", n, ctx.cfg.smooth, ctx.cfg.batch_size, ctx.device)
    summary = {"mean": float(df["score"].mean()), "mean_unsmoothed": float(df["score_unsmoothed"].mean()),
               "n": int(len(df)), "n_grids": o.n_grids, "grid_size": n, "seed": o.seed}
    ctx.log(f"fixed_grid_localisation: {summary['mean']:.3f} ({o.n_grids} grids of {n}×{n})")
    return MetricResult(summary=summary, tables={"fixed_grid_localisation": df})


register_metric(Metric("fixed_grid_localisation", fixed_grid_localisation, FixedGridOptions,
                       "grid pointing game of the own explanation on grids drawn from all test images (the same "
                       "grids for every model and epoch: B-cosification's per-epoch curves)"))
