"""Class-specific gates' metrics (Liang et al., ECCV 2020, §4), for any CNN, gated or not (an
ungated network counts as a gate of ones): the mutual-information score (§4.2), the gate's own
classification, the localisation of class-specific filter maps (§4.3) and the detection of
adversarial samples from the activation pattern (§4.4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.config import ConfigError
from ...core.data import ImageDataset
from .layers import class_gates, gate_labels
from ...models.base import prepare_input
from ...core.utils import evaluating
from ...core.contract import EvalContext, Metric, MetricResult
from ...core.registry import register_metric
from ...core.config import ranged



def _feature_module(model: nn.Module) -> nn.Module:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise TypeError(f"{type(model).__name__} has no `features` module whose output is the last convolutional "
                        "layer's feature maps; the CSG metrics need one (the project's CNNs have it)")
    return features


def gate_matrix(model: nn.Module) -> Tensor:
    """The learnt G (C, K) of a gated model; a matrix of ones (every filter open for every class)
    for an ungated one, of the width of its last feature maps (found by a forward pass)."""
    gates = class_gates(model)
    if gates:
        return gates[-1].gate.detach().float().cpu()
    c = _last_channels(model)
    return torch.ones(c, model.num_classes)


def _last_channels(model: nn.Module) -> int:
    x = torch.zeros(1, model.image_channels, 28, 28, device=next(model.parameters()).device)
    return feature_maps(model, x, batch_size=1).shape[1]


@torch.no_grad()
def feature_maps(model: nn.Module, images: Tensor, batch_size: int = 500,
                 device: torch.device | str | None = None) -> Tensor:
    """The last convolutional layer's feature maps (N, C, h, w) of images in [0, 1] (before any
    gate), in eval mode."""
    device = device or next(model.parameters()).device
    captured: list[Tensor] = []
    handle = _feature_module(model).register_forward_hook(lambda m, i, o: captured.append(o.detach().float().cpu()))
    try:
        with evaluating(model):
            for i in range(0, len(images), max(1, batch_size)):
                model(prepare_input(model, images[i:i + batch_size].to(device)))
    finally:
        handle.remove()
    if not captured or captured[0].dim() != 4:
        raise TypeError("the model's `features` module must output (N, C, H, W) feature maps")
    return torch.cat(captured)


def pooled_features(model: nn.Module, images: Tensor, batch_size: int = 500,
                    device: torch.device | str | None = None) -> Tensor:
    """Global-average-pooled last-layer activations (N, C): each filter's response to each image."""
    return feature_maps(model, images, batch_size, device).mean(dim=(2, 3))


def mutual_information_matrix(features: Tensor | np.ndarray, labels: Tensor | np.ndarray, num_classes: int,
                              n_neighbors: int = 3, seed: int = 0) -> np.ndarray:
    """M[c, k] = MI(features[:, k], 1[labels = c]) in nats, (K, C), with scikit-learn's
    ``mutual_info_classif`` (the k-nearest-neighbour estimator of Ross 2014), as the CSG code does."""
    from sklearn.feature_selection import mutual_info_classif
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be (N, C) with one label per row; got {x.shape} and {y.shape}")
    return np.stack([mutual_info_classif(x, (y == c).astype(int), n_neighbors=n_neighbors, random_state=seed)
                     for c in range(num_classes)])


def mutual_information_score(mi: np.ndarray) -> float:
    """MIS (ECCV 2020 §4.2): the mean over filters of the max over classes of M[c, k]."""
    return float(np.asarray(mi).max(axis=0).mean())


def class_filter_weights(model: nn.Module, mi: np.ndarray | None = None, assignment: str = "gate") -> Tensor:
    """How much each filter belongs to each class, (C, K).

    ``"gate"``: the learnt gate G (a gated model only); ``"mi"``: one-hot, each filter to the class
    it carries most information about (``mi`` is M from :func:`mutual_information_matrix`).
    """
    if assignment == "gate":
        gates = class_gates(model)
        if not gates:
            raise ValueError("assignment 'gate' needs a gated model; use 'mi' for an ungated one")
        return gates[-1].gate.detach().float().cpu().clamp(0, 1)
    if assignment == "mi":
        if mi is None:
            raise ValueError("assignment 'mi' needs the mutual-information matrix")
        mi = np.asarray(mi)
        return F.one_hot(torch.as_tensor(mi.argmax(axis=0)), mi.shape[0]).float()
    raise ValueError(f"assignment must be 'gate' or 'mi' (got {assignment!r})")


def class_filter_maps(model: nn.Module, images: Tensor, classes: Tensor, weights: Tensor,
                      device: torch.device | str | None = None) -> Tensor:
    """For each image and each of its classes, Σ_k weights[k, c]·max(A_k, 0) upsampled (bilinear)
    to the image size: (N, T, H, W) for ``classes`` (N, T)."""
    a = feature_maps(model, images, device=device).clamp_min(0)          # (N, C, h, w)
    w = weights.to(a.dtype)[:, classes].permute(1, 2, 0)                 # (N, T, C)
    maps = torch.einsum("ntc,nchw->nthw", w, a)
    return F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)


def filter_localisation(model: nn.Module, ds: ImageDataset, weights: Tensor, n: int = 3, n_grids: int = 500,
                        seed: int = 0, min_confidence: float = 0.5, smooth: int = 1, batch_size: int = 16,
                        device: torch.device | str = "cpu") -> pd.DataFrame:
    """The grid pointing game (:mod:`bcos_lib.metrics`) on :func:`class_filter_maps`: one row per
    (grid, cell) with its score — the share of the class's filter activation inside its cell."""
    from ...metrics import confident_pool, localisation_scores, make_grids
    pool = confident_pool(model, ds, min_confidence, batch_size * n * n, device)
    grids, classes = make_grids(ds, pool, n, n_grids, seed)
    scores = []
    for i in range(0, len(grids), max(1, batch_size)):
        maps = class_filter_maps(model, grids[i:i + batch_size], classes[i:i + batch_size], weights, device)
        scores.append(localisation_scores(maps, n, smooth))
    s = torch.cat(scores)
    g, t = s.shape
    return pd.DataFrame({"grid": np.repeat(np.arange(g), t), "cell": np.tile(np.arange(t), g),
                         "target": classes.reshape(-1).numpy(), "score": s.reshape(-1).double().numpy()})


@torch.no_grad()
def gate_accuracies(model: nn.Module, ds: ImageDataset, batch_size: int = 1000,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Test accuracy (%) with the gate open (the model as used), closed on the true label's column
    (the CSG path of training; it sees the label) and closed on the open prediction's column
    (a label-free gated pass).  An ungated model gives the open accuracy three times."""
    correct = {"accuracy_open": 0, "accuracy_true_gate": 0, "accuracy_predicted_gate": 0}
    gated = bool(class_gates(model))
    with evaluating(model):
        for i in range(0, len(ds), batch_size):
            x = prepare_input(model, ds.images[i:i + batch_size].to(device))
            y = ds.labels[i:i + batch_size].to(device)
            open_pred = model(x).argmax(1)
            correct["accuracy_open"] += int((open_pred == y).sum())
            for name, cols in (("accuracy_true_gate", y), ("accuracy_predicted_gate", open_pred)):
                if gated:
                    with gate_labels(model, cols):
                        pred = model(x).argmax(1)
                else:
                    pred = open_pred
                correct[name] += int((pred == y).sum())
    return {k: 100.0 * v / len(ds) for k, v in correct.items()}


def pgd_attack(model: nn.Module, images: Tensor, labels: Tensor, eps: float, steps: int = 10,
               step_size: float | None = None, seed: int = 0) -> Tensor:
    """Untargeted L∞ PGD (Madry et al. 2018) in image space: from a uniform random start in the
    ε-ball, ``steps`` signed-gradient ascent steps on the cross-entropy, each projected back onto
    the ε-ball and [0, 1].  ``step_size`` defaults to 2.5·ε/steps.  ``steps = 1`` with no random
    start is FGSM: pass ``step_size = eps`` and ``seed = None``."""
    if eps <= 0 or steps < 1:
        raise ValueError(f"PGD needs ε > 0 and ≥ 1 step (got ε={eps}, steps={steps})")
    alpha = 2.5 * eps / steps if step_size is None else step_size
    x0 = images.detach()
    if seed is None:
        x = x0.clone()
    else:
        g = torch.Generator().manual_seed(seed)
        x = (x0 + (torch.rand(x0.shape, generator=g) * 2 - 1).to(x0.device) * eps).clamp(0, 1)
    with evaluating(model):
        for _ in range(steps):
            x.requires_grad_(True)
            loss = F.cross_entropy(model(prepare_input(model, x)), labels)
            (grad,) = torch.autograd.grad(loss, x)
            x = torch.min(torch.max(x.detach() + alpha * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return x.detach()


def detection_scores(features: Tensor, predicted: Tensor, template: Tensor) -> Tensor:
    """Adversarial score of each image: 1 − cos(its pooled activations, the template column of
    its predicted class), (N,).  Higher = further from what the class's filters look like."""
    t = template.to(features.dtype)[:, predicted].T                      # (N, C)
    return 1.0 - F.cosine_similarity(features, t, dim=1, eps=1e-12)


# ----------------------------------------------------------------------------- metrics


@dataclass
class MISOptions:
    """``evaluate.options.mis``: images used (from ``split``), the estimator's neighbours."""

    n_images: int = ranged(2000, ge=20)
    split: str = "test"
    n_neighbors: int = ranged(3, ge=1)

    def __post_init__(self) -> None:
        if self.split not in ("test", "train"):
            raise ConfigError(f"evaluate.options.mis.split must be 'test' or 'train' (got {self.split!r})")
        if self.n_images < 20 or self.n_neighbors < 1:
            raise ConfigError(f"evaluate.options.mis: n_images must be ≥ 20 and n_neighbors ≥ 1 "
                              f"(got {self.n_images}, {self.n_neighbors})")


def _sample(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    from ...core.data import subset
    return subset(ds, n, seed=seed)


def _mi_of(ctx: EvalContext, n_images: int, split: str = "test", n_neighbors: int = 3) -> tuple[np.ndarray, int]:
    ds = _sample(ctx.train_data() if split == "train" else ctx.test_data, n_images, ctx.seed)
    feats = pooled_features(ctx.model, ds.images, device=ctx.device)
    return mutual_information_matrix(feats, ds.labels, ds.num_classes, n_neighbors, ctx.seed), len(ds)


def mis_metric(ctx: EvalContext) -> MetricResult | None:
    o: MISOptions = ctx.options or MISOptions()
    try:
        mi, n = _mi_of(ctx, o.n_images, o.split, o.n_neighbors)
    except TypeError as e:
        ctx.log(f"mis: skipped for {ctx.key}: {e}")
        return None
    per_filter = mi.max(axis=0)
    ctx.log(f"mis: {ctx.key}: MIS {per_filter.mean():.4f} nats over {mi.shape[1]} filters ({n} {o.split} images)")
    k, c = np.meshgrid(np.arange(mi.shape[1]), np.arange(mi.shape[0]))
    table = pd.DataFrame({"class": c.ravel(), "filter": k.ravel(), "mi": mi.ravel()})
    return MetricResult(summary={"mis": float(per_filter.mean()), "median_filter_max_mi": float(np.median(per_filter)),
                                 "mean_mi": float(mi.mean()), "n_filters": int(mi.shape[1]), "n_images": n,
                                 "split": o.split},
                        tables={"mutual_information": table})


@dataclass
class GateOptions:
    """``evaluate.options.gate``: how many test images the accuracies use (0 = all)."""

    n_images: int = ranged(0, ge=0)


def gate_metric(ctx: EvalContext) -> MetricResult | None:
    o: GateOptions = ctx.options or GateOptions()
    try:
        g = gate_matrix(ctx.model)
    except TypeError as e:
        ctx.log(f"gate: skipped for {ctx.key}: {e}")
        return None
    ds = _sample(ctx.test_data, o.n_images, ctx.seed)
    acc = gate_accuracies(ctx.model, ds, device=ctx.device)
    gated = bool(class_gates(ctx.model))
    summary = {"gated": gated, "density": float(g.abs().mean()), "open_fraction": float((g >= 0.5).float().mean()),
               "classes_per_filter": float((g >= 0.5).float().sum(1).mean()), **acc, "n_images": len(ds)}
    ctx.log(f"gate: {ctx.key}: density {summary['density']:.3f}, accuracy open {acc['accuracy_open']:.2f} %, "
            f"true-label gate {acc['accuracy_true_gate']:.2f} %, predicted-class gate {acc['accuracy_predicted_gate']:.2f} %")
    k, c = np.meshgrid(np.arange(g.shape[1]), np.arange(g.shape[0]))
    table = pd.DataFrame({"filter": c.ravel(), "class": k.ravel(), "gate": g.numpy().ravel()})
    return MetricResult(summary=summary, tables={"gate_matrix": table} if gated else {})


@dataclass
class FilterLocalisationOptions:
    """``evaluate.options.filter_localisation``: grids (0 = ``evaluate.n_grids``), and the images
    of the MI matrix that assigns an ungated network's filters to classes."""

    n_grids: int = ranged(0, ge=0)
    mi_images: int = ranged(2000, ge=1)


def filter_localisation_metric(ctx: EvalContext) -> MetricResult | None:
    o: FilterLocalisationOptions = ctx.options or FilterLocalisationOptions()
    cfg = ctx.cfg
    try:
        mi, _ = _mi_of(ctx, o.mi_images)
    except TypeError as e:
        ctx.log(f"filter_localisation: skipped for {ctx.key}: {e}")
        return None
    n_grids = o.n_grids or cfg.n_grids
    assignments = (["gate"] if class_gates(ctx.model) else []) + ["mi"]
    frames, summary = [], {"n_grids": int(n_grids), "grid_size": int(cfg.grid_size), "smooth": int(cfg.smooth)}
    for a in assignments:
        w = class_filter_weights(ctx.model, mi, a)
        df = filter_localisation(ctx.model, ctx.test_data, w, cfg.grid_size, n_grids, ctx.seed, cfg.min_confidence,
                                 cfg.smooth, cfg.batch_size, ctx.device)
        df.insert(0, "assignment", a)
        frames.append(df)
        summary[f"mean_{a}"] = float(df["score"].mean())
    summary["assignment"] = assignments[0]
    summary["mean"] = summary[f"mean_{assignments[0]}"]
    ctx.log(f"filter_localisation: {ctx.key}: " + ", ".join(f"{a} {summary[f'mean_{a}']:.3f}" for a in assignments)
            + f" ({n_grids} grids of {cfg.grid_size}×{cfg.grid_size}; uniform {1 / cfg.grid_size ** 2:.3f})")
    return MetricResult(summary=summary, tables={"filter_localisation": pd.concat(frames, ignore_index=True)})


@dataclass
class DetectionOptions:
    """``evaluate.options.adversarial_detection``: the L∞ PGD attack and the detectors' data."""

    eps: float = ranged(0.1, gt=0, le=1)            # L∞ bound in [0, 1] pixel units
    steps: int = ranged(10, ge=1)
    n_images: int = ranged(500, ge=10)         # clean test images attacked
    template_images: int = ranged(2000, ge=1)  # clean training images for the class-mean template
    folds: int = ranged(5, ge=2)              # cross-validation of the random-forest detector
    trees: int = ranged(100, ge=1)

    def __post_init__(self) -> None:
        if not 0.0 < self.eps <= 1.0 or self.steps < 1 or self.n_images < 10 or self.folds < 2:
            raise ConfigError("evaluate.options.adversarial_detection: need 0 < eps ≤ 1, steps ≥ 1, n_images ≥ 10 "
                              f"and folds ≥ 2 (got eps={self.eps}, steps={self.steps}, n_images={self.n_images}, "
                              f"folds={self.folds})")


def _forest_auroc(features: np.ndarray, is_adv: np.ndarray, groups: np.ndarray, folds: int, trees: int,
                  seed: int) -> float:
    """AUROC of a random forest on ``features``, cross-validated with a clean image and its
    adversarial always in the same fold (so the forest never sees the pair's other half)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    proba = np.zeros(len(is_adv))
    for train, test in GroupKFold(n_splits=folds).split(features, is_adv, groups):
        forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
        forest.fit(features[train], is_adv[train])
        proba[test] = forest.predict_proba(features[test])[:, 1]
    return float(roc_auc_score(is_adv, proba))


def adversarial_detection_metric(ctx: EvalContext) -> MetricResult | None:
    from sklearn.metrics import roc_auc_score
    o: DetectionOptions = ctx.options or DetectionOptions()
    model, device = ctx.model, ctx.device
    try:
        g = gate_matrix(model)
    except TypeError as e:
        ctx.log(f"adversarial_detection: skipped for {ctx.key}: {e}")
        return None
    ds = _sample(ctx.test_data, o.n_images, ctx.seed)
    with torch.no_grad(), evaluating(model):
        pred = torch.cat([model(prepare_input(model, ds.images[i:i + 500].to(device))).argmax(1).cpu()
                          for i in range(0, len(ds), 500)])
    keep = pred == ds.labels
    clean, labels = ds.images[keep], ds.labels[keep]
    adv = torch.cat([pgd_attack(model, clean[i:i + 250].to(device), labels[i:i + 250].to(device), o.eps, o.steps,
                                seed=ctx.seed + i).cpu() for i in range(0, len(clean), 250)])
    with torch.no_grad(), evaluating(model):
        adv_pred = torch.cat([model(prepare_input(model, adv[i:i + 500].to(device))).argmax(1).cpu()
                              for i in range(0, len(adv), 500)])
    fooled = adv_pred != labels
    summary: dict[str, Any] = {"eps": o.eps, "steps": o.steps, "n_attacked": int(len(clean)),
                               "attack_success_rate": float(fooled.float().mean()) if len(clean) else 0.0,
                               "n_adversarial": int(fooled.sum())}
    if int(fooled.sum()) < o.folds or int(fooled.sum()) < 10:
        ctx.log(f"adversarial_detection: {ctx.key}: only {int(fooled.sum())} successful adversarial images "
                f"(ε = {o.eps}); too few to score a detector, raise evaluate.options.adversarial_detection.eps")
        return MetricResult(summary={**summary, "auroc_forest": None, "auroc_gate": None, "auroc_class_mean": None})
    clean, adv, labels, adv_pred = clean[fooled], adv[fooled], labels[fooled], adv_pred[fooled]
    f_clean = pooled_features(model, clean, device=device)
    f_adv = pooled_features(model, adv, device=device)
    pred_all = torch.cat([labels, adv_pred])                     # the clean images are classified correctly
    feats = torch.cat([f_clean, f_adv])
    is_adv = np.r_[np.zeros(len(clean)), np.ones(len(adv))].astype(int)
    train = _sample(ctx.train_data(), o.template_images, ctx.seed)
    f_train = pooled_features(model, train.images, device=device)
    class_mean = torch.stack([f_train[train.labels == c].mean(0) for c in range(train.num_classes)], 1)  # (C, K)
    summary["auroc_class_mean"] = float(roc_auc_score(is_adv, detection_scores(feats, pred_all, class_mean).numpy()))
    gated = bool(class_gates(model))
    summary["auroc_gate"] = (float(roc_auc_score(is_adv, detection_scores(feats, pred_all, g).numpy()))
                             if gated else None)
    weighted = (feats * g[:, pred_all].T).numpy()                # the gate-weighted pattern (ones: ungated)
    groups = np.r_[np.arange(len(clean)), np.arange(len(adv))]
    summary["auroc_forest"] = _forest_auroc(weighted, is_adv, groups, o.folds, o.trees, ctx.seed)
    ctx.log(f"adversarial_detection: {ctx.key}: PGD ε={o.eps} fooled {summary['attack_success_rate']:.0%}; AUROC "
            f"forest {summary['auroc_forest']:.3f}, class-mean template {summary['auroc_class_mean']:.3f}"
            + (f", gate template {summary['auroc_gate']:.3f}" if gated else ""))
    return MetricResult(summary=summary)


register_metric(Metric("mis", mis_metric, MISOptions,
                       "mutual-information score of the last conv layer's filters (CSG, ECCV 2020 §4.2)"))
register_metric(Metric("gate", gate_metric, GateOptions,
                       "gate density and accuracy with the gate open / on the true / on the predicted class"))
register_metric(Metric("filter_localisation", filter_localisation_metric, FilterLocalisationOptions,
                       "grid pointing game on the maps of each class's filters (CSG, ECCV 2020 §4.3)"))
register_metric(Metric("adversarial_detection", adversarial_detection_metric, DetectionOptions,
                       "AUROC of detecting PGD images from the (gate-weighted) activations (CSG, ECCV 2020 §4.4)"))



