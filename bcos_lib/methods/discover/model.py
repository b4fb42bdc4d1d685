"""DISCOVER's model side (Panousis & Chatzis, NeurIPS 2023, §3): ``lwta_cnn`` — the standard CNN's
shape with stochastic LWTA (:mod:`.layers`) in place of ReLU — and ``lwta_vit``, a conventional
small ViT with LWTA in its MLPs; ``competitors=1`` gives back the usual activation (the twins of
the comparison).  The options set the Gumbel temperature and, optionally, the KL term against a
uniform prior over winners (off by default, as in the public code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ...core.config import ConfigError
from .layers import LWTA
from ...layers.encoding import Normalize
from ...models.cnn import DEFAULT_CHANNELS, DEFAULT_STRIDES, ConvNet
from ...core.data import FMNIST_MEAN, FMNIST_STD
from ...models.vit import PositionEmbedding, VisionTransformer
from ...core.registry import register_model
from ...core.contract import StepInfo, StepOutput, TrainHooks
from ...core.config import ranged

__all__ = ["lwta_cnn", "lwta_vit", "DiscoverOptions", "training", "lwta_layers", "set_test_mode", "OPTIONS"]


# ----------------------------------------------------------------------------- models
def _check_widths(widths: Sequence[int], competitors: int, what: str) -> None:
    if isinstance(competitors, bool) or not isinstance(competitors, int) or competitors < 1:
        raise ValueError(f"competitors (U) must be an integer ≥ 1, got {competitors!r}")
    bad = [w for w in widths if w % competitors]
    if bad:
        raise ValueError(f"competitors={competitors} does not divide the {what} {list(bad)}: LWTA needs blocks of U "
                         f"units (models.<key>.kwargs.competitors / .{what} in params.yaml); use widths that are "
                         f"multiples of U, or U = 1 for the usual activation")


def _scale_norms(norms: Sequence[nn.Module], scale: float) -> None:
    if not scale > 0:
        raise ValueError(f"norm_scale must be > 0, got {scale!r}")
    for norm in norms:
        nn.init.constant_(norm.weight, scale)


@register_model
def lwta_cnn(num_classes: int = 10, image_channels: int = 1, channels: Sequence[int] = DEFAULT_CHANNELS,
             strides: Sequence[int] = DEFAULT_STRIDES, competitors: int = 8, norm_scale: float = 1.0,
             mean: float = FMNIST_MEAN, std: float = FMNIST_STD) -> ConvNet:
    """``std_cnn`` with a stochastic LWTA of ``competitors`` channels per block in place of every
    ReLU (DISCOVER §3); ``competitors`` must divide every width.  U = 1: exactly ``std_cnn``.

    ``norm_scale``: the initial scale γ of the batch norms in front of the LWTA layers.  The
    winner is sampled from softmax(h) of the block's pre-activations, which batch norm makes
    unit-variance: then the largest of 8 units wins only about a third of the samples, and the
    network first has to learn larger pre-activations before its competitions mean anything.  A
    larger initial γ makes them decisive from the start (README, DISCOVER: the measured effect)."""
    _check_widths(channels, competitors, "channels")

    def conv(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=False, **kw)

    def classifier(ci: int, co: int, **kw) -> nn.Conv2d:
        return nn.Conv2d(ci, co, bias=True, **kw)

    model = ConvNet(image_channels=image_channels, num_classes=num_classes, channels=channels, strides=strides,
                    conv=conv, classifier=classifier, norm=nn.BatchNorm2d,
                    act=lambda: LWTA(competitors, dim=1, fallback="relu"),
                    stem=Normalize([mean] * image_channels, [std] * image_channels), logit=None,
                    encoding="none", default_loss="ce")
    _scale_norms([m for m in model.features if isinstance(m, nn.BatchNorm2d)], norm_scale)
    return model


class AdditivePositionEmbedding(PositionEmbedding):
    """The usual ViT position embedding, ``tokens + E`` (the B-cos ViT's ``E · m(x)`` keeps its
    explanation exact; a conventional ViT has no such identity to keep)."""

    def forward(self, tokens: Tensor, x: Tensor) -> Tensor:
        return tokens + self.embedding(*tokens.shape[-2:]).to(tokens.dtype)


class SelfAttention(nn.Module):
    """Conventional multi-head self-attention on (N, tokens, D) (``torch.nn.MultiheadAttention``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class ConventionalViT(VisionTransformer):
    """The small ViT of ``bcos_lib.models.vit`` with an additive position embedding."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        old = self.pos_embed
        self.pos_embed = AdditivePositionEmbedding(old.weight.shape[1], old.grid, old.patch_size, old.image_channels,
                                                   old.resize)


@register_model
def lwta_vit(num_classes: int = 10, image_channels: int = 1, image_size: int = 28, patch_size: int = 4,
             dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, competitors: int = 8,
             norm_scale: float = 1.0, pos_resize: str = "tile", mean: float = FMNIST_MEAN,
             std: float = FMNIST_STD) -> VisionTransformer:
    """A conventional small ViT (linear layers with biases, layer norm, softmax attention, the input
    normalised inside) whose MLPs use a stochastic LWTA over blocks of ``competitors`` hidden units
    (DISCOVER's ViTs); U = 1: the usual GELU ViT.  Same shape as ``bcos_vit``.  ``norm_scale``: the
    initial scale of the layer norm in front of every MLP, which sets the scale of the competing
    pre-activations (as in ``lwta_cnn``)."""
    mlp_dim = int(round(mlp_ratio * dim))
    _check_widths([mlp_dim], competitors, "MLP width (mlp_ratio · dim)")

    def patch_embed(ci: int, co: int, **kw) -> nn.Module:
        return nn.Sequential(Normalize([mean] * ci, [std] * ci), nn.Conv2d(ci, co, **kw))

    model = ConventionalViT(image_channels=image_channels, num_classes=num_classes, image_size=image_size,
                            patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim,
                            patch_embed=patch_embed, linear=nn.Linear, norm=nn.LayerNorm, attention=SelfAttention,
                            act=lambda: LWTA(competitors, dim=-1, fallback="gelu"), pos_resize=pos_resize,
                            logit=None, encoding="none", default_loss="ce")
    _scale_norms([block.norm2 for block in model.blocks], norm_scale)
    return model


def lwta_layers(model: nn.Module) -> list[LWTA]:
    """The LWTA layers of ``model`` that compete (U > 1)."""
    return [m for m in model.modules() if isinstance(m, LWTA) and m.competitors > 1]


def set_test_mode(model: nn.Module, mode: str) -> list[str]:
    """Set every LWTA layer's test mode ("deterministic" or "stochastic"); returns the previous modes."""
    layers = lwta_layers(model)
    old = [m.test_mode for m in layers]
    for m in layers:
        m.test_mode = mode
    return old


# ----------------------------------------------------------------------------- training
@dataclass
class DiscoverOptions:
    """``models.<key>.options`` of an LWTA model."""

    temperature: float = ranged(1.67, gt=0)   # Gumbel-softmax τ of the straight-through winner samples in training
    kl_weight: float = ranged(0.0, ge=0)      # weight of the KL(winner posterior ‖ uniform) term; 0 = off, as the public code

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"models.<key>.options.temperature must be > 0 (got {self.temperature})")
        if not self.kl_weight >= 0:
            raise ConfigError(f"models.<key>.options.kl_weight must be ≥ 0 (got {self.kl_weight}); 0 switches the "
                              f"KL term off")


def training(model: nn.Module, options: DiscoverOptions | None, train_config: Any) -> TrainHooks:
    """Set the Gumbel temperature on every LWTA layer; with ``kl_weight`` > 0, a step that adds
    ``kl_weight · Σ_layers KL`` (each layer's mean over blocks, :func:`bcos_lib.layers.lwta_kl`)."""
    opts = options or DiscoverOptions()
    layers = lwta_layers(model)
    for m in layers:
        m.temperature = opts.temperature
        m.track_kl = opts.kl_weight > 0
    if opts.kl_weight == 0 or not layers:
        return TrainHooks()

    def step(model: nn.Module, x: Tensor, y: Tensor, info: StepInfo) -> StepOutput:
        from ...train import default_step
        out = default_step(model, x, y, info)
        kls = [m.last_kl for m in lwta_layers(model) if m.last_kl is not None]
        if not kls:
            raise RuntimeError("the KL term is on but no LWTA layer computed it: is the model in training mode?")
        kl = torch.stack(kls).sum()
        return StepOutput(loss=out.loss + opts.kl_weight * kl, logits=out.logits,
                          terms={**out.terms, "kl": float(kl.detach())})

    return TrainHooks(step=step)


# ----------------------------------------------------------------------------- metrics


OPTIONS = DiscoverOptions
