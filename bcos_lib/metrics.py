"""Quantitative evaluation of explanations: the grid pointing game and pixel deletion.

**Grid pointing game** (localisation; CoDA Nets §5.1, B-cos v1 §5.2), step by step:

1. :func:`confident_pool` — keep the test images that the model classifies correctly with
   confidence > ``min_confidence`` (the sigmoid of the logit for models trained with
   binary cross-entropy, ``default_loss == "bce"``; the softmax otherwise), sorted by
   confidence per class.
2. :func:`make_grids` — with a fixed seed, draw n² *distinct* classes and one pool image of
   each, and tile them into an n×n grid (3×3 on 28×28 images: 84×84 grids).
3. :func:`bcos_lib.explain.attribute` — for each class in the grid, the attribution map
   for that class over the whole grid, summed over channels; optionally smoothed
   (avg-pool, ``smooth``), then clamped at ≥ 0.
4. :func:`localisation_scores` — score = positive attribution inside that class's cell /
   positive attribution in the whole grid (0 when there is none).  An oracle scores 1,
   a uniform map 1/n².

The pool is the *model's* own (which images it gets right and how confidently), so two
models are scored on different grids — as in the public code.  For one model, every
attribution is scored on the same grids (drawn once, from a pool that does not depend on the
attribution), and the first k of n grids drawn with a seed are the k grids drawn with that seed.

**Pixel deletion**: remove the pixels an attribution ranks most (or least) important first,
in equal steps, and follow the probability of the originally predicted class; a good
ranking makes it fall fast (a small area under the curve for ``order="most"``).  A
``"random"`` ranking is the baseline.

Note on the public v1 code: its smoothing argument is an undefined name; here ``smooth``
is an avg-pool kernel size (1 = no smoothing), applied before clamping.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .explain import (attribute, config_options, get_attribution, list_attributions, posthoc_attributions, quiet_evaluation)
from .core.data import ImageDataset
from .layers.explanation_mode import is_explainable
from .core.contract import EvalContext, Metric, MetricResult
from .core.config import ranged
from .core.registry import register_metric
from .models.base import prepare_input

__all__ = ["EvaluationError", "class_probabilities", "confident_pool", "make_grids", "localisation_scores",
           "score_grids", "grid_pointing_game", "pixel_deletion", "deletion_auc", "summary_stats",
           "bootstrap_ci", "paired_margin", "localisation_metric", "deletion_metric", "label_pool",
           "paired_localisation_metric", "test_predictions", "shared_logits"]


class EvaluationError(RuntimeError):
    """The evaluation cannot run as configured; the message says what to change."""


def class_probabilities(model: nn.Module, logits: Tensor) -> Tensor:
    """Per-class probabilities as the model was trained: sigmoid for BCE models, softmax otherwise."""
    if getattr(model, "default_loss", "ce") == "bce":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


#: the logits :func:`shared_logits` keeps while it is active (None: nothing is kept)
_LOGITS_MEMO: dict[tuple, Tensor] | None = None


@contextmanager
def shared_logits():
    """Within this context a model's logits on a set of images are computed once and reused:
    the confident pool of every metric and the per-image predictions of the evaluate stage read the
    same full pass over the test set instead of each running its own (one pass of a CoDA net over
    the 10 000 test images takes ~15 s on two CPU cores).  The model must not change inside the
    context (the evaluate stage only reads it); the kept logits are dropped when it ends."""
    global _LOGITS_MEMO
    outer = _LOGITS_MEMO
    _LOGITS_MEMO = {} if outer is None else outer
    try:
        yield
    finally:
        _LOGITS_MEMO = outer


def _memo_key(model: nn.Module, images: Tensor, device: torch.device | str) -> tuple:
    return id(model), images.data_ptr(), tuple(images.shape), str(device)


def remember_logits(model: nn.Module, images: Tensor, device: torch.device | str, logits: Tensor) -> None:
    """Inside :func:`shared_logits`: take ``logits`` as ``model``'s on ``images`` (e.g. those the
    train stage kept with the model), so that no metric computes them again."""
    if _LOGITS_MEMO is None:
        raise RuntimeError("remember_logits works inside `with shared_logits():` only")
    if logits.dim() != 2 or len(logits) != len(images):
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not belong to {len(images)} images")
    _LOGITS_MEMO[_memo_key(model, images, device)] = logits.detach().float().cpu()


@torch.no_grad()
def _logits(model: nn.Module, images: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """The logits of images in [0, 1] (float32, on the CPU), in batches, model in eval mode;
    shared within :func:`shared_logits`."""
    key = _memo_key(model, images, device)
    if _LOGITS_MEMO is not None and key in _LOGITS_MEMO:
        return _LOGITS_MEMO[key]
    out = []
    with quiet_evaluation(model):
        for i in range(0, len(images), max(1, batch_size)):
            x = images[i:i + batch_size].to(device)
            out.append(model(prepare_input(model, x)).float().cpu())
    logits = torch.cat(out) if out else torch.zeros(0, 0)
    if _LOGITS_MEMO is not None:
        _LOGITS_MEMO[key] = logits
    return logits


def _predict(model: nn.Module, images: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """Class probabilities of images in [0, 1], in batches (model in eval mode)."""
    logits = _logits(model, images, batch_size, device)
    return class_probabilities(model, logits) if logits.numel() else logits


def confident_pool(model: nn.Module, ds: ImageDataset, min_confidence: float = 0.5, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> dict[int, Tensor]:
    """Step 1: for every class, the indices of the images of ``ds`` that ``model`` classifies
    correctly with confidence > ``min_confidence``, most confident first.

    Every class of ``ds`` is a key; a class with no such image maps to an empty LongTensor.
    """
    probs = _predict(model, ds.images, batch_size, device)
    confidence, predicted = probs.max(1) if len(probs) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    keep = (predicted == ds.labels) & (confidence > min_confidence)
    pool = {}
    for c in range(ds.num_classes):
        idx = torch.nonzero(keep & (ds.labels == c)).flatten()
        order = torch.argsort(confidence[idx], descending=True, stable=True)
        pool[c] = idx[order].long()
    return pool


def make_grids(ds: ImageDataset, pool: dict[int, Tensor], n: int = 3, n_grids: int = 500,
               seed: int = 0) -> tuple[Tensor, Tensor]:
    """Step 2: ``n_grids`` n×n grids of images of n² distinct classes, drawn with ``seed``.

    Returns ``grids`` (G, C, n·H, n·W) and ``classes`` (G, n²): the class in each cell, in
    row-major order (cell k is row k // n, column k % n).  Each grid draws its classes
    uniformly among those with pool images, then one pool image per class, uniformly.
    """
    if n < 1 or n_grids < 1:
        raise ValueError(f"need n ≥ 1 and n_grids ≥ 1 (got n={n}, n_grids={n_grids})")
    cells = n * n
    if cells > ds.num_classes:
        raise EvaluationError(f"a {n}×{n} grid needs {cells} distinct classes but the dataset has {ds.num_classes}: "
                              f"use a smaller grid (evaluate.grid_size ≤ {math.isqrt(ds.num_classes)})")
    available = [c for c in sorted(pool) if len(pool[c])]
    if not available:
        raise EvaluationError("no test image is classified correctly with enough confidence, so there is nothing "
                              "to build grids from: train the model longer, or lower evaluate.min_confidence")
    if len(available) < cells:
        raise EvaluationError(f"a {n}×{n} grid needs {cells} distinct classes with confidently classified images, "
                              f"but only {len(available)} class(es) have any ({available}): train the model longer, "
                              f"lower evaluate.min_confidence, or use a smaller evaluate.grid_size")
    gen = torch.Generator().manual_seed(seed)
    available_t = torch.tensor(available)
    classes = torch.empty(n_grids, cells, dtype=torch.long)
    picks = torch.empty(n_grids, cells, dtype=torch.long)
    for g in range(n_grids):  # one grid at a time, so that a prefix of the draws does not depend on n_grids
        chosen = available_t[torch.randperm(len(available), generator=gen)[:cells]]
        u = torch.rand(cells, generator=gen)
        classes[g] = chosen
        for k, c in enumerate(chosen.tolist()):
            candidates = pool[c]
            picks[g, k] = candidates[min(int(u[k] * len(candidates)), len(candidates) - 1)]
    images = ds.images[picks.flatten()]                      # (G·n², C, H, W)
    _, c, h, w = images.shape
    grids = images.reshape(n_grids, n, n, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n_grids, c, n * h, n * w)
    return grids.contiguous(), classes


def localisation_scores(attributions: Tensor, n: int, smooth: int = 1, cells: Tensor | None = None) -> Tensor:
    """Steps 3–4: the share of each map's positive mass that lies in its target's cell.

    ``attributions`` (G, T, H', W') with H', W' divisible by n; map t of grid g belongs to
    cell ``cells[g, t]`` (default: cell t, as :func:`make_grids` lays classes out).  Each map is
    avg-pooled with a ``smooth``×``smooth`` window (stride 1, same size; 1 = none), clamped at
    ≥ 0, and scored as mass in the cell / mass in the grid, 0 where the grid has no positive
    mass.  Returns (G, T) scores in [0, 1].

    The pool averages over the pixels inside the grid only (``count_include_pad=False``); the
    public code counts the zero padding (``avg_pool2d``'s default), which darkens the grid's
    outer border, so that a uniform map no longer scores 1/n² in every cell (the centre cell
    of a 3×3 grid gains).  Here the uniform baseline stays exact; the colour explanation
    (:func:`bcos_lib.explain.colour_explanation`) follows the official renderer instead.
    """
    if attributions.dim() != 4:
        raise ValueError(f"attributions must be (G, T, H, W), got {tuple(attributions.shape)}")
    g, t, h, w = attributions.shape
    if h % n or w % n:
        raise ValueError(f"a {h}×{w} map cannot be split into {n}×{n} equal cells")
    a = attributions.detach().float()
    if smooth > 1:
        a = F.avg_pool2d(a, smooth, stride=1, padding=smooth // 2, count_include_pad=False)[..., :h, :w]
    a = a.clamp_min(0)
    mass = a.reshape(g, t, n, h // n, n, w // n).sum((3, 5)).reshape(g, t, n * n)  # (G, T, cells)
    if cells is None:
        if t > n * n:
            raise ValueError(f"{t} maps per grid but only {n * n} cells: pass `cells`")
        cells = torch.arange(t, device=a.device).expand(g, t)
    inside = mass.gather(2, cells.to(a.device).long().unsqueeze(-1)).squeeze(-1)
    total = mass.sum(-1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(total))


def score_grids(model: nn.Module, grids: Tensor, classes: Tensor, attribution: str, n: int = 3, smooth: int = 1,
                batch_size: int = 16, device: torch.device | str = "cpu", **attribution_opts: Any) -> pd.DataFrame:
    """Steps 3–4 on given grids: one row per (grid, cell) with columns grid, cell, target, score,
    score_unsmoothed (the same map scored with ``smooth`` = 1) and attribution.

    ``batch_size`` grids at a time; all n² targets of a grid are attributed in one call (for
    ``"own"``: one shared forward pass and batched backward passes, see :func:`bcos_lib.explain.explain`).
    """
    scores, raw = [], []
    for i in range(0, len(grids), max(1, batch_size)):
        x = prepare_input(model, grids[i:i + batch_size].to(device))
        targets = classes[i:i + batch_size].to(device)
        maps = attribute(model, x, targets, attribution, **attribution_opts)
        scores.append(localisation_scores(maps, n, smooth).cpu())
        raw.append(scores[-1] if smooth <= 1 else localisation_scores(maps, n, 1).cpu())
    s = torch.cat(scores) if scores else torch.zeros(0, n * n)
    r = torch.cat(raw) if raw else torch.zeros(0, n * n)
    g, t = s.shape
    return pd.DataFrame({
        "grid": np.repeat(np.arange(g), t),
        "cell": np.tile(np.arange(t), g),
        "target": classes[:g].reshape(-1).numpy(),
        "score": s.reshape(-1).double().numpy(),
        "score_unsmoothed": r.reshape(-1).double().numpy(),
        "attribution": attribution,
    })


def grid_pointing_game(model: nn.Module, ds: ImageDataset, attribution: str, n: int = 3, n_grids: int = 500,
                       seed: int = 0, min_confidence: float = 0.5, smooth: int = 1, batch_size: int = 16,
                       device: torch.device | str = "cpu", **attribution_opts: Any) -> pd.DataFrame:
    """The grid pointing game (CoDA Nets §5.1) of ``attribution`` on ``model``: one row per (grid, cell).

    Columns: grid, cell, target (the cell's class), score (in [0, 1]), attribution.  The grids
    depend on the model (through its confident pool), ``n``, ``n_grids``, ``seed`` and
    ``min_confidence`` only — not on the attribution.  ``attribution_opts`` go to :func:`bcos_lib.explain.attribute`.
    """
    pool = confident_pool(model, ds, min_confidence, batch_size * n * n, device)
    grids, classes = make_grids(ds, pool, n, n_grids, seed)
    return score_grids(model, grids, classes, attribution, n, smooth, batch_size, device, **attribution_opts)


# ----------------------------------------------------------------------------- pixel deletion
def pixel_deletion(model: nn.Module, ds: ImageDataset, attribution: str, n_images: int = 200, steps: int = 20,
                   seed: int = 0, order: str = "most", device: torch.device | str = "cpu", batch_size: int = 64,
                   insertion: bool = False, attribution_options: dict[str, Any] | None = None,
                   **attribution_opts: Any) -> pd.DataFrame:
    """Deletion curve: the mean probability of the predicted class as pixels are removed.

    ``n_images`` images of ``ds`` (drawn with ``seed``) are explained for their predicted
    class; pixels (all channels of one position at once) are ranked by that map —
    ``order="most"``: highest attribution first, ``"least"``: lowest first — or at random
    (``attribution="random"``; its rows say order "random").  After each of ``steps`` equal steps the removed pixels are set
    to 0 *in image space* (before ``prepare_input``) and the class probability (sigmoid
    for BCE models, softmax otherwise) is read.  Returns ``steps + 1`` rows: attribution, order,
    fraction (of pixels removed, 0 … 1), score (mean probability), score_std.

    ``attribution_options``: options of the attribution (also accepted as keywords, except
    those that clash with this function's own, such as Integrated Gradients' ``steps``).

    ``insertion=True`` runs the curve the other way (insertion, Petsiuk et al. 2018, RISE
    §4.1): from the black image (all pixels 0), the pixels are put back in the same ranking,
    so that ``fraction`` is the share inserted and a good ranking makes the probability *rise*
    fast (a large area for ``order="most"``).

    Cross-checked against Quantus' ``PixelFlipping`` (``features_in_step`` = pixels per step,
    ``perturb_baseline=0.0``, probabilities as here, grey images): the curves are equal to
    float tolerance; Quantus leaves out the first point (nothing removed) and ranks ties in
    an unspecified order, this function stably (by pixel index).  On colour images Quantus
    ranks each channel of a pixel separately, this function whole pixels.
    """
    if attribution != "random" and attribution not in list_attributions():
        raise ValueError(f"unknown deletion attribution {attribution!r}; "
                         f"known: {', '.join(list_attributions())}, random")
    attribution_opts = {**(attribution_options or {}), **attribution_opts}
    if order not in ("most", "least"):
        raise ValueError(f"order must be 'most' or 'least' (got {order!r})")
    if steps < 1 or n_images < 1:
        raise ValueError(f"need steps ≥ 1 and n_images ≥ 1 (got {steps}, {n_images})")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=gen)[:n_images]
    rank_gen = torch.Generator().manual_seed(seed + 1)
    curves = []
    with quiet_evaluation(model):
        for i in range(0, len(idx), max(1, batch_size)):
            images = ds.images[idx[i:i + batch_size]].to(device)
            b, c, h, w = images.shape
            with torch.no_grad():
                predicted = model(prepare_input(model, images)).argmax(1)
            if attribution == "random":
                ranking = torch.argsort(torch.rand(b, h * w, generator=rank_gen), dim=1).to(device)
            else:
                x = prepare_input(model, images)
                maps = attribute(model, x, predicted, attribution, **attribution_opts)[:, 0]
                ranking = torch.argsort(maps.flatten(1), dim=1, descending=order == "most", stable=True)
            position = torch.empty_like(ranking)              # position[j, p] = rank of pixel p in image j
            position.scatter_(1, ranking, torch.arange(h * w, device=ranking.device).expand(b, -1))
            probs = []
            with torch.no_grad():
                for k in range(steps + 1):
                    removed = round(k / steps * h * w)
                    keep = (position < removed) if insertion else (position >= removed)
                    keep = keep.reshape(b, 1, h, w).to(images.dtype)
                    p = class_probabilities(model, model(prepare_input(model, images * keep)))
                    probs.append(p.gather(1, predicted[:, None])[:, 0].float().cpu())
            curves.append(torch.stack(probs, 1))              # (b, steps + 1)
    curve = torch.cat(curves).double()
    return pd.DataFrame({
        "attribution": attribution,
        "order": "random" if attribution == "random" else order,
        "fraction": np.arange(steps + 1) / steps,
        "score": curve.mean(0).numpy(),
        "score_std": curve.std(0, unbiased=False).numpy(),
    })


def deletion_auc(df: pd.DataFrame) -> float:
    """Area under one deletion curve (trapezoidal, over fraction ∈ [0, 1]).

    ``df`` holds one curve (one attribution and order); for several use
    ``df.groupby(["attribution", "order"]).apply(deletion_auc)``.
    """
    keys = [k for k in ("attribution", "order", "model") if k in df.columns]
    if keys and len(df.groupby(keys)) > 1:
        raise ValueError(f"deletion_auc takes one curve; this frame has {len(df.groupby(keys))} "
                         f"(group by {keys} first)")
    d = df.sort_values("fraction")
    f, s = d["fraction"].to_numpy(float), d["score"].to_numpy(float)
    return float(np.sum((s[1:] + s[:-1]) / 2 * np.diff(f)))


# ----------------------------------------------------------------------------- as registered metrics
def summary_stats(scores: pd.Series) -> dict[str, float]:
    """mean, median, std and count of a column of scores."""
    v = scores.to_numpy(float)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std()), "n": int(len(v))}


def bootstrap_ci(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 column: str = "score") -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean ``column`` of a localisation table.

    The unit resampled is the *grid*, not the cell: the n² scores of one grid share its images
    and its attribution maps (one class's positive mass is another's mass outside its cell),
    so they are not independent.  ``n_boot`` resamples of the grids with replacement, drawn
    with ``seed``; each resample's mean is the mean of its grids' mean scores (every grid has
    the same number of cells).  Returns the (1 − level)/2 and (1 + level)/2 quantiles.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    per_grid = df.groupby("grid")[column].mean().to_numpy(float)
    if len(per_grid) == 0:
        raise ValueError("bootstrap_ci: the table has no grids")
    rng = np.random.default_rng(seed)
    means = per_grid[rng.integers(0, len(per_grid), size=(n_boot, len(per_grid)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_margin(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """Mean score of ``a`` minus that of ``b`` on the grids both were scored on, with a paired
    bootstrap interval (the same grids resampled for both): {mean, ci_low, ci_high, n_grids}."""
    ga = a.groupby("grid")["score"].mean()
    gb = b.groupby("grid")["score"].mean()
    common = ga.index.intersection(gb.index)
    if len(common) == 0:
        raise ValueError("paired_margin: the two tables share no grid")
    diff = pd.DataFrame({"grid": common, "score": (ga[common] - gb[common]).to_numpy(float)})
    lo, hi = bootstrap_ci(diff, n_boot, seed, level)
    return {"mean": float(diff["score"].mean()), "ci_low": lo, "ci_high": hi, "n_grids": int(len(common))}


def _applicable(ctx: EvalContext, attributions: list[str], skipped: dict[str, str]) -> list[str]:
    """The attributions that apply to the model ('own' needs a model that explains itself)."""
    keep = []
    for m in attributions:
        if m != "random" and get_attribution(m).needs_dynamic_linear and not is_explainable(ctx.model):
            if m not in skipped:
                skipped[m] = (f"{type(ctx.model).__name__} is not dynamic linear (no explanation mode), "
                              "so it has no explanation of its own")
                ctx.log(f"evaluate: skipping {m!r}: {skipped[m]}")
            continue
        keep.append(m)
    return keep


def localisation_metric(ctx: EvalContext) -> MetricResult | None:
    """The grid pointing game of every attribution of ``evaluate.attributions`` that applies, all on the
    same grids: ``"own"`` on ``n_grids`` of them, the post-hoc attributions on the first
    ``posthoc_n_grids`` (when > 0).  Summary: ``grid`` (the settings and the pool),
    ``attributions`` ({attribution: mean, median, std, n (scores), n_grids, mean_unsmoothed}), ``skipped``."""
    cfg, skipped = ctx.cfg, {}
    attributions = _applicable(ctx, cfg.attributions, skipped)
    if not attributions:
        return None
    n = cfg.grid_size
    pool = confident_pool(ctx.model, ctx.test_data, cfg.min_confidence, cfg.batch_size * n * n, ctx.device)
    grids, classes = make_grids(ctx.test_data, pool, n, cfg.n_grids, ctx.seed)
    posthoc_grids = min(cfg.posthoc_n_grids, cfg.n_grids) if cfg.posthoc_n_grids > 0 else cfg.n_grids
    stats, frames = {}, []
    for attribution in attributions:
        g = posthoc_grids if attribution in posthoc_attributions() else cfg.n_grids
        df = score_grids(ctx.model, grids[:g], classes[:g], attribution, n, cfg.smooth, cfg.batch_size, ctx.device,
                         **config_options(attribution, cfg))
        frames.append(df)
        lo, hi = bootstrap_ci(df, seed=ctx.seed)
        stats[attribution] = {**summary_stats(df["score"]), "n_grids": int(g),
                              "mean_unsmoothed": float(df["score_unsmoothed"].mean()), "ci_low": lo, "ci_high": hi}
        ctx.log(f"evaluate: {attribution:<16} localisation {stats[attribution]['mean']:.3f} "
                f"(95 % CI {lo:.3f}–{hi:.3f}, median {stats[attribution]['median']:.3f}, {g} grids)")
    summary = {"grid": {"n": int(n), "n_grids": int(cfg.n_grids), "posthoc_n_grids": int(posthoc_grids),
                        "seed": int(ctx.seed), "min_confidence": float(cfg.min_confidence), "smooth": int(cfg.smooth),
                        "uniform_score": 1.0 / (n * n), "confident_images": int(sum(len(v) for v in pool.values())),
                        "classes_with_confident_images": int(sum(1 for v in pool.values() if len(v)))},
               "attributions": stats, "skipped": skipped}
    posthoc = [m for m in stats if m in posthoc_attributions()]
    if "own" in stats and posthoc:
        by_attribution = {f["attribution"].iat[0]: f for f in frames}
        best = max(posthoc, key=lambda m: stats[m]["mean"])
        summary["margin"] = {"over": best,
                             **paired_margin(by_attribution["own"], by_attribution[best], seed=ctx.seed)}
        ctx.log(f"evaluate: own − {best} (best post-hoc) {summary['margin']['mean']:+.3f} "
                f"(95 % CI {summary['margin']['ci_low']:+.3f} to {summary['margin']['ci_high']:+.3f})")
    return MetricResult(summary, {"localisation": pd.concat(frames, ignore_index=True)})


def deletion_metric(ctx: EvalContext) -> MetricResult | None:
    """Pixel deletion for every attribution of ``evaluate.deletion_attributions`` that applies: curves with
    the most and with the least important pixels first (``"random"``: one curve, the baseline
    of both).  Summary: ``settings`` and ``attributions`` ({attribution: auc_most, auc_least})."""
    cfg, skipped = ctx.cfg, {}
    attributions = _applicable(ctx, cfg.deletion_attributions, skipped)
    if not attributions:
        return None
    aucs_by_attribution, frames = {}, []
    for attribution in attributions:
        opts = config_options(attribution, cfg) if attribution != "random" else {}
        aucs = {}
        for order in (("most",) if attribution == "random" else ("most", "least")):
            df = pixel_deletion(ctx.model, ctx.test_data, attribution, cfg.deletion_images, cfg.deletion_steps,
                                ctx.seed, order, ctx.device, batch_size=cfg.batch_size * cfg.grid_size ** 2,
                                attribution_options=opts)
            frames.append(df)
            aucs[f"auc_{order}"] = deletion_auc(df)
        auc = aucs_by_attribution[attribution] = {"auc_most": aucs["auc_most"],
                                                  "auc_least": aucs.get("auc_least", aucs["auc_most"])}
        ctx.log(f"evaluate: {attribution:<16} deletion AUC most first {auc['auc_most']:.3f}, least first "
                f"{auc['auc_least']:.3f} ({cfg.deletion_images} images)")
    summary = {"settings": {"n_images": int(min(cfg.deletion_images, len(ctx.test_data))),
                            "steps": int(cfg.deletion_steps), "seed": int(ctx.seed)},
               "attributions": aucs_by_attribution, "skipped": skipped}
    return MetricResult(summary, {"deletion": pd.concat(frames, ignore_index=True)})


def label_pool(ds: ImageDataset) -> dict[int, Tensor]:
    """Every test image by its label: a pool that depends on no model, so that grids drawn from it
    with one seed are the same for every model (paired comparisons across models)."""
    return {c: torch.nonzero(ds.labels == c).flatten() for c in range(ds.num_classes)}


@dataclass
class PairedLocalisationOptions:
    """``evaluate.options.paired_localisation``."""

    n_grids: int = ranged(100, ge=1)   # grids drawn from all test images (the same for every model)
    seed: int = ranged(1, ge=0)        # their draw (independent of the localisation metric's grids)
    attributions: list[str] = field(default_factory=list)   # [] = evaluate.attributions

    def __post_init__(self) -> None:
        from .core.config import ConfigError
        from .core.registry import ATTRIBUTIONS
        unknown = [a for a in self.attributions if a not in ATTRIBUTIONS]
        if unknown:
            raise ConfigError(f"evaluate.options.paired_localisation.attributions: unknown {unknown}; "
                              f"known: {', '.join(ATTRIBUTIONS)}")


def paired_localisation_metric(ctx: EvalContext) -> MetricResult | None:
    """The grid pointing game on grids drawn from *all* test images (:func:`label_pool`), not from
    the model's confidently classified ones: every model and every attribution is scored on the
    same grids, so that two models can be compared grid by grid (like with like).  It departs
    from the protocol of CoDA Nets §5.1 in that pool only (a cell may hold an image the model gets
    wrong); the localisation metric keeps the protocol.  Summary: ``grid`` and ``attributions``
    ({attribution: mean, mean_unsmoothed, n_grids}); table ``paired_localisation``."""
    o: PairedLocalisationOptions = ctx.options or PairedLocalisationOptions()
    cfg, skipped = ctx.cfg, {}
    attributions = _applicable(ctx, o.attributions or cfg.attributions, skipped)
    if not attributions:
        return None
    n = cfg.grid_size
    grids, classes = make_grids(ctx.test_data, label_pool(ctx.test_data), n, o.n_grids, o.seed)
    stats, frames = {}, []
    for attribution in attributions:
        df = score_grids(ctx.model, grids, classes, attribution, n, cfg.smooth, cfg.batch_size, ctx.device,
                         **config_options(attribution, cfg))
        frames.append(df)
        stats[attribution] = {"mean": float(df["score"].mean()), "mean_unsmoothed": float(df["score_unsmoothed"].mean()),
                              "n_grids": int(o.n_grids)}
        ctx.log(f"evaluate: {attribution:<16} paired localisation {stats[attribution]['mean']:.3f} "
                f"({o.n_grids} grids shared by every model)")
    summary = {"grid": {"n": int(n), "n_grids": int(o.n_grids), "seed": int(o.seed), "smooth": int(cfg.smooth),
                        "pool": "all test images"}, "attributions": stats, "skipped": skipped}
    return MetricResult(summary, {"paired_localisation": pd.concat(frames, ignore_index=True)})


@torch.no_grad()
def test_predictions(model: nn.Module, ds: ImageDataset, batch_size: int = 512,
                     device: torch.device | str = "cpu") -> pd.DataFrame:
    """The model's predicted class for every image of ``ds``: columns image, label, predicted (the
    per-image outcomes behind the test accuracy, so that two models' accuracies can be compared
    image by image)."""
    logits = _logits(model, ds.images, batch_size, device)
    predicted = logits.argmax(1) if len(ds) else torch.empty(0, dtype=torch.long)
    return pd.DataFrame({"image": np.arange(len(ds)), "label": ds.labels.numpy(), "predicted": predicted.numpy()})


register_metric(Metric("localisation", localisation_metric,
                       description="grid pointing game (CoDA Nets §5.1): share of positive attribution in the "
                                   "target's cell"))
register_metric(Metric("deletion", deletion_metric,
                       description="pixel deletion: area under the target-probability curve"))
register_metric(Metric("paired_localisation", paired_localisation_metric, PairedLocalisationOptions,
                       description="grid pointing game on grids drawn from all test images, the same for every "
                                   "model (paired comparisons across models)"))

