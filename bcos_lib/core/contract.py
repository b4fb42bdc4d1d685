"""The method contract: the types through which a paper's method plugs into the shared pipeline.

Each paper of the companion is one package ``bcos_lib/methods/<paper>/``, split by the stage
that needs it, so that an edit reruns only the stages it can change:

``__init__.py``
    the manifest, ``METHOD = MethodSpec(...)``: the method's name, its paper, the model
    builders it owns (``models``), the ``params.yaml`` groups it draws (``groups``: a model's
    ``group`` must be one of these), the metrics it registers (``metrics``), and where its
    report section goes (``order``).  It imports nothing heavy.
``model.py``
    what the train stage runs: the layers it owns (or imports from another paper's package),
    the model builders (``@register_model``), and optionally ``OPTIONS`` (a dataclass for
    ``models.<key>.options``), ``training(model, options, train_config) -> TrainHooks`` and
    ``init(parent, options) -> model`` (for entries with ``init_from``).
``metrics.py``
    what the evaluate stage runs: the metrics it registers (``register_metric``).
``present.py``
    what the figures and report stages run: ``figures(results, run) -> {name: Figure}``,
    ``report(results) -> markdown`` and ``PAPER_NUMBERS`` (the paper's reported numbers that
    the tables quote).
``claims.py``
    what the claims stage tests: ``CLAIMS``, the paper's claims as data
    (:class:`bcos_lib.claims.Claim`), and any sample source they need beyond the shared ones.

A method with nothing to present has no ``present.py``; one without builders no ``model.py``.
The registry (:mod:`bcos_lib.core.registry`) reads the manifests, and imports a side only when a
stage asks for it: the train stage of a CoDA net imports ``methods/coda/model.py`` and nothing
of DISCOVER.  ``python -m bcos_lib.dvcgen`` derives each stage's code dependencies from the
same imports.

Metrics are chosen per model in ``params.yaml`` (``evaluate.metrics``), whichever method made
the model: the class-specific-gate paper's mutual-information score is computed for gated and
ungated networks alike, so that one table compares them.

See ``bcos_lib/methods/README.md`` for a worked example (the files B-cos touches).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from torch import Tensor, nn

    from .data import ImageDataset

__all__ = ["MethodSpec", "Method", "TrainHooks", "StepInfo", "StepOutput", "Metric", "MetricResult", "EvalContext",
           "ModelResult", "results_of"]


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
@dataclass(frozen=True)
class MethodSpec:
    """A method's manifest (``METHOD`` in ``bcos_lib/methods/<paper>/__init__.py``)."""

    name: str
    paper: str
    models: tuple[str, ...] = ()    # the model builders it owns (defined in its model.py)
    groups: tuple[str, ...] = ()    # the params.yaml groups its figures and tables draw
    metrics: tuple[str, ...] = ()   # the metrics its metrics.py registers
    order: int = 100                # where its report section goes (smaller first)
    #: its figures load the trained models that ran these metrics (e.g. CSG's filter maps: the models
    #: scored with "mis"); dvc.yaml lists those model files as dependencies of the figures stage
    figures_load: tuple[str, ...] = ()


@dataclass
class Method:
    """One paper's method, as the pipeline sees it.

    A method read from a package (``package``) loads its sides on first use: ``options``,
    ``training`` and ``init`` from ``model.py``, ``figures`` and ``report`` from ``present.py``.
    A method defined in code (a test, a notebook) passes them directly."""

    name: str
    paper: str
    models: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    order: int = 100
    figures_load: tuple[str, ...] = ()
    package: str = ""   # e.g. "bcos_lib.methods.coda"; empty for a method defined in code
    options: type | None = None
    training: Callable[[nn.Module, Any, Any], TrainHooks] | None = None
    init: Callable[[nn.Module, Any], nn.Module] | None = None
    figures: Callable[[Mapping[str, "ModelResult"], Any], dict[str, Any]] | None = None
    report: Callable[[Mapping[str, "ModelResult"]], str] | None = None
    paper_numbers: dict[str, Any] = field(default_factory=dict)
    claims: tuple[Any, ...] = ()   # bcos_lib.claims.Claim, from claims.py
    module: str = ""    # the module that defined a method given in code
    _loaded: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: MethodSpec, package: str) -> "Method":
        return cls(name=spec.name, paper=spec.paper, models=tuple(spec.models), groups=tuple(spec.groups),
                   metrics=tuple(spec.metrics), order=spec.order, figures_load=tuple(spec.figures_load),
                   package=package)

    def side(self, name: str) -> Any:
        """The module ``<package>.<name>`` (``model``, ``metrics``, ``present``), imported on first
        use; None for a method defined in code or a package without that side."""
        if not self.package:
            return None
        module = f"{self.package}.{name}"
        if importlib.util.find_spec(module) is None:
            return None
        return importlib.import_module(module)

    def load(self, side: str) -> "Method":
        """Fill the fields that ``side`` provides (``model``: options, training, init; ``present``:
        figures, report, paper_numbers; ``metrics``: registers the method's metrics; ``claims``:
        claims)."""
        if side in self._loaded:
            return self
        self._loaded.add(side)
        mod = self.side(side)
        if mod is None:
            return self
        if side == "model":
            self.options = getattr(mod, "OPTIONS", None)
            self.training = getattr(mod, "training", None)
            self.init = getattr(mod, "init", None)
        elif side == "present":
            self.figures = getattr(mod, "figures", None)
            self.report = getattr(mod, "report", None)
            self.paper_numbers = dict(getattr(mod, "PAPER_NUMBERS", {}))
        elif side == "claims":
            self.claims = tuple(getattr(mod, "CLAIMS", ()))
        return self


# ----------------------------------------------------------------------------- metrics
@dataclass
class EvalContext:
    """What a metric gets: the trained model and everything around it."""

    key: str
    model: nn.Module
    entry: Any
    test_data: "ImageDataset"
    cfg: Any
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


# ----------------------------------------------------------------------------- results
@dataclass
class ModelResult:
    """Everything the stages wrote for one model (None where a stage has not run)."""

    key: str
    entry: Any
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
    """The results of one method and/or one group, in params.yaml order (seed replicas, which only
    the claims ledger reads, left out)."""
    for r in results.values():
        if getattr(r.entry, "replica_of", ""):
            continue
        if (method is None or r.method == method) and (group is None or r.entry.group == group):
            yield r
