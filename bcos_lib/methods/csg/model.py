"""Class-specific gates' model side (Liang et al., ECCV 2020, §3): the gated twins
``csg_std_cnn`` and ``csg_bcos_cnn`` — the ``std_cnn`` / ``bcos_cnn`` of the same arguments with a
gate in front of the 1×1 classifier (:func:`add_class_gate`), so each has an ungated twin of
exactly the same shape — and the alternating training (:class:`CSGOptions`, :func:`training`):
the schedule is a pure function of the epoch (or step), the gate a parameter in the
``state_dict``, so a resumed run is exact.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ...core.config import ConfigError
from .layers import ClassSpecificGate, class_gates, gate_labels
from ...models.cnn import ConvNet
from ..bcos.model import bcos_cnn
from ..standard.model import std_cnn
from ...core.registry import register_model
from ...train import default_step
from ...core.contract import StepInfo, StepOutput, TrainHooks
from ...core.config import ranged

__all__ = ["CSGOptions", "UNITS", "is_csg_epoch", "is_csg_step", "add_class_gate", "csg_std_cnn", "csg_bcos_cnn",
           "training", "csg_step", "OPTIONS"]

#: the params.yaml group of the four models compared in the report (standard, CSG, B-cos, B-cos + CSG)
CSG_GROUP = "csg"


# ----------------------------------------------------------------------------- options and schedule
@dataclass
class CSGOptions:
    """``models.<key>.options`` of a gated model (ECCV 2020 §3.3–3.4).

    The first ``warmup_epochs`` epochs are standard.  After them the two kinds of training
    alternate with ``period`` counted in units of ``unit``: with ``unit: epoch`` epoch e is a CSG
    epoch when (e − warmup_epochs) is a multiple of ``period`` (period 3: one CSG epoch in
    three); ``gated`` of every ``period`` are CSG epochs, the first ones of each period (period 3,
    gated 2: two CSG epochs, then a standard one); with ``unit: step`` the alternation is by batch, global step s being a CSG step
    when s mod ``period`` < ``gated`` (period 2: every other batch gated), so that within
    every epoch the standard steps teach each filter to stay quiet for the classes its gate
    closes it to (on a CSG step it is multiplied by 0 for them and learns nothing about them).
    """

    warmup_epochs: int = ranged(1, ge=0)
    period: int = ranged(2, ge=1)
    gated: int = ranged(1, ge=1)    # how many of every `period` epochs (steps) are CSG ones: the first `gated`
    unit: str = "epoch"             # "epoch" | "step": what ``period`` counts
    sparsity_weight: float = ranged(1e-3, ge=0)   # λ
    density: float = ranged(0.2, gt=0, le=1)            # d: only a density above it is penalised

    def __post_init__(self) -> None:
        problems = []
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be ≥ 0 (got {self.warmup_epochs})")
        if self.period < 1:
            problems.append(f"period must be ≥ 1 (got {self.period})")
        elif not 1 <= self.gated <= self.period:
            problems.append(f"gated must lie in 1 … period ({self.period}) (got {self.gated})")
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
    return options.unit == "step" or e % options.period < options.gated


def is_csg_step(info: StepInfo, options: CSGOptions) -> bool:
    """Whether the training step at ``info`` is a CSG step (gated, with the sparsity loss and
    the renormalisation after it): a pure function of the epoch and the global step."""
    if not is_csg_epoch(info.epoch, options):
        return False
    return options.unit == "epoch" or info.step % options.period < options.gated


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


OPTIONS = CSGOptions
