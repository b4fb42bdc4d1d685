"""B-cosification (Arya, Rao, Böhle, Schiele; NeurIPS 2024): a trained conventional network,
converted into a B-cos network (:func:`bcos_lib.methods.bcosification.convert.bcosify`) and fine-tuned briefly,
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
from typing import Any

from torch import Tensor, nn

from .convert import bcosify
from .layers import set_b, set_bias_scale
from ...core.registry import create_model, register_model
from ...core.contract import StepInfo, StepOutput, TrainHooks
from ...core.config import ranged

__all__ = ["BcosificationOptions", "bcosified", "init", "training", "OPTIONS"]



# ----------------------------------------------------------------------------- the model
@register_model
def bcosified(num_classes: int = 10, image_channels: int = 1, source_arch: str = "std_cnn",
              source_kwargs: dict[str, Any] | None = None, b: float = 2.0, keep_bias: bool = False,
              max_pool: str = "avg", loss: str = "bce", logit_bias: float | None = None,
              input_norm: str = "fold") -> nn.Module:
    """The B-cosified ``source_arch`` (a registered conventional model, or ``torchvision.<name>``,
    e.g. ``torchvision.resnet18``), built with ``source_kwargs``; random weights (a trained model
    is converted by :func:`init`, and a saved one is rebuilt by this builder and then loaded).
    ``b``, ``keep_bias``, ``max_pool``, ``loss``, ``logit_bias``, ``input_norm``: see
    :func:`bcos_lib.methods.bcosification.convert.bcosify`."""
    kwargs = dict(source_kwargs or {})
    if source_arch.startswith("torchvision."):
        import torchvision
        name = source_arch.split(".", 1)[1]
        if name not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"source_arch {source_arch!r}: torchvision has no classification model {name!r}")
        source = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return bcosify(source, b, keep_bias, max_pool, logit_bias=logit_bias, loss=loss, image_channels=image_channels,
                       input_norm=input_norm)
    source = create_model(source_arch, num_classes=num_classes, image_channels=image_channels, **kwargs)
    return bcosify(source, b, keep_bias, max_pool, logit_bias=logit_bias, loss=loss, input_norm=input_norm)


@dataclass
class BcosificationOptions:
    """``models.<key>.options`` of a B-cosified model (B-cosification §3)."""

    b: float = ranged(2.0, ge=1)            # B after conversion (and at the end of fine-tuning)
    b_start: float = ranged(0.0, ge=0)      # ≥ 1: B rises linearly from b_start to b over fine-tuning; 0: B = b throughout
    keep_bias: bool = False   # keep the biases and fade them linearly to 0 over fine-tuning (else removed at once)
    max_pool: str = "avg"     # avg (the paper) | keep
    loss: str = "bce"         # the fine-tuning loss (bce: as B-cos networks; ce: as the source)
    # fold: the source's input normalisation folded into the first layer (exact dynamic linearity in
    # [x, 1 − x]); layer: [x, 1 − x] normalised in front of the network, as the official code does
    input_norm: str = "fold"

    def __post_init__(self) -> None:
        from ...core.config import ConfigError
        if not (math.isfinite(self.b) and self.b >= 1):
            raise ConfigError(f"options.b: B must be a number ≥ 1 (got {self.b})")
        if self.b_start and not 1 <= self.b_start <= self.b:
            raise ConfigError(f"options.b_start: must be 0 (B fixed) or in [1, b = {self.b}] (got {self.b_start})")
        if self.max_pool not in ("avg", "keep"):
            raise ConfigError(f"options.max_pool: 'avg' or 'keep' (got {self.max_pool!r})")
        if self.loss not in ("bce", "ce"):
            raise ConfigError(f"options.loss: 'bce' or 'ce' (got {self.loss!r})")
        if self.input_norm not in ("fold", "layer"):
            raise ConfigError(f"options.input_norm: 'fold' or 'layer' (got {self.input_norm!r})")


def init(parent: nn.Module, options: BcosificationOptions | None) -> nn.Module:
    """The B-cosified copy of the trained ``parent``, recording how :func:`bcosified` rebuilds it."""
    opts = options or BcosificationOptions()
    name = getattr(parent, "model_name", None)
    if name is None:
        raise ValueError("B-cosification starts from a model made by bcos_lib.create_model (a pipeline model "
                         f"named by init_from); got a {type(parent).__name__} without model_name")
    source_kwargs = {k: v for k, v in parent.model_kwargs.items() if k not in ("num_classes", "image_channels")}
    model = bcosify(parent, opts.b, opts.keep_bias, opts.max_pool, loss=opts.loss, input_norm=opts.input_norm)
    if opts.b_start:
        set_b(model, opts.b_start)
    model.model_name = "bcosified"
    model.model_kwargs = {"num_classes": parent.num_classes, "image_channels": parent.image_channels,
                          "source_arch": name, "source_kwargs": source_kwargs, "b": opts.b,
                          "keep_bias": opts.keep_bias, "max_pool": opts.max_pool, "loss": opts.loss,
                          **({"input_norm": opts.input_norm} if opts.input_norm != "fold" else {})}
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
        from ...train import default_step
        b, bias_scale = schedule(opts, info)
        set_b(model, b)
        if opts.keep_bias:
            set_bias_scale(model, bias_scale)
        out = default_step(model, x, y, info)
        out.terms.update(b=b, bias_scale=bias_scale)
        return out

    return TrainHooks(step=step)


# ----------------------------------------------------------------------------- localisation on fixed grids


OPTIONS = BcosificationOptions
