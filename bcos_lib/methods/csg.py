"""Class-specific gates, CSG (Liang, Ouyang, Zeng, Su, He, Wang, Zhu: "Training Interpretable
Convolutional Neural Networks by Differentiating Class-specific Filters", ECCV 2020).

The idea (§3): put a gate matrix G ∈ [0, 1]^(C×K) on the C filters of the last convolutional
layer (:class:`bcos_lib.layers.ClassSpecificGate`) and train in two alternating modes that
share the backbone — *standard* epochs (gate open) and *CSG* epochs, in which an image of
class y only passes through the filters of the column G[:, y], the loss gains
λ·ReLU(‖G‖₁ − d·|G|) and every filter's row is renormalised after each step.  At test time the
gate is open again: the network is an ordinary classifier whose last-layer filters have each
learnt to serve few classes.

What this file adds to the pipeline, through the method contract:

* models ``csg_std_cnn`` and ``csg_bcos_cnn``: the ``std_cnn`` / ``bcos_cnn`` of the same
  arguments with a gate in front of the 1×1 classifier (:func:`add_class_gate`), so each has
  an ungated twin of exactly the same shape;
* the alternating training (:class:`CSGOptions`, :func:`training`): the schedule is a pure
  function of the epoch, the gate a parameter in the ``state_dict``, so a resumed run is exact;
* four metrics that run on *any* CNN, gated or not (an ungated network counts as a gate of
  ones, density 1), so one table compares them:

  ``mis``                    the mutual-information score (§4.2): mean over filters of the max over
                             classes of MI(pooled activation, 1[y = class]), scikit-learn's estimator;
  ``gate``                   gate density and accuracy with the gate open, closed on the true
                             label's column, and closed on the predicted class's column;
  ``filter_localisation``    the grid pointing game on the maps of each class's filters (§4.3);
  ``adversarial_detection``  PGD images detected from the (gate-weighted) activation pattern (§4.4);

* the figures (the gate matrix, MIS of CSG against standard training, what a class's top
  filters see) and the report section.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..data import ImageDataset
from ..layers.csg import ClassSpecificGate, class_gates, gate_labels
from ..models.base import prepare_input
from ..models.cnn import ConvNet, bcos_cnn, std_cnn
from ..registry import register_model
from ..train import default_step
from ..utils import evaluating
from . import (EvalContext, Method, Metric, MetricResult, ModelResult, StepInfo, StepOutput, TrainHooks,
               register_method, register_metric, results_of)

__all__ = ["CSGOptions", "UNITS", "is_csg_epoch", "is_csg_step", "add_class_gate", "csg_std_cnn", "csg_bcos_cnn", "training", "csg_step",
           "gate_matrix", "pooled_features", "feature_maps", "mutual_information_matrix", "mutual_information_score",
           "class_filter_weights", "class_filter_maps", "filter_localisation", "gate_accuracies", "pgd_attack",
           "detection_scores", "MISOptions", "GateOptions", "FilterLocalisationOptions", "DetectionOptions",
           "CSG_GROUP"]

#: the params.yaml group of the four models compared in the report (standard, CSG, B-cos, B-cos + CSG)
CSG_GROUP = "csg"


# ----------------------------------------------------------------------------- options and schedule
@dataclass
class CSGOptions:
    """``models.<key>.options`` of a gated model (ECCV 2020 §3.3–3.4).

    The first ``warmup_epochs`` epochs are standard.  After them the two kinds of training
    alternate with ``period`` counted in units of ``unit``: with ``unit: epoch`` epoch e is a CSG
    epoch when (e − warmup_epochs) is a multiple of ``period`` (period 3: one CSG epoch in
    three); with ``unit: step`` the alternation is by batch, global step s being a CSG step
    when s is a multiple of ``period`` (period 2: every other batch gated), so that within
    every epoch the standard steps teach each filter to stay quiet for the classes its gate
    closes it to (on a CSG step it is multiplied by 0 for them and learns nothing about them).
    """

    warmup_epochs: int = 1
    period: int = 2
    unit: str = "epoch"             # "epoch" | "step": what ``period`` counts
    sparsity_weight: float = 1e-3   # λ
    density: float = 0.2            # d: only a density above it is penalised

    def __post_init__(self) -> None:
        problems = []
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be ≥ 0 (got {self.warmup_epochs})")
        if self.period < 1:
            problems.append(f"period must be ≥ 1 (got {self.period})")
        if self.unit not in UNITS:
            problems.append(f"unit must be one of {', '.join(UNITS)} (got {self.unit!r})")
        if self.sparsity_weight < 0:
            problems.append(f"sparsity_weight must be ≥ 0 (got {self.sparsity_weight})")
        if not 0.0 < self.density <= 1.0:
            problems.append(f"density must lie in (0, 1] (got {self.density})")
        if problems:
            raise ConfigError("CSG options (models.<key>.options): " + "; ".join(problems))


#: what ``CSGOptions.period`` counts
UNITS = ("epoch", "step")


def is_csg_epoch(epoch: int, options: CSGOptions) -> bool:
    """Whether the 0-based ``epoch`` holds CSG steps (all of them with ``unit: epoch``, every
    ``period``-th with ``unit: step``): a pure function of the epoch, so a resume is exact."""
    e = epoch - options.warmup_epochs
    if e < 0:
        return False
    return options.unit == "step" or e % options.period == 0


def is_csg_step(info: StepInfo, options: CSGOptions) -> bool:
    """Whether the training step at ``info`` is a CSG step (gated, with the sparsity loss and
    the renormalisation after it): a pure function of the epoch and the global step."""
    if not is_csg_epoch(info.epoch, options):
        return False
    return options.unit == "epoch" or info.step % options.period == 0


# ----------------------------------------------------------------------------- models
def add_class_gate(model: ConvNet, init: float = 0.5, lr_scale: float = 1.0) -> ConvNet:
    """Put a class-specific gate on the last convolutional features of a :class:`ConvNet`:
    the classifier becomes ``Sequential(gate, classifier)``; nothing else changes."""
    if not isinstance(model, ConvNet):
        raise TypeError(f"add_class_gate takes a ConvNet (got {type(model).__name__})")
    channels = getattr(model.classifier, "in_channels", None)
    if channels is None:
        raise TypeError(f"cannot tell the gate's width: the classifier {type(model.classifier).__name__} "
                        "has no in_channels")
    model.classifier = nn.Sequential(OrderedDict(gate=ClassSpecificGate(channels, model.num_classes, init, lr_scale),
                                                 conv=model.classifier))
    return model


def _gated_twin(base: Callable[..., ConvNet], name: str) -> Callable[..., ConvNet]:
    """A builder ``name`` taking ``base``'s arguments plus ``gate_init`` and ``gate_lr_scale``
    (:class:`ClassSpecificGate`); registered, so every argument is checked against this
    signature (a typo in params.yaml fails loudly)."""

    def build(**kwargs: Any) -> ConvNet:
        init, lr_scale = kwargs.pop("gate_init", 0.5), kwargs.pop("gate_lr_scale", 1.0)
        return add_class_gate(base(**kwargs), init, lr_scale)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(base).parameters.values()]
    params += [inspect.Parameter("gate_init", inspect.Parameter.KEYWORD_ONLY, default=0.5, annotation=float),
               inspect.Parameter("gate_lr_scale", inspect.Parameter.KEYWORD_ONLY, default=1.0, annotation=float)]
    build.__signature__ = inspect.Signature(params, return_annotation=ConvNet)  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"``{base.__name__}`` with a class-specific gate (initialised to ``gate_init``, learning "
                     f"``gate_lr_scale`` times faster than the rest) on its last convolutional features "
                     f"(CSG, ECCV 2020 §3); same arguments, same shape.")
    return register_model(build)


csg_std_cnn = _gated_twin(std_cnn, "csg_std_cnn")
csg_bcos_cnn = _gated_twin(bcos_cnn, "csg_bcos_cnn")


# ----------------------------------------------------------------------------- training
def _gates_of(model: nn.Module) -> list[ClassSpecificGate]:
    gates = class_gates(model)
    if not gates:
        raise ConfigError(f"{getattr(model, 'model_name', type(model).__name__)} has no class-specific gate, so it "
                          "cannot be trained with CSG: use a gated arch (csg_std_cnn, csg_bcos_cnn)")
    return gates


def csg_step(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo, options: CSGOptions) -> StepOutput:
    """One training step: standard (gate open) or, on a CSG epoch, gated by the true labels' columns
    with the sparsity loss added.  Logs the gate density and the sparsity term on every step."""
    gates = _gates_of(model)
    csg = is_csg_step(info, options)
    if csg:
        with gate_labels(model, y):
            result = default_step(model, x, y, info)
        sparsity = sum(g.sparsity_loss(options.sparsity_weight, options.density) for g in gates)
        result = StepOutput(loss=result.loss + sparsity, logits=result.logits)
        sparsity_value = float(sparsity.detach())
    else:
        result = default_step(model, x, y, info)
        sparsity_value = 0.0
    with torch.no_grad():
        density = float(sum(g.density() for g in gates) / len(gates))
    result.terms.update(csg_step=float(csg), sparsity=sparsity_value, gate_density=density)
    return result


def training(model: nn.Module, options: CSGOptions | None, train_config: Any) -> TrainHooks:
    """The method's hooks for :func:`bcos_lib.train.fit`: the CSG/standard step, and after every
    CSG step the gate renormalisation (each row divided by its max, clipped to [0, 1])."""
    options = options or CSGOptions()
    _gates_of(model)
    epochs = getattr(train_config, "epochs", None)
    if epochs is not None and not any(is_csg_epoch(e, options) for e in range(epochs)):
        raise ConfigError(f"CSG schedule: {epochs} epoch(s) with warmup_epochs={options.warmup_epochs} leave no CSG "
                          "epoch, so the gate would never be trained: lower models.<key>.options.warmup_epochs "
                          "or train longer")

    def step(m: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> StepOutput:
        return csg_step(m, x, y, info, options)

    def after_step(m: nn.Module, info: StepInfo) -> None:
        if is_csg_step(info, options):
            for g in _gates_of(m):
                g.renormalise_()

    return TrainHooks(step=step, after_step=after_step)


# ----------------------------------------------------------------------------- analysis (pure functions)
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
    from ..metrics import confident_pool, localisation_scores, make_grids
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

    n_images: int = 2000
    split: str = "test"
    n_neighbors: int = 3

    def __post_init__(self) -> None:
        if self.split not in ("test", "train"):
            raise ConfigError(f"evaluate.options.mis.split must be 'test' or 'train' (got {self.split!r})")
        if self.n_images < 20 or self.n_neighbors < 1:
            raise ConfigError(f"evaluate.options.mis: n_images must be ≥ 20 and n_neighbors ≥ 1 "
                              f"(got {self.n_images}, {self.n_neighbors})")


def _sample(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    from ..data import subset
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

    n_images: int = 0


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

    n_grids: int = 0
    mi_images: int = 2000


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

    eps: float = 0.1            # L∞ bound in [0, 1] pixel units
    steps: int = 10
    n_images: int = 500         # clean test images attacked
    template_images: int = 2000  # clean training images for the class-mean template
    folds: int = 5              # cross-validation of the random-forest detector
    trees: int = 100

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


# ----------------------------------------------------------------------------- figures
#: the class whose filters the filter-map figure shows (the first class where a dataset has no such name)
FIGURE_CLASS = "Sneaker"


def _table_matrix(df: pd.DataFrame, value: str, rows: str, cols: str) -> np.ndarray:
    return df.pivot(index=rows, columns=cols, values=value).sort_index().sort_index(axis=1).to_numpy()


def filter_order(gate: np.ndarray) -> np.ndarray:
    """Filters sorted by the class they are most open for, then by how exclusive they are
    (fewest open classes first): the gate heatmap then shows one block per class."""
    own = gate.argmax(1)
    return np.lexsort((gate.sum(1), own))


def plot_gate_matrices(gates: Mapping[str, np.ndarray], classes: tuple[str, ...] | list[str]) -> Any:
    """The learnt gate matrices (classes × filters), filters sorted by their class."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(gates), 1, figsize=(9, 2.4 * len(gates) + 0.4), squeeze=False)
    for ax, (label, g) in zip(axes[:, 0], gates.items()):
        im = ax.imshow(g[filter_order(g)].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("filter of the last conv layer (sorted by its class)", fontsize=8)
        ax.set_title(f"{label}: gate density {g.mean():.2f}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    fig.tight_layout()
    from ..figures import finished
    return finished(fig)


def plot_mis(per_filter: Mapping[str, np.ndarray]) -> Any:
    """Each filter's max-over-classes MI, per model (dots), with the MIS (their mean, a bar)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.6 * len(per_filter) + 1.5, 3.4))
    rng = np.random.default_rng(0)
    for i, (label, v) in enumerate(per_filter.items()):
        gated = "CSG" in label
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=7, alpha=0.55, color="C1" if gated else "C0")
        ax.hlines(v.mean(), i - 0.3, i + 0.3, color="k", lw=2)
        ax.text(i + 0.32, v.mean(), f"{v.mean():.3f}", va="center", fontsize=7)
    ax.set_xticks(range(len(per_filter)), list(per_filter), rotation=20, ha="right", fontsize=8)
    ax.axhline(-0.9 * np.log(0.9) - 0.1 * np.log(0.1), ls=":", color="grey", lw=1)
    ax.set_ylabel("max over classes of MI (nats)", fontsize=8)
    ax.set_title("Mutual-information score: filters of CSG (orange) vs standard training (blue);\n"
                 "bar = MIS, dotted = the most a filter can carry about one of 10 balanced classes", fontsize=8)
    fig.tight_layout()
    from ..figures import finished
    return finished(fig)


def top_filters(mi: np.ndarray, gate: np.ndarray | None, cls: int, k: int = 3) -> np.ndarray:
    """The class's ``k`` top filters: by gate value (ties broken by MI) for a gated model, by MI otherwise."""
    keys = (mi[cls],) if gate is None else (mi[cls], gate[:, cls])
    return np.lexsort(keys)[::-1][:k].copy()


def plot_filter_maps(images: Tensor, rows: Mapping[str, tuple[Tensor, np.ndarray]], class_name: str) -> Any:
    """What a class's top filters see: for each model (row), each image and each of the class's top
    filters, the filter's activation map (upsampled) over the image.  ``rows``: label →
    (feature maps (N, C, h, w) of ``images``, the top filters' indices)."""
    import matplotlib.pyplot as plt
    n_img, k = len(images), max(len(f) for _, f in rows.values())
    fig, axes = plt.subplots(len(rows), n_img * k, figsize=(1.05 * n_img * k, 1.25 * len(rows) + 0.5), squeeze=False)
    size = images.shape[-2:]
    for r, (label, (maps, filters)) in enumerate(rows.items()):
        up = F.interpolate(maps[:, filters].clamp_min(0), size=size, mode="bilinear", align_corners=False)
        for i in range(n_img):
            for j in range(len(filters)):
                ax = axes[r, i * k + j]
                ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
                m = up[i, j]
                ax.imshow(m / m.max().clamp_min(1e-12), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"image {i + 1}, top {j + 1}", fontsize=6)
                if i == 0 and j == 0:
                    ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
                else:
                    ax.set_xlabel(f"filter {filters[j]}", fontsize=5)
        axes[r, 0].set_xlabel(f"filter {filters[0]}", fontsize=5)
    fig.suptitle(f"Where the top filters of class “{class_name}” fire (each map scaled to its max)", fontsize=8)
    fig.tight_layout()
    from ..figures import finished
    return finished(fig)


def _gate_of(r: ModelResult) -> np.ndarray | None:
    t = r.tables.get("gate_matrix")
    return None if t is None or not len(t) else _table_matrix(t, "gate", "filter", "class")


def _mi_of_result(r: ModelResult) -> np.ndarray | None:
    t = r.tables.get("mutual_information")
    return None if t is None or not len(t) else _table_matrix(t, "mi", "class", "filter")


def figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    """The gate matrices, MIS of CSG vs standard training, and what a class's top filters see."""
    group = [r for r in results_of(results, group=CSG_GROUP) if r.evaluate]
    if not group:
        return {}
    out: dict[str, Any] = {}
    from ..pipeline import load_data, load_trained
    test = load_data(run, "test")
    gates = {r.label or r.key: g for r in group if (g := _gate_of(r)) is not None}
    if gates:
        out["csg_gate_matrix"] = plot_gate_matrices(gates, test.classes)
    mis = {r.label or r.key: mi.max(0) for r in group if (mi := _mi_of_result(r)) is not None}
    if mis:
        out["csg_mis"] = plot_mis(mis)
    cls = test.classes.index(FIGURE_CLASS) if FIGURE_CLASS in test.classes else 0
    idx = torch.nonzero(test.labels == cls).flatten()[:3]
    images = test.images[idx]
    rows = {}
    for r in group:
        mi = _mi_of_result(r)
        if mi is None:
            continue
        model = load_trained(run, r.key)
        rows[r.label or r.key] = (feature_maps(model, images, device=run.device), top_filters(mi, _gate_of(r), cls))
    if rows and len(images):
        out["csg_filter_maps"] = plot_filter_maps(images, rows, test.classes[cls])
    return out


# ----------------------------------------------------------------------------- report
def _twin(r: ModelResult, group: list[ModelResult]) -> ModelResult | None:
    """The ungated model of the same shape as gated ``r`` (``csg_X`` ↔ ``X`` with the same kwargs)."""
    base = r.entry.arch.removeprefix("csg_")
    kwargs = {k: v for k, v in r.entry.kwargs.items() if not k.startswith("gate_")}
    return next((o for o in group if o.entry.arch == base and dict(o.entry.kwargs) == kwargs), None)


def csg_table(results: Mapping[str, ModelResult]) -> pd.DataFrame:
    """One row per model of the ``csg`` group: accuracy (and its difference to the ungated twin),
    gate density and gated accuracy, MIS, filter localisation and the detection AUROCs."""
    group = list(results_of(results, group=CSG_GROUP))
    rows = []
    for r in group:
        gate, mis, loc, det = (r.metric(m) or {} for m in ("gate", "mis", "filter_localisation",
                                                            "adversarial_detection"))
        acc = (r.train or {}).get("test_accuracy")
        twin = _twin(r, group) if r.entry.arch.startswith("csg_") else None
        twin_acc = (twin.train or {}).get("test_accuracy") if twin else None
        rows.append({"model": r.key, "label": r.label or r.key, "test_accuracy": acc,
                     "accuracy_vs_twin": None if acc is None or twin_acc is None else acc - twin_acc,
                     "accuracy_true_gate": gate.get("accuracy_true_gate"), "density": gate.get("density"),
                     "mis": mis.get("mis"), "filter_localisation": loc.get("mean"),
                     "localisation_assignment": loc.get("assignment"), "auroc_forest": det.get("auroc_forest"),
                     "auroc_class_mean": det.get("auroc_class_mean"), "auroc_gate": det.get("auroc_gate"),
                     "attack_success_rate": det.get("attack_success_rate")})
    return pd.DataFrame(rows)


def report(results: Mapping[str, ModelResult]) -> str:
    from ..paper import CSG_CLAIMS
    table = csg_table(results)
    if not len(table):
        return ""

    def f(v: Any, nd: int = 2, signed: bool = False) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        return f"{v:+.{nd}f}" if signed else f"{v:.{nd}f}"

    header = ["model", "test acc. (%)", "Δ vs ungated twin", "acc. with true-label gate (%)", "gate density",
              "MIS (nats)", "filter localisation", "detection AUROC (forest)", "AUROC (class-mean template)",
              "AUROC (gate template)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.itertuples():
        loc = f(r.filter_localisation, 3) + (f" ({r.localisation_assignment})" if r.localisation_assignment else "")
        lines.append("| " + " | ".join([r.label, f(r.test_accuracy), f(r.accuracy_vs_twin, 2, True),
                                         f(r.accuracy_true_gate), f(r.density), f(r.mis, 3), loc, f(r.auroc_forest, 3),
                                         f(r.auroc_class_mean, 3), f(r.auroc_gate, 3)]) + " |")
    claims = "\n".join(f"- {c}" for c in CSG_CLAIMS)
    return ("### Class-specific gates (CSG, Liang et al., ECCV 2020)\n\n" + "\n".join(lines) + "\n\n"
            "Gate density: ‖G‖₁/|G| (1 for an ungated network); the true-label gate sees the label, so its accuracy is "
            "an upper bound, not a test accuracy.  Filter localisation: the grid pointing game on each class's filter "
            "maps, the filters weighted by the gate (gate) or assigned to their highest-MI class (mi).  Detection: PGD "
            "images against clean ones, from the pooled last-layer activations weighted by the predicted class's gate "
            "column (a random forest, cross-validated) or by their distance to a class template.\n\n"
            "The paper's claims (ECCV 2020, on CIFAR-10, ImageNet and PASCAL VOC):\n\n" + claims + "\n\n"
            "![gate matrix](figures/csg_gate_matrix.png) ![MIS](figures/csg_mis.png)\n\n"
            "![top filters](figures/csg_filter_maps.png)\n")


METHOD = register_method(Method(
    name="csg",
    paper="Class-specific gates: Liang et al., \"Training Interpretable Convolutional Neural Networks by "
          "Differentiating Class-specific Filters\", ECCV 2020",
    models=("csg_std_cnn", "csg_bcos_cnn"),
    options=CSGOptions,
    training=training,
    figures=figures,
    report=report,
    order=50,
))
