"""The margin study: how far a B-cos network's own explanation localises ahead of post-hoc
explanations (CoDA Nets §5.1; B-cos v1 §5.2), over training and across the levers the papers
name — training length, B, the logit temperature T, MaxOut and the ``[x, 1 − x]`` encoding.

The study's models are ordinary B-cos and standard CNNs (``group: margin`` in params.yaml),
so this method adds no model and no training.  It registers one metric,
``tracked_localisation``: the grid pointing game on grids that stay *fixed* over training,
which the models run after every epoch (``train.epoch_metrics``; history.csv columns
``tracked_localisation_<method>``).  Its figure and report section draw those curves and the
margin of each B-cos model's own explanation over the best post-hoc curve of the group's
standard CNN.

Design: a metric run per epoch through the shared ``train.epoch_metrics`` option, rather
than per-epoch checkpoints evaluated afterwards (six models × epochs of files) or a method
of its own (the models would stop being plain B-cos/standard models).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..attribution import config_options, get_attribution, list_attributions, method_label
from ..layers.explanation_mode import is_explainable
from . import EvalContext, Method, Metric, MetricResult, ModelResult, register_method, register_metric, results_of

GROUP = "margin"
PREFIX = "tracked_localisation_"


@dataclass
class TrackedLocalisationOptions:
    methods: list[str] = field(default_factory=lambda: ["own", "gradcam"])
    n_grids: int = 30

    def __post_init__(self) -> None:
        from ..config import ConfigError
        unknown = [m for m in self.methods if m not in list_attributions()]
        if unknown or not self.methods:
            raise ConfigError(f"evaluate.options.tracked_localisation.methods: unknown or no method(s) {unknown}; "
                              f"known: {', '.join(list_attributions())}")
        if self.n_grids < 1:
            raise ConfigError(f"evaluate.options.tracked_localisation.n_grids must be ≥ 1 (got {self.n_grids})")


def tracked_localisation(ctx: EvalContext) -> MetricResult | None:
    """Mean grid-pointing-game score of each method on ``n_grids`` grids drawn with the seed
    from *every* test image of each class: no confidence filter, because the model's
    confident pool changes from epoch to epoch and the curves must compare like with like.
    Grid size, smoothing and attribution options are the model's evaluate section.  Summary:
    ``{method: mean}`` (flat, so that ``train.epoch_metrics`` writes one history column each)."""
    from ..metrics import make_grids, score_grids
    o = ctx.options or TrackedLocalisationOptions()
    cfg, n, ds = ctx.cfg, ctx.cfg.grid_size, ctx.test_data
    pool = {c: torch.nonzero(ds.labels == c).flatten() for c in range(ds.num_classes)}
    grids, classes = make_grids(ds, pool, n, o.n_grids, ctx.seed)
    out = {}
    for m in o.methods:
        if get_attribution(m).needs_dynamic_linear and not is_explainable(ctx.model):
            continue
        df = score_grids(ctx.model, grids, classes, m, n, cfg.smooth, cfg.batch_size, ctx.device,
                         **config_options(m, cfg))
        out[m] = float(df["score"].mean())
    return MetricResult(out) if out else None


def _series(r: ModelResult) -> dict[str, Any]:
    """{method: (epochs, scores)} from a model's history."""
    h = r.history
    if h is None:
        return {}
    return {c[len(PREFIX):]: (h["epoch"].to_numpy(), h[c].to_numpy()) for c in h.columns if c.startswith(PREFIX)}


def _best_posthoc(models: list[ModelResult]) -> tuple[str, str, Any] | None:
    """(model key, method, (epochs, scores)) of the post-hoc curve that ends highest among the
    group's models without an own explanation."""
    best = None
    for r in models:
        for m, (ep, sc) in _series(r).items():
            if m != "own" and (best is None or sc[-1] > best[2][1][-1]):
                best = (r.key, m, (ep, sc))
    return best


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    models = list(results_of(results, group=GROUP))
    if not any(_series(r) for r in models):
        return {}
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    post = [r for r in models if "own" not in _series(r)]
    best = _best_posthoc(post)
    for r in models:
        s = _series(r)
        if "own" in s:
            ep, sc = s["own"]
            line, = ax.plot(ep, sc, marker="o", label=f"{r.label or r.key}: own")
            if best is not None:
                bep, bsc = best[2]
                k = min(len(sc), len(bsc))
                ax2.plot(ep[:k], sc[:k] - bsc[:k], marker="o", color=line.get_color(), label=r.label or r.key)
        for m, (ep, sc) in s.items():
            if m != "own" and r in post:
                ax.plot(ep, sc, ls="--", marker="s", label=f"{r.label or r.key}: {method_label(m)}")
    ax.set(xlabel="epoch", ylabel="localisation (fixed grids)", title="own explanation vs post-hoc, per epoch")
    ax.legend(fontsize=7)
    ax2.axhline(0.1, color="grey", ls=":", lw=1, label="target margin 0.1")
    ax2.axhline(0, color="black", lw=0.5)
    title = f"margin over {method_label(best[1])} on `{best[0]}`" if best else "margin"
    ax2.set(xlabel="epoch", ylabel="own − best post-hoc", title=title)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return {"margin": fig}


def report(results: Mapping[str, ModelResult]) -> str:
    models = list(results_of(results, group=GROUP))
    post = [r for r in models if _series(r) and "own" not in _series(r)]
    best = _best_posthoc(post)
    rows = []
    for r in models:
        s = _series(r)
        if "own" not in s:
            continue
        ep, sc = s["own"]
        margin = "–" if best is None else f"{sc[-1] - best[2][1][-1]:+.3f}"
        kw = r.entry.kwargs
        rows.append(f"| `{r.key}` | {kw.get('b', '–')} | {kw.get('logit_temperature', '–')} | {kw.get('max_out', '–')} "
                    f"| {kw.get('encoding', 'add_inverse')} | {int(ep[-1])} | {sc[-1]:.3f} | {margin} |")
    if not rows:
        return ""
    ref = "" if best is None else (f" The reference is the best post-hoc curve of the group's standard CNN: "
                                   f"{method_label(best[1])} on `{best[0]}`, {best[2][1][-1]:.3f} after the last epoch.")
    return ("### Margin study: own explanation against the best post-hoc method, over training\n\n"
            "Localisation on the same fixed grids after every epoch (drawn from all test images, so the "
            f"scores differ from the table above, which uses each model's confident pool).{ref}\n\n"
            "| model | B | T | MaxOut | encoding | epochs | own | margin |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n![margin](figures/margin.png)")


register_metric(Metric("tracked_localisation", tracked_localisation, TrackedLocalisationOptions,
                       description="grid pointing game on fixed grids from all test images (for curves over "
                                   "training, via train.epoch_metrics)"))
register_method(Method(name="margin", paper="CoDA Nets (CVPR 2021) §5.1; B-cos v1 (CVPR 2022) §5.2",
                       figures=figures, report=report, order=90))
