"""CoDA Nets' metric: ``dau_input_localisation``, the grid pointing game at the input of a
hybrid's first DAU layer (CoDA §5: "interpretable depth"), own explanation against Grad-CAM at
the same layer."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.contract import EvalContext, Metric, MetricResult
from ...core.utils import evaluating
from ...models.base import prepare_input
from ...core.registry import register_metric
from ...core.config import ranged
from .model import CoDAHybrid


# ----------------------------------------------------------------------------- the hybrid's explanation
def explain_at_dau_input(model: CoDAHybrid, x: Tensor, targets: Tensor, upsample: bool = True):
    """The hybrid's exact explanation at the input h of its first DAU layer, for model inputs ``x``.

    Returns the :class:`bcos_lib.explain.Explanation` of :meth:`CoDAHybrid.dau_part` for h (its
    contributions ``W(h) ⊙ h`` sum to logit − b) and the contribution map summed over h's channels,
    (N, T, H, W) — bilinearly upsampled to the input size with ``upsample`` (as captum upsamples
    Grad-CAM), else at h's resolution.
    """
    from ...explain import explain

    if not isinstance(model, CoDAHybrid):
        raise TypeError(f"explain_at_dau_input needs a CoDA hybrid (coda_hybrid), got {type(model).__name__}")
    with evaluating(model):
        with torch.no_grad():
            h = model.stem(x)
    e = explain(model.dau_part(), h, targets, colour=False)
    maps = e.contribution_map.detach()
    if upsample and maps.shape[-2:] != x.shape[-2:]:
        n, t = maps.shape[:2]
        maps = F.interpolate(maps.flatten(0, 1).unsqueeze(1), size=x.shape[-2:], mode="bilinear").view(n, t,
                                                                                                         *x.shape[-2:])
    return e, maps


@dataclass
class DAUInputLocalisationOptions:
    """``evaluate.options.dau_input_localisation``: how many grids (0: ``evaluate.n_grids``) and which maps."""

    n_grids: int = ranged(0, ge=0)
    attributions: list[str] = field(default_factory=lambda: ["own", "gradcam"])

    def __post_init__(self) -> None:
        bad = [m for m in self.attributions if m not in ("own", "gradcam")]
        if bad or not self.attributions:
            raise ValueError(f"dau_input_localisation.attributions: choose from 'own' and 'gradcam' "
                             f"(got {self.attributions})")
        if self.n_grids < 0:
            raise ValueError(f"dau_input_localisation.n_grids must be ≥ 0 (got {self.n_grids})")


def dau_input_localisation(ctx: EvalContext) -> MetricResult | None:
    """The grid pointing game at the input of the first DAU layer of a hybrid (CoDA §5).

    The same grids as the shared localisation (:func:`bcos_lib.metrics.confident_pool` and
    :func:`~bcos_lib.metrics.make_grids` with the run's seed); "own" = Σ_channels W(h) ⊙ h of the
    DAU part, "gradcam" = Grad-CAM at the stem's output (the same layer); both upsampled
    bilinearly to the grid and scored with :func:`~bcos_lib.metrics.localisation_scores`.
    """
    from ...explain import attribute
    from ...metrics import confident_pool, localisation_scores, make_grids

    model, cfg = ctx.model, ctx.cfg
    if not isinstance(model, CoDAHybrid):
        ctx.log(f"dau_input_localisation: {type(model).__name__} has no conventional stem before its DAUs "
                "(only coda_hybrid models); skipped")
        return None
    opts = ctx.options or DAUInputLocalisationOptions()
    n = cfg.grid_size
    n_grids = opts.n_grids or cfg.n_grids
    pool = confident_pool(model, ctx.test_data, cfg.min_confidence, cfg.batch_size * n * n, ctx.device)
    grids, classes = make_grids(ctx.test_data, pool, n, n_grids, ctx.seed)
    rows, summary = [], {"layer": model.dau_input_layer, "n_grids": int(len(grids)), "grid_size": int(n)}
    for attribution in opts.attributions:
        scores = []
        for i in range(0, len(grids), max(1, cfg.batch_size)):
            x = prepare_input(model, grids[i:i + cfg.batch_size].to(ctx.device))
            t = classes[i:i + cfg.batch_size].to(ctx.device)
            if attribution == "own":
                maps = explain_at_dau_input(model, x, t)[1]
            else:
                maps = attribute(model, x, t, "gradcam", layer=model.dau_input_layer)
            scores.append(localisation_scores(maps, n, cfg.smooth).cpu())
        s = torch.cat(scores).double()
        summary[attribution] = float(s.mean())
        rows.append(pd.DataFrame({"grid": np.repeat(np.arange(len(s)), s.shape[1]),
                                  "cell": np.tile(np.arange(s.shape[1]), len(s)),
                                  "target": classes[:len(s)].reshape(-1).numpy(),
                                  "score": s.reshape(-1).numpy(), "attribution": attribution}))
        ctx.log(f"dau_input_localisation: {attribution:<8} {summary[attribution]:.3f} at {model.dau_input_layer} "
                f"({len(s)} grids)")
    return MetricResult(summary=summary, tables={"dau_input_localisation": pd.concat(rows, ignore_index=True)})


# ----------------------------------------------------------------------------- figures and report


register_metric(Metric("dau_input_localisation", dau_input_localisation, DAUInputLocalisationOptions,
                       "grid pointing game at the input of a hybrid's first DAU layer: own explanation vs Grad-CAM"))
