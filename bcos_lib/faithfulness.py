"""Faithfulness metrics beside pixel deletion: insertion, ROAD and faithfulness correlation.

Each is registered as an evaluate metric and run for every attribution of the model
(``evaluate.attributions``, own explanation included where the model has one) plus a random
ranking, on a few test images (``evaluate.options.<metric>.n_images``), each explained for
its predicted class.

- **insertion** (Petsiuk et al. 2018, RISE §4.1): the reverse of pixel deletion — start
  from the black image and put the pixels back, most important first; the probability of
  the predicted class should rise fast (area under the curve: higher is better).
  Implemented here (:func:`bcos_lib.metrics.pixel_deletion` with ``insertion=True``) and
  cross-checked against Quantus' ``PixelFlipping`` loop with an inserting perturbation.
- **ROAD** (Rong et al. 2022, "A consistent and efficient evaluation strategy for
  attribution methods", §4): remove a share p of the pixels, most relevant first (MoRF) or
  least relevant first (LeRF), and fill them by *noisy linear imputation* (each removed
  pixel the weighted mean of its 8 neighbours, weights 1/6 and 1/12, solved jointly, plus
  Gaussian noise) so that the removal itself leaks no shape; the score is the share of
  images still classified as before.  MoRF: lower is better; LeRF: higher is better.
  Computed by Quantus' ``ROAD``.
- **faithfulness correlation** (Bhatt et al. 2020, IJCAI §4.1): for random subsets of the
  pixels, the Pearson correlation between the attribution summed over the subset and the
  drop of the predicted class's probability when the subset is set to 0; higher is better.
  Computed by Quantus' ``FaithfulnessCorrelation``.

The model seen by Quantus takes images in [0, 1] and returns the class probabilities the
project uses everywhere (sigmoid for BCE models, softmax otherwise), so its input encoding
and its loss stay inside (``softmax=False`` on the Quantus side).  Quantus draws its random
subsets and imputation noise from NumPy's global generator; each call seeds it from the
evaluate seed and restores its state afterwards.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .core.config import ranged
from .core.contract import EvalContext, Metric, MetricResult
from .core.data import ImageDataset
from .core.registry import register_metric
from .explain import attribute, config_options, list_attributions, quiet_evaluation
from .models.base import prepare_input

__all__ = ["ImageSpaceProbabilities", "faithfulness_sample", "explanation_maps", "road_curve",
           "faithfulness_correlation", "InsertionOptions", "RoadOptions", "FaithfulnessCorrelationOptions"]


class ImageSpaceProbabilities(nn.Module):
    """``model`` as a map from images in [0, 1] to class probabilities (for Quantus).

    Inputs are clipped to [0, 1] first: ROAD's imputation noise can step just outside, and a
    B-cos model rejects such inputs (its ``[x, 1 − x]`` encoding needs them in range)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        from .metrics import class_probabilities
        images = images.clamp(0, 1).to(next(self.model.parameters()).dtype)
        return class_probabilities(self.model, self.model(prepare_input(self.model, images)))


def faithfulness_sample(ds: ImageDataset, n_images: int, seed: int) -> Tensor:
    """The indices of the images the faithfulness metrics use: the first ``n_images`` of a
    permutation drawn with ``seed`` (the images pixel deletion uses, for the same settings)."""
    if n_images < 1:
        raise ValueError(f"n_images must be ≥ 1 (got {n_images})")
    return torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n_images]


def explanation_maps(model: nn.Module, images: Tensor, attribution: str, seed: int = 0, batch_size: int = 64,
                     device: torch.device | str = "cpu", **attribution_opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Attribution maps (N, 1, H, W) of ``attribution`` for the predicted classes (N,), as float64 arrays.

    ``attribution="random"``: uniform noise drawn with ``seed`` (the baseline ranking)."""
    if attribution != "random" and attribution not in list_attributions():
        raise ValueError(f"unknown attribution {attribution!r}; known: {', '.join(list_attributions())}, "
                         "random")
    maps, preds = [], []
    gen = torch.Generator().manual_seed(seed + 1)
    with quiet_evaluation(model):
        for i in range(0, len(images), max(1, batch_size)):
            x = images[i:i + batch_size].to(device)
            with torch.no_grad():
                predicted = model(prepare_input(model, x)).argmax(1)
            if attribution == "random":
                m = torch.rand(len(x), *x.shape[2:], generator=gen)
            else:
                m = attribute(model, prepare_input(model, x), predicted, attribution, **attribution_opts)[:, 0]
            maps.append(m.detach().double().cpu())
            preds.append(predicted.cpu())
    return torch.cat(maps).unsqueeze(1).numpy(), torch.cat(preds).numpy()


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (Quantus draws from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        np.random.set_state(state)


def _nonnegative(maps: np.ndarray) -> np.ndarray:
    """Each map minus its minimum: the same ranking, and the same faithfulness correlation (a
    subset of fixed size gains the same constant), but never all negative, which Quantus rejects."""
    return maps - maps.min(axis=(1, 2, 3), keepdims=True)


def _degenerate(maps: np.ndarray) -> bool:
    """True when every map is constant: there is no ranking to evaluate."""
    return bool(np.all(np.ptp(maps.reshape(len(maps), -1), axis=1) == 0))


def road_curve(model: nn.Module, images: Tensor, maps: np.ndarray, predicted: np.ndarray, percentages: list[float],
               order: str = "morf", noise: float = 0.01, seed: int = 0,
               device: torch.device | str = "cpu") -> np.ndarray:
    """ROAD (Quantus): for each percentage, the share of the images still classified as
    ``predicted`` after that share of their pixels is imputed, most relevant first
    (``order="morf"``) or least relevant first (``"lerf"``).

    All images go to Quantus in one batch: its ``ROAD`` (0.6.0) averages only the first
    batch's results when it summarises.
    """
    import quantus
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf' (got {order!r})")
    metric = quantus.ROAD(percentages=list(percentages), noise=noise, normalise=False, abs=False,
                          disable_warnings=True, display_progressbar=False)
    # LeRF: the ranking reversed; both shifted to ≥ 0 per image (same order; Quantus rejects
    # attributions that are all negative)
    a = _nonnegative(maps if order == "morf" else -maps)
    with quiet_evaluation(model), _numpy_seed(seed):
        out = metric(model=ImageSpaceProbabilities(model).eval(), x_batch=images.double().numpy(),
                     y_batch=predicted, a_batch=a, channel_first=True, softmax=False, device=str(device),
                     batch_size=len(images))
    return np.array([float(out[p]) for p in percentages])


def faithfulness_correlation(model: nn.Module, images: Tensor, maps: np.ndarray, predicted: np.ndarray,
                             nr_runs: int = 50, subset_size: int = 78, seed: int = 0,
                             device: torch.device | str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Faithfulness correlation (Quantus) per image: Pearson r between the attribution summed
    over ``nr_runs`` random subsets of ``subset_size`` pixels and the probability drop when
    they are set to 0 (NaN where either is constant)."""
    import quantus
    metric = quantus.FaithfulnessCorrelation(nr_runs=nr_runs, subset_size=subset_size, perturb_baseline=0.0,
                                             normalise=False, abs=False, return_aggregate=False,
                                             disable_warnings=True, display_progressbar=False)
    with quiet_evaluation(model), _numpy_seed(seed):
        out = metric(model=ImageSpaceProbabilities(model).eval(), x_batch=images.double().numpy(),
                     y_batch=predicted, a_batch=_nonnegative(maps), channel_first=True, softmax=False,
                     device=str(device),
                     batch_size=batch_size)
    return np.asarray(out, dtype=float)


# ----------------------------------------------------------------------------- as registered metrics
def _bad(metric: str, what: str) -> Exception:
    from .core.config import ConfigError
    return ConfigError(f"evaluate.options.{metric}: {what} (params.yaml, or a model's evaluate.options)")


def _check_attributions(metric: str, attributions: list[str]) -> None:
    known = set(list_attributions()) | {"random"}
    unknown = [m for m in attributions if m not in known]
    if unknown:
        raise _bad(metric, f"unknown attribution(s) {unknown} in `attributions`; "
                           f"known: {', '.join(sorted(known))}")


@dataclass
class InsertionOptions:
    attributions: list[str] = field(default_factory=list)   # [] = evaluate.attributions; "random" is always added
    n_images: int = ranged(32, ge=1)
    steps: int = ranged(10, ge=1)

    def __post_init__(self) -> None:
        _check_attributions("insertion", self.attributions)
        if self.n_images < 1 or self.steps < 1:
            raise _bad("insertion", f"n_images and steps must be ≥ 1 (got {self.n_images}, {self.steps})")


@dataclass
class RoadOptions:
    attributions: list[str] = field(default_factory=list)
    n_images: int = ranged(32, ge=1)
    percentages: list[float] = ranged(default_factory=lambda: [10.0, 30.0, 50.0, 70.0, 90.0], gt=0, lt=100)
    noise: float = ranged(0.01, ge=0)

    def __post_init__(self) -> None:
        _check_attributions("road", self.attributions)
        if self.n_images < 1:
            raise _bad("road", f"n_images must be ≥ 1 (got {self.n_images})")
        if not self.percentages or any(not 0 < p < 100 for p in self.percentages):
            raise _bad("road", f"percentages must be a non-empty list of numbers in (0, 100) (got {self.percentages})")
        if self.noise < 0:
            raise _bad("road", f"noise must be ≥ 0 (got {self.noise})")


@dataclass
class FaithfulnessCorrelationOptions:
    attributions: list[str] = field(default_factory=list)
    n_images: int = ranged(32, ge=1)
    nr_runs: int = ranged(50, ge=2)
    subset_fraction: float = ranged(0.1, gt=0, lt=1)   # share of the pixels in each random subset

    def __post_init__(self) -> None:
        _check_attributions("faithfulness_correlation", self.attributions)
        if self.n_images < 1 or self.nr_runs < 2 or not 0 < self.subset_fraction < 1:
            raise _bad("faithfulness_correlation", f"need n_images ≥ 1, nr_runs ≥ 2 and subset_fraction in (0, 1) "
                                                   f"(got {self.n_images}, {self.nr_runs}, {self.subset_fraction})")


def _attributions(ctx: EvalContext, requested: list[str]) -> tuple[list[str], dict[str, str]]:
    from .metrics import _applicable
    wanted = list(dict.fromkeys([*(requested or ctx.cfg.attributions), "random"]))
    skipped: dict[str, str] = {}
    return _applicable(ctx, wanted, skipped), skipped


def _maps(ctx: EvalContext, attribution: str, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    opts = config_options(attribution, ctx.cfg) if attribution != "random" else {}
    return explanation_maps(ctx.model, images, attribution, ctx.seed, ctx.cfg.batch_size * ctx.cfg.grid_size ** 2,
                            ctx.device, **opts)


def _ranking_maps(ctx: EvalContext, attribution: str, images: Tensor, skipped: dict[str, str],
                  metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_maps`, or None (recorded in ``skipped`` and logged) when every map is constant and
    so ranks no pixel."""
    maps, predicted = _maps(ctx, attribution, images)
    if _degenerate(maps):
        skipped[attribution] = "every attribution map is constant, so it ranks no pixel"
        ctx.log(f"evaluate: skipping {attribution!r} for {metric}: {skipped[attribution]}")
        return None
    return maps, predicted


def insertion_metric(ctx: EvalContext) -> MetricResult | None:
    """Insertion curves (most important first; random: the baseline) and their areas."""
    from .metrics import deletion_auc, pixel_deletion
    o = ctx.options or InsertionOptions()
    attributions, skipped = _attributions(ctx, o.attributions)
    frames, aucs = [], {}
    for m in attributions:
        opts = config_options(m, ctx.cfg) if m != "random" else {}
        df = pixel_deletion(ctx.model, ctx.test_data, m, o.n_images, o.steps, ctx.seed, "most", ctx.device,
                            batch_size=ctx.cfg.batch_size * ctx.cfg.grid_size ** 2, insertion=True,
                            attribution_options=opts)
        frames.append(df)
        aucs[m] = {"auc": deletion_auc(df)}
        ctx.log(f"evaluate: {m:<16} insertion AUC {aucs[m]['auc']:.3f} ({o.n_images} images)")
    summary = {"settings": {"n_images": int(min(o.n_images, len(ctx.test_data))), "steps": int(o.steps),
                            "seed": int(ctx.seed)}, "attributions": aucs, "skipped": skipped}
    return MetricResult(summary, {"insertion": pd.concat(frames, ignore_index=True)})


def road_metric(ctx: EvalContext) -> MetricResult | None:
    """ROAD (Quantus) with MoRF and LeRF orders: accuracy per percentage and the mean over them."""
    o = ctx.options or RoadOptions()
    attributions, skipped = _attributions(ctx, o.attributions)
    images = ctx.test_data.images[faithfulness_sample(ctx.test_data, o.n_images, ctx.seed)]
    rows, stats = [], {}
    for m in attributions:
        ranked = _ranking_maps(ctx, m, images, skipped, "ROAD")
        if ranked is None:
            continue
        maps, predicted = ranked
        stats[m] = {}
        for order in ("morf", "lerf"):
            acc = road_curve(ctx.model, images, maps, predicted, o.percentages, order, o.noise, ctx.seed,
                             ctx.device)
            rows += [{"attribution": m, "order": order, "percentage": float(p), "accuracy": float(a)}
                     for p, a in zip(o.percentages, acc)]
            stats[m][order] = float(acc.mean())
        ctx.log(f"evaluate: {m:<16} ROAD accuracy MoRF {stats[m]['morf']:.3f}, LeRF {stats[m]['lerf']:.3f} "
                f"({len(images)} images)")
    summary = {"settings": {"n_images": int(len(images)), "percentages": [float(p) for p in o.percentages],
                            "noise": float(o.noise), "seed": int(ctx.seed)},
               "attributions": stats, "skipped": skipped}
    return MetricResult(summary, {"road": pd.DataFrame(rows)})


def faithfulness_correlation_metric(ctx: EvalContext) -> MetricResult | None:
    """Faithfulness correlation (Quantus) per image; summary: mean, std and the images it is defined on."""
    o = ctx.options or FaithfulnessCorrelationOptions()
    attributions, skipped = _attributions(ctx, o.attributions)
    images = ctx.test_data.images[faithfulness_sample(ctx.test_data, o.n_images, ctx.seed)]
    subset = max(1, round(o.subset_fraction * images.shape[-1] * images.shape[-2]))
    rows, stats = [], {}
    for m in attributions:
        ranked = _ranking_maps(ctx, m, images, skipped, "faithfulness correlation")
        if ranked is None:
            continue
        maps, predicted = ranked
        r = faithfulness_correlation(ctx.model, images, maps, predicted, o.nr_runs, subset, ctx.seed, ctx.device)
        ok = np.isfinite(r)
        stats[m] = {"mean": float(r[ok].mean()) if ok.any() else 0.0,
                    "std": float(r[ok].std()) if ok.any() else 0.0, "n": int(ok.sum())}
        rows += [{"attribution": m, "image": i, "correlation": float(v)} for i, v in enumerate(r)]
        ctx.log(f"evaluate: {m:<16} faithfulness correlation {stats[m]['mean']:.3f} ({stats[m]['n']} images)")
    summary = {"settings": {"n_images": int(len(images)), "nr_runs": int(o.nr_runs), "subset_size": int(subset),
                            "seed": int(ctx.seed)}, "attributions": stats, "skipped": skipped}
    return MetricResult(summary, {"faithfulness_correlation": pd.DataFrame(rows)})


register_metric(Metric("insertion", insertion_metric, InsertionOptions,
                       description="insertion (RISE §4.1): area under the probability curve as the most important "
                                   "pixels are put back into a black image (higher is better)"))
register_metric(Metric("road", road_metric, RoadOptions,
                       description="ROAD (Rong et al. 2022, via Quantus): accuracy after removing pixels by noisy "
                                   "linear imputation, most (MoRF, lower is better) or least (LeRF) relevant first"))
register_metric(Metric("faithfulness_correlation", faithfulness_correlation_metric, FaithfulnessCorrelationOptions,
                       description="faithfulness correlation (Bhatt et al. 2020, via Quantus): Pearson r between "
                                   "attribution of random pixel subsets and the probability drop when they are removed"))
