"""B-cosification (Arya, Rao, Böhle, Schiele; NeurIPS 2024): a trained conventional network,
converted into a B-cos network (:func:`bcos_lib.bcosify.bcosify`) and fine-tuned briefly,
reaches the accuracy of a B-cos network trained from scratch in a fraction of the epochs
(paper: 4.7× fewer for DenseNet-121, 9× for ViT-S on ImageNet), with on-par localisation.

In the pipeline a B-cosified model is an entry with ``arch: bcosified`` that names the trained
model it starts from (``init_from: std_cnn``): :func:`init` converts that model, and the
builder :func:`bcosified` rebuilds the converted structure so that the saved model loads.
``options`` (:class:`BcosificationOptions`) set the conversion and the fine-tuning schedule:
B fixed (the paper's choice) or rising linearly from ``b_start``; biases removed (the paper)
or kept and faded out linearly over fine-tuning.

The experiment (group ``bcosification``): the B-cosified ``std_cnn``, fine-tuned, against the
B-cos CNN of the same shape trained from scratch; accuracy and localisation after every epoch
(``train.epoch_metrics: [fixed_grid_localisation]``: the own explanation on grids that are the
same for every model and epoch), the curves (:func:`plot_bcosification`) and the speed-up
(:func:`speedup`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..bcosify import bcosify
from ..layers.bcosified import set_b, set_bias_scale
from ..registry import create_model, register_model
from . import (EvalContext, Method, Metric, MetricResult, ModelResult, StepInfo, StepOutput, TrainHooks,
               register_method, register_metric, results_of)

__all__ = ["BcosificationOptions", "bcosified", "init", "training", "FixedGridOptions", "fixed_grid_localisation",
           "fixed_grids", "epochs_to_reach", "speedup", "plot_bcosification", "report", "figures", "GROUP"]

NAME = "B-cosification"
PAPER = "Arya, Rao, Böhle, Schiele: B-cosification: Transforming Deep Neural Networks to be Inherently Interpretable (NeurIPS 2024)"
GROUP = "bcosification"   # params.yaml group of the experiment's two models


# ----------------------------------------------------------------------------- the model
@register_model
def bcosified(num_classes: int = 10, image_channels: int = 1, source_arch: str = "std_cnn",
              source_kwargs: dict[str, Any] | None = None, b: float = 2.0, keep_bias: bool = False,
              max_pool: str = "avg", loss: str = "bce", logit_bias: float | None = None) -> nn.Module:
    """The B-cosified ``source_arch`` (a registered conventional model, or ``torchvision.<name>``,
    e.g. ``torchvision.resnet18``), built with ``source_kwargs``; random weights (a trained model
    is converted by :func:`init`, and a saved one is rebuilt by this builder and then loaded).
    ``b``, ``keep_bias``, ``max_pool``, ``loss``, ``logit_bias``: see :func:`bcos_lib.bcosify.bcosify`."""
    kwargs = dict(source_kwargs or {})
    if source_arch.startswith("torchvision."):
        import torchvision
        name = source_arch.split(".", 1)[1]
        if name not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"source_arch {source_arch!r}: torchvision has no classification model {name!r}")
        source = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return bcosify(source, b, keep_bias, max_pool, logit_bias=logit_bias, loss=loss, image_channels=image_channels)
    source = create_model(source_arch, num_classes=num_classes, image_channels=image_channels, **kwargs)
    return bcosify(source, b, keep_bias, max_pool, logit_bias=logit_bias, loss=loss)


@dataclass
class BcosificationOptions:
    """``models.<key>.options`` of a B-cosified model (B-cosification §3)."""

    b: float = 2.0            # B after conversion (and at the end of fine-tuning)
    b_start: float = 0.0      # ≥ 1: B rises linearly from b_start to b over fine-tuning; 0: B = b throughout
    keep_bias: bool = False   # keep the biases and fade them linearly to 0 over fine-tuning (else removed at once)
    max_pool: str = "avg"     # avg (the paper) | keep
    loss: str = "bce"         # the fine-tuning loss (bce: as B-cos networks; ce: as the source)

    def __post_init__(self) -> None:
        from ..config import ConfigError
        if not (math.isfinite(self.b) and self.b >= 1):
            raise ConfigError(f"options.b: B must be a number ≥ 1 (got {self.b})")
        if self.b_start and not 1 <= self.b_start <= self.b:
            raise ConfigError(f"options.b_start: must be 0 (B fixed) or in [1, b = {self.b}] (got {self.b_start})")
        if self.max_pool not in ("avg", "keep"):
            raise ConfigError(f"options.max_pool: 'avg' or 'keep' (got {self.max_pool!r})")
        if self.loss not in ("bce", "ce"):
            raise ConfigError(f"options.loss: 'bce' or 'ce' (got {self.loss!r})")


def init(parent: nn.Module, options: BcosificationOptions | None) -> nn.Module:
    """The B-cosified copy of the trained ``parent``, recording how :func:`bcosified` rebuilds it."""
    opts = options or BcosificationOptions()
    name = getattr(parent, "model_name", None)
    if name is None:
        raise ValueError("B-cosification starts from a model made by bcos_lib.create_model (a pipeline model "
                         f"named by init_from); got a {type(parent).__name__} without model_name")
    source_kwargs = {k: v for k, v in parent.model_kwargs.items() if k not in ("num_classes", "image_channels")}
    model = bcosify(parent, opts.b, opts.keep_bias, opts.max_pool, loss=opts.loss)
    if opts.b_start:
        set_b(model, opts.b_start)
    model.model_name = "bcosified"
    model.model_kwargs = {"num_classes": parent.num_classes, "image_channels": parent.image_channels,
                          "source_arch": name, "source_kwargs": source_kwargs, "b": opts.b,
                          "keep_bias": opts.keep_bias, "max_pool": opts.max_pool, "loss": opts.loss}
    return model


def schedule(options: BcosificationOptions, info: StepInfo) -> tuple[float, float]:
    """(B, bias scale) at a training step: linear in the fraction of fine-tuning done, reaching
    (b, 0) at the last step, so the saved model is the one its builder describes."""
    done = (info.step + 1) / max(1, info.total_steps)
    b = options.b_start + (options.b - options.b_start) * done if options.b_start else options.b
    return b, (1.0 - done) if options.keep_bias else 0.0


def training(model: nn.Module, options: BcosificationOptions | None, train_cfg: Any) -> TrainHooks:
    """The B and bias schedules (nothing to add when B is fixed and the biases are gone)."""
    opts = options or BcosificationOptions()
    if not opts.b_start and not opts.keep_bias:
        return TrainHooks()

    def step(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> StepOutput:
        from ..train import default_step
        b, bias_scale = schedule(opts, info)
        set_b(model, b)
        if opts.keep_bias:
            set_bias_scale(model, bias_scale)
        out = default_step(model, x, y, info)
        out.terms.update(b=b, bias_scale=bias_scale)
        return out

    return TrainHooks(step=step)


# ----------------------------------------------------------------------------- localisation on fixed grids
@dataclass
class FixedGridOptions:
    """``evaluate.options.fixed_grid_localisation``."""

    n_grids: int = 100    # grids (the same for every model and epoch)
    grid_size: int = 0    # 0: evaluate.grid_size
    seed: int = 1         # the grids' draw (independent of base.seed's grids of the localisation metric)

    def __post_init__(self) -> None:
        from ..config import ConfigError
        if self.n_grids < 1 or self.grid_size < 0:
            raise ConfigError(f"options: n_grids must be ≥ 1 and grid_size ≥ 0 (got {self.n_grids}, {self.grid_size})")


def fixed_grids(test_data: Any, n: int, n_grids: int, seed: int) -> tuple[Tensor, Tensor]:
    """Grids of n² distinct classes drawn from *all* test images (not a model's confident pool),
    so that every model and every epoch is scored on the same grids."""
    from ..metrics import make_grids
    pool = {c: torch.nonzero(test_data.labels == c).flatten() for c in range(test_data.num_classes)}
    return make_grids(test_data, pool, n, n_grids, seed)


def fixed_grid_localisation(ctx: EvalContext) -> MetricResult | None:
    """Grid pointing game of the own explanation on :func:`fixed_grids` (mean score, and per cell)."""
    from ..metrics import score_grids
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


# ----------------------------------------------------------------------------- the speed-up
def epochs_to_reach(history: pd.DataFrame, target: float, start: float, column: str = "test_accuracy") -> float | None:
    """The (linearly interpolated) number of epochs after which ``history[column]`` first reaches
    ``target``; the curve starts at (0, ``start``).  None if it never does."""
    epochs = [0.0] + history["epoch"].astype(float).tolist()
    values = [start] + history[column].astype(float).tolist()
    for (e0, v0), (e1, v1) in zip(zip(epochs, values), zip(epochs[1:], values[1:])):
        if v1 >= target:
            return e1 if v1 == v0 or v0 >= target else e0 + (e1 - e0) * (target - v0) / (v1 - v0)
    return None


def speedup(scratch: pd.DataFrame, converted: pd.DataFrame, num_classes: int = 10,
            scratch_seconds_per_epoch: float | None = None,
            converted_seconds_per_epoch: float | None = None) -> dict[str, Any]:
    """How much sooner the B-cosified model reaches the from-scratch B-cos model's final accuracy.

    target = the from-scratch model's last test accuracy; epochs = when each curve first reaches
    it (both start at chance level at epoch 0: a conservative start for the converted model, whose
    accuracy right after conversion is not recorded).  ratio = scratch epochs / converted epochs
    (B-cosification §4: 4.7× for DenseNet-121); None where the converted model never gets there."""
    target = float(scratch["test_accuracy"].iloc[-1])
    chance = 100.0 / num_classes
    e_s = epochs_to_reach(scratch, target, chance)
    e_c = epochs_to_reach(converted, target, chance)
    out: dict[str, Any] = {"target_accuracy": target, "scratch_epochs": e_s, "bcosified_epochs": e_c,
                           "ratio": (e_s / e_c) if e_s and e_c else None,
                           "bcosified_final_accuracy": float(converted["test_accuracy"].iloc[-1])}
    if scratch_seconds_per_epoch and converted_seconds_per_epoch and e_s and e_c:
        out["scratch_seconds"] = e_s * scratch_seconds_per_epoch
        out["bcosified_seconds"] = e_c * converted_seconds_per_epoch
        out["seconds_ratio"] = out["scratch_seconds"] / out["bcosified_seconds"]
    return out


def _pair(results: Mapping[str, ModelResult]) -> tuple[ModelResult | None, ModelResult | None]:
    """(from-scratch, B-cosified) of the experiment's group, or None where one is missing."""
    group = list(results_of(results, group=GROUP))
    converted = next((r for r in group if r.method == NAME and r.history is not None), None)
    scratch = next((r for r in group if r.method != NAME and r.history is not None), None)
    return scratch, converted


def _images_per_epoch(r: ModelResult) -> float | None:
    n = (r.train or {}).get("n_train")
    return float(n) if n else None


def plot_bcosification(curves: Mapping[str, pd.DataFrame], target: float | None = None) -> Any:
    """Test accuracy (and, where recorded, localisation on the fixed grids) per epoch; one curve per
    model label.  ``target``: the from-scratch final accuracy, drawn as a line."""
    import matplotlib.pyplot as plt
    col = "fixed_grid_localisation_mean"   # the history column of train.epoch_metrics: [fixed_grid_localisation]
    has_loc = any(col in h and h[col].notna().any() for h in curves.values())
    fig, axes = plt.subplots(1, 2 if has_loc else 1, figsize=(9 if has_loc else 4.8, 3.3), squeeze=False)
    a = axes[0, 0]
    for label, h in curves.items():
        a.plot(h["epoch"], h["test_accuracy"], marker="o", label=label)
    if target is not None:
        a.axhline(target, ls="--", color="tab:gray", lw=1, label="from-scratch final accuracy")
    a.set(xlabel="epoch", ylabel="test accuracy (%)", title="B-cosified vs from scratch")
    a.legend(fontsize=7)
    if has_loc:
        b = axes[0, 1]
        for label, h in curves.items():
            if col in h:
                b.plot(h["epoch"], h[col], marker="o", label=label)
        b.set(xlabel="epoch", ylabel="localisation (own explanation)", title="grid pointing game, fixed grids",
              ylim=(0, 1))
    fig.tight_layout()
    from ..figures import finished
    return finished(fig)


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    scratch, converted = _pair(results)
    if scratch is None or converted is None:
        return {}
    curves = {scratch.label: scratch.history, converted.label: converted.history}
    return {"bcosification": plot_bcosification(curves, float(scratch.history["test_accuracy"].iloc[-1]))}


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def report(results: Mapping[str, ModelResult]) -> str:
    """The experiment's table: accuracy, localisation and the speed-up, beside the paper's."""
    from ..paper import BCOSIFICATION_SPEEDUP
    scratch, converted = _pair(results)
    if scratch is None or converted is None:
        return ""
    n_classes = int(converted.entry.kwargs.get("num_classes", 10))  # chance level = the curves' start
    s = speedup(scratch.history, converted.history, n_classes)
    img_s, img_c = _images_per_epoch(scratch), _images_per_epoch(converted)
    rows = []
    for r, start in ((scratch, "random init"), (converted, f"`{converted.entry.init_from}` (trained), converted")):
        loc = (r.metric("localisation") or {}).get("methods", {}).get("own", {}).get("mean")
        fixed = (r.metric("fixed_grid_localisation") or {}).get("mean")
        rows.append(f"| `{r.key}` | {r.label} | {start} | {len(r.history)} | "
                    f"{_fmt(float(r.history['test_accuracy'].iloc[-1]))} | {_fmt(loc, 3)} | {_fmt(fixed, 3)} |")
    paper = ", ".join(f"{k} {v}×" for k, v in BCOSIFICATION_SPEEDUP.items())
    reached = (f"**{s['ratio']:.1f}× fewer**" if s["ratio"] else
               f"**not reached** in its {len(converted.history)} epoch(s)")
    lines = ["### B-cosification (fine-tuned conversion vs B-cos from scratch)", "",
             "| model | | starts from | epochs | test accuracy (%) | localisation (own) | fixed-grid localisation |",
             "|---|---|---|---|---|---|---|", *rows, "",
             f"Epochs to reach the from-scratch accuracy ({s['target_accuracy']:.2f} %): from scratch "
             f"{_fmt(s['scratch_epochs'])}, B-cosified {_fmt(s['bcosified_epochs'])}: {reached} "
             f"(paper, ImageNet: {paper})."]
    if img_s and img_c and s["ratio"]:
        lines.append(f"In training images seen: {s['scratch_epochs'] * img_s:,.0f} from scratch, "
                     f"{s['bcosified_epochs'] * img_c:,.0f} for the B-cosified model (not counting the "
                     f"{converted.entry.init_from} it starts from).")
    return "\n".join(lines) + "\n"


register_metric(Metric("fixed_grid_localisation", fixed_grid_localisation, FixedGridOptions,
                       "grid pointing game of the own explanation on grids drawn from all test images (the same "
                       "grids for every model and epoch: B-cosification's per-epoch curves)"))

register_method(Method(name=NAME, paper=PAPER, models=("bcosified",), options=BcosificationOptions,
                       training=training, init=init, figures=figures, report=report, order=20))
