"""The margin study: how far a B-cos network's own explanation localises ahead of post-hoc
explanations (CoDA Nets §5.1; B-cos v1 §5.2), over training and across the levers the papers
name — training length, B, the logit temperature T, MaxOut and the ``[x, 1 − x]`` encoding.

The study's models are ordinary B-cos and standard CNNs (``group: margin`` in params.yaml),
so this method adds no model and no training.  It registers one metric,
``tracked_localisation``: the grid pointing game on grids that stay *fixed* over training,
which the models run after every epoch (``train.epoch_metrics``; history.csv columns
``tracked_localisation_<attribution>``).  Its figure and report section draw those curves and the
margin of each B-cos model's own explanation over the best post-hoc curve of the group's
standard CNN.

Design: a metric run per epoch through the shared ``train.epoch_metrics`` option, rather
than per-epoch checkpoints evaluated afterwards (six models × epochs of files) or a method
of its own (the models would stop being plain B-cos/standard models).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...explain import config_options, get_attribution, list_attributions
from ...core.contract import EvalContext, Metric, MetricResult
from ...layers.explanation_mode import is_explainable
from ...core.registry import register_metric
from ...core.config import ranged


@dataclass
class TrackedLocalisationOptions:
    attributions: list[str] = field(default_factory=lambda: ["own", "gradcam"])
    n_grids: int = ranged(30, ge=1)

    def __post_init__(self) -> None:
        from ...core.config import ConfigError
        unknown = [m for m in self.attributions if m not in list_attributions()]
        if unknown or not self.attributions:
            raise ConfigError(f"evaluate.options.tracked_localisation.attributions: unknown or no attribution(s) "
                              f"{unknown}; known: {', '.join(list_attributions())}")
        if self.n_grids < 1:
            raise ConfigError(f"evaluate.options.tracked_localisation.n_grids must be ≥ 1 (got {self.n_grids})")


def tracked_localisation(ctx: EvalContext) -> MetricResult | None:
    """Mean grid-pointing-game score of each attribution on ``n_grids`` grids drawn with the seed
    from *every* test image of each class: no confidence filter, because the model's
    confident pool changes from epoch to epoch and the curves must compare like with like.
    Grid size, smoothing and attribution options are the model's evaluate section.  Summary:
    ``{attribution: mean}`` (flat, so that ``train.epoch_metrics`` writes one history column each)."""
    from ...metrics import make_grids, score_grids
    o = ctx.options or TrackedLocalisationOptions()
    cfg, n, ds = ctx.cfg, ctx.cfg.grid_size, ctx.test_data
    pool = {c: torch.nonzero(ds.labels == c).flatten() for c in range(ds.num_classes)}
    grids, classes = make_grids(ds, pool, n, o.n_grids, ctx.seed)
    out = {}
    for m in o.attributions:
        if get_attribution(m).needs_dynamic_linear and not is_explainable(ctx.model):
            continue
        df = score_grids(ctx.model, grids, classes, m, n, cfg.smooth, cfg.batch_size, ctx.device,
                         **config_options(m, cfg))
        out[m] = float(df["score"].mean())
    return MetricResult(out) if out else None


register_metric(Metric("tracked_localisation", tracked_localisation, TrackedLocalisationOptions,
                       description="grid pointing game on fixed grids from all test images (for curves over "
                                   "training, via train.epoch_metrics)"))
