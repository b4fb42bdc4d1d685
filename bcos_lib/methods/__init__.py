"""The method contract: how a paper's method plugs into the shared pipeline.

Every method of the companion (B-cos, CoDA, CSG, DISCOVER, B-cosification, and the
conventional baselines) is one file in this package that calls :func:`register_method`
(and, where it has any, :func:`register_metric`).  The shared stages — ``fit``,
``explain``, ``evaluate``, the figures and the report — iterate over what is registered
and never name a method.  A method file provides, all optional but the first two:

``name`` / ``paper``
    how tables and the README call it, and the paper it reproduces.
``models``
    the names of the model builders (``@register_model``) that belong to the method; the
    pipeline finds a model's method through its ``arch``.
``options``
    a dataclass: the keys a ``params.yaml`` entry may set under ``models.<key>.options``
    (validated like every other section, before a stage writes anything).
``training(model, options, train_config) -> TrainHooks``
    what the method adds to the shared training loop: a training step that sees the
    labels and may add loss terms, and an after-step hook (e.g. renormalising gates).
``init(parent, options) -> model``
    how a model that names ``init_from: <key>`` in ``params.yaml`` is made from that
    trained model (B-cosification); the generated ``dvc.yaml`` then lists
    ``models/<key>.pt`` as a dependency of its training.  Without ``init`` the parent's
    weights are loaded into a fresh model of the entry's ``arch`` (plain fine-tuning).
``figures(results, run) -> {name: Figure}`` and ``report(results) -> markdown``
    the method's own figures and its section of the results.

Whether a model is dynamic linear and which fixed terms its explanation leaves out are
properties of the *model* (``ImageClassifier.dynamic_linear`` and
``ImageClassifier.explanation_bias``), because one method's layers can sit in another's
network (a CSG gate on a B-cos CNN).

Metrics are registered separately (:func:`register_metric`) because they are chosen per
model in ``params.yaml`` (``evaluate.metrics``), whichever method made the model: the
class-specific-gate paper's mutual-information score is computed for gated and ungated
networks alike, so that one table compares them.

See ``bcos_lib/methods/README.md`` for a worked example (the files B-cos touches).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pandas as pd
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EvaluateConfig, ModelEntry, TrainConfig
    from ..data import ImageDataset

__all__ = ["Method", "TrainHooks", "StepInfo", "StepOutput", "Metric", "MetricResult", "EvalContext",
           "ModelResult", "register_method", "register_metric", "get_method", "get_metric", "list_methods",
           "list_metrics", "method_of", "load_methods", "method_options", "metric_options"]


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class StepInfo:
    """Where the training loop is; hooks must depend on nothing else (so a resumed run is exact)."""

    epoch: int          # 0-based
    step: int           # global step, 0-based
    epochs: int
    total_steps: int
    loss_name: str      # the loss the run uses ("bce" or "ce", after resolving "auto")


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise, the logits (for the running
    accuracy) and any extra terms to log per epoch (e.g. ``{"sparsity": 0.12}``)."""

    loss: Tensor
    logits: Tensor
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainHooks:
    """A method's additions to :func:`bcos_lib.train.fit` (all optional).

    ``step(model, x, y, info) -> StepOutput`` replaces the default step
    (``loss(model(prepare_input(x)), y)``; see :func:`bcos_lib.train.default_step`, which a
    method's step may call and add to).  ``after_step(model, info)`` runs after each
    optimiser step (under ``torch.no_grad``).  ``after_epoch(model, info) -> {name: number}``
    runs at the end of each epoch, after the test accuracy; what it returns joins that
    epoch's row of ``history.csv`` (e.g. a localisation score measured on fixed grids, to
    follow it over training).  It must not change the model or draw from the global RNG.
    """

    step: Callable[[nn.Module, Tensor, Tensor, StepInfo], StepOutput] | None = None
    after_step: Callable[[nn.Module, StepInfo], None] | None = None
    after_epoch: Callable[[nn.Module, StepInfo], dict[str, float]] | None = None


# ----------------------------------------------------------------------------- methods
@dataclass
class Method:
    """One paper's method, as the pipeline sees it (module docstring: what each field is for)."""

    name: str
    paper: str
    models: tuple[str, ...] = ()
    options: type | None = None
    training: Callable[[nn.Module, Any, "TrainConfig"], TrainHooks] | None = None
    init: Callable[[nn.Module, Any], nn.Module] | None = None
    figures: Callable[[Mapping[str, "ModelResult"], Any], dict[str, Any]] | None = None
    report: Callable[[Mapping[str, "ModelResult"]], str] | None = None
    order: int = 100   # where its report section goes (smaller first)
    module: str = ""   # the module that registered it (set by register_method; dvc.yaml lists its file)


_METHODS: dict[str, Method] = {}
_ARCH_TO_METHOD: dict[str, str] = {}


def register_method(method: Method) -> Method:
    """Register ``method``; its ``models`` must not belong to another method."""
    if method.name in _METHODS:
        raise KeyError(f"method {method.name!r} is registered twice")
    for arch in method.models:
        if arch in _ARCH_TO_METHOD:
            raise KeyError(f"model {arch!r} is claimed by the methods {_ARCH_TO_METHOD[arch]!r} and {method.name!r}")
    if method.options is not None and not dataclasses.is_dataclass(method.options):
        raise TypeError(f"method {method.name!r}: options must be a dataclass")
    if not method.module:
        method.module = sys._getframe(1).f_globals.get("__name__", "")
    _METHODS[method.name] = method
    for arch in method.models:
        _ARCH_TO_METHOD[arch] = method.name
    return method


def load_methods() -> None:
    """Import every module of this package (each registers its method, metrics and models).

    The modules are found on disk, not imported by name here, so a new method is a new file.
    """
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def list_methods() -> list[Method]:
    load_methods()
    return sorted(_METHODS.values(), key=lambda m: (m.order, m.name))


def get_method(name: str) -> Method:
    load_methods()
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def method_of(arch: str) -> Method:
    """The method a registered model belongs to."""
    load_methods()
    if arch not in _ARCH_TO_METHOD:
        raise KeyError(f"model {arch!r} belongs to no registered method: list it in the `models` of its "
                       f"method's register_method(...) call (bcos_lib/methods/)")
    return _METHODS[_ARCH_TO_METHOD[arch]]


def _build_options(cls: type | None, raw: Mapping[str, Any] | None, where: str) -> Any:
    from ..config import ConfigError, _build
    if cls is None:
        if raw:
            raise ConfigError(f"{where}: this model takes no options (got {', '.join(raw)})")
        return None
    return _build(cls, dict(raw or {}), where)


def method_options(entry: "ModelEntry", key: str = "?") -> Any:
    """The validated ``models.<key>.options`` of ``entry`` (an instance of its method's dataclass)."""
    return _build_options(method_of(entry.arch).options, entry.options, f"models.{key}.options")


# ----------------------------------------------------------------------------- metrics
@dataclass
class EvalContext:
    """What a metric gets: the trained model and everything around it."""

    key: str
    model: nn.Module
    entry: "ModelEntry"
    test_data: "ImageDataset"
    cfg: "EvaluateConfig"
    options: Any                     # the metric's own options (evaluate.options.<metric>)
    device: Any
    seed: int
    log: Callable[[str], None]
    load_train_data: Callable[[], "ImageDataset"]

    def train_data(self) -> "ImageDataset":
        """The training split (loaded on first use; most metrics need only the test split)."""
        if not hasattr(self, "_train"):
            self._train = self.load_train_data()
        return self._train


@dataclass
class MetricResult:
    """``summary``: a few JSON numbers (results/evaluate/<key>/metrics.json under the metric's
    name); ``tables``: long results, each written to results/evaluate/<key>/<name>.csv."""

    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class Metric:
    """An evaluation: ``fn(ctx) -> MetricResult``, or None when it does not apply to the model
    (with a log line saying why).  ``options``: a dataclass for ``evaluate.options.<name>``."""

    name: str
    fn: Callable[[EvalContext], MetricResult | None]
    options: type | None = None
    description: str = ""
    module: str = ""   # the module that registered it (set by register_metric; dvc.yaml lists its file)


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    if metric.name in _METRICS:
        raise KeyError(f"metric {metric.name!r} is registered twice")
    if not metric.module:
        metric.module = sys._getframe(1).f_globals.get("__name__", "")
    _METRICS[metric.name] = metric
    return metric


def _ensure_metrics() -> None:
    from .. import metrics  # noqa: F401  (the shared metrics register themselves)
    load_methods()


def list_metrics() -> list[str]:
    _ensure_metrics()
    return sorted(_METRICS)


def get_metric(name: str) -> Metric:
    _ensure_metrics()
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(sorted(_METRICS))}")
    return _METRICS[name]


def metric_options(name: str, cfg: "EvaluateConfig", where: str = "evaluate") -> Any:
    return _build_options(get_metric(name).options, cfg.options.get(name), f"{where}.options.{name}")


# ----------------------------------------------------------------------------- results
@dataclass
class ModelResult:
    """Everything the stages wrote for one model (None where a stage has not run)."""

    key: str
    entry: "ModelEntry"
    method: str
    label: str
    train: dict[str, Any] | None
    explain: dict[str, Any] | None
    evaluate: dict[str, Any] | None
    history: pd.DataFrame | None
    tables: dict[str, pd.DataFrame]
    explanations: dict[str, Any] | None

    def metric(self, name: str) -> dict[str, Any] | None:
        """The summary a metric wrote for this model (None if it did not run)."""
        return (self.evaluate or {}).get(name)


def results_of(results: Mapping[str, ModelResult], method: str | None = None,
               group: str | None = None) -> Iterator[ModelResult]:
    """The results of one method and/or one group, in params.yaml order."""
    for r in results.values():
        if (method is None or r.method == method) and (group is None or r.entry.group == group):
            yield r
