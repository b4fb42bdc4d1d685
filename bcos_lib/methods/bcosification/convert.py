"""B-cosification: a pretrained conventional network made into a B-cos network
(Arya, Rao, Böhle, Schiele; NeurIPS 2024).

``bcosify(model)`` returns a B-cos network that starts from ``model``'s weights and plugs
into the project's explain/evaluate code (an :class:`~bcos_lib.models.base.ImageClassifier`
taking ``[x, 1 − x]``).  The conversion (paper §3; the layers: :mod:`bcos_lib.layers.bcosified`):

1. input ``[x, 1 − x]``: the first layer's weights ``[W, −W]/2`` after normalising with mean
   ``(μ, 1 − μ)`` and std ``(σ, σ)``, the normalisation folded into the weights
   (:func:`~bcos_lib.layers.bcosified.encoded_input_weight`);
2. every conv/linear a B-cos layer with the pretrained, unnormalised weights and exponent B;
3. biases removed (``keep_bias=True`` keeps them, to be faded out over fine-tuning), batch
   norm uncentred with its mean folded into the (removed) bias, max-pool as avg-pool
   (``max_pool="keep"`` keeps it: a max-pool is dynamic linear too), ReLUs kept;
4. the classifier as a 1×1 B-cos convolution *before* global average pooling, then a fixed
   logit bias (B-cos v2 §4.1).

At B = 1 with the biases kept and the max-pools kept the converted network computes the
original's outputs; with the biases removed it is dynamic linear and its explanation
``W(x) ⊙ x`` sums to the logit minus the fixed logit bias (tests/test_bcosify.py).

Supported sources: the project's ``std_cnn`` and ``std_resnet``; torchvision's ResNets, VGGs
(with or without BN), DenseNets and ViTs; the image tower of an ``open_clip`` ModifiedResNet
CLIP (its attention pooling included, :func:`bcosify_clip_visual`).  A module the converter
does not know stops it with a :class:`BcosifyError` that names the module and its path.

Pretrained torchvision weights are read from the torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``) when they are there, never downloaded
(:func:`torchvision_model`).
"""
from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.logit import LogitLayer
from ...layers.encoding import Normalize
from ..bcos.layers import BcosConv2d, BcosLinear
from .layers import (BcosifiedAttention, BcosifiedConv2d, BcosifiedLinear, DetachedLayerNorm, DynamicGELU, FoldedBatchNorm2d, encoded_input_weight, live_biases)
from ...layers.explanation_mode import ExplainableModule
from ...models.base import ImageClassifier

__all__ = ["BcosifyError", "Conversion", "bcosify", "BcosifiedNetwork", "BcosifiedViT", "BcosifiedCLIPVisual",
           "CLIPZeroShotClassifier", "bcosify_clip_visual", "clip_zero_shot", "load_clip_rn50", "torchvision_model",
           "torchvision_weights_file", "convert_modules", "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class BcosifyError(ValueError):
    """The network holds something B-cosification does not know how to convert."""


@dataclass(frozen=True)
class Conversion:
    """How to convert: exponent ``b``; ``keep_bias`` (keep every bias, scale 1, to be faded
    out by fine-tuning); ``max_pool``: ``"avg"`` (the paper) or ``"keep"``; ``input_norm``:
    :data:`INPUT_NORMS`."""

    b: float = 2.0
    keep_bias: bool = False
    max_pool: str = "avg"
    input_norm: str = "fold"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.b) and self.b >= 1):
            raise ValueError(f"b must be a real number ≥ 1 (got {self.b})")
        if self.max_pool not in ("avg", "keep"):
            raise ValueError(f"max_pool must be 'avg' or 'keep' (got {self.max_pool!r})")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)} (got {self.input_norm!r})")


#: where the source's input normalisation goes: ``fold`` into the first layer's weights (the input
#: stays ``[x, 1 − x]``: exact dynamic linearity in the images), or ``layer``, a normalisation of
#: ``[x, 1 − x]`` in front of the network, as the official B-cosification code does (the first
#: layer's patch norm then sees the normalised input; the explanation is of that input)
INPUT_NORMS = ("fold", "layer")


# ----------------------------------------------------------------------------- module rules
#: parameter-free modules that are linear (or identities in eval mode): kept as they are
_LINEAR_PASSTHROUGH = (nn.Identity, nn.Dropout, nn.Flatten, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
#: containers whose own forward only calls their children and adds/concatenates (checked by
#: reading each one's source): converting the children converts the container
_KNOWN_CONTAINERS = {
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
    "torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.Bottleneck",
    "torchvision.models.densenet._DenseLayer", "torchvision.models.densenet._DenseBlock",
    "torchvision.models.densenet._Transition",
    "torchvision.models.vision_transformer.EncoderBlock", "torchvision.models.vision_transformer.MLPBlock",
    "open_clip.modified_resnet.Bottleneck",
    "bcos_lib.models.resnet.BasicBlock",
}


def _qualname(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def _copy_conv(conv: nn.Conv2d, cfg: Conversion, weight: Tensor | None = None, in_channels: int | None = None
               ) -> BcosifiedConv2d:
    if conv.padding_mode != "zeros":
        raise BcosifyError(f"padding_mode={conv.padding_mode!r} is not supported (only zero padding keeps the "
                           "layer linear)")
    keep = cfg.keep_bias and conv.bias is not None
    new = BcosifiedConv2d(in_channels or conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, b=cfg.b, keep_bias=keep)
    with torch.no_grad():
        new.weight.copy_(conv.weight if weight is None else weight)
        if keep:
            new.bias.copy_(conv.bias)
    return new


def _copy_linear(lin: nn.Linear, cfg: Conversion) -> BcosifiedLinear:
    keep = cfg.keep_bias and lin.bias is not None
    new = BcosifiedLinear(lin.in_features, lin.out_features, b=cfg.b, keep_bias=keep)
    with torch.no_grad():
        new.weight.copy_(lin.weight)
        if keep:
            new.bias.copy_(lin.bias)
    return new


def _convert_leaf(m: nn.Module, cfg: Conversion, path: str) -> nn.Module | None:
    """The converted module for a leaf ``m``, or None when ``m`` is not a known leaf."""
    if isinstance(m, (BcosConv2d, BcosLinear, ExplainableModule)):
        raise BcosifyError(f"module {path or '<root>'} ({type(m).__name__}) is already a B-cos/explainable layer: "
                           "B-cosification converts conventional networks")
    if isinstance(m, nn.Conv2d):
        return _copy_conv(m, cfg)
    if isinstance(m, nn.Linear):
        return _copy_linear(m, cfg)
    if isinstance(m, nn.BatchNorm2d):
        return FoldedBatchNorm2d.from_batch_norm(m, cfg.keep_bias)
    if isinstance(m, nn.LayerNorm):
        return DetachedLayerNorm.from_layer_norm(m, cfg.keep_bias)
    if isinstance(m, nn.MultiheadAttention):
        return BcosifiedAttention.from_multihead_attention(m, cfg.b, cfg.keep_bias)
    if isinstance(m, nn.MaxPool2d):
        if cfg.max_pool == "keep":
            return m
        if m.dilation not in (1, (1, 1)) or m.return_indices:
            raise BcosifyError(f"module {path} ({m}): a dilated max-pool or one returning indices has no avg-pool "
                               "equivalent; pass max_pool='keep'")
        return nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
    if isinstance(m, nn.ReLU):
        return nn.ReLU()  # not in place: the explanation's backward pass needs the input
    if isinstance(m, nn.GELU):
        if m.approximate != "none":
            raise BcosifyError(f"module {path} (GELU(approximate={m.approximate!r})): only the exact GELU is "
                               "supported")
        return DynamicGELU()
    if isinstance(m, _LINEAR_PASSTHROUGH):
        return m
    return None


def convert_modules(module: nn.Module, cfg: Conversion, path: str = "") -> nn.Module:
    """``module`` with every layer replaced by its B-cosified counterpart (in place for containers).

    Leaves follow the rules above; containers are converted child by child when their forward
    is known to use nothing but their children, additions and concatenations."""
    new = _convert_leaf(module, cfg, path)
    if new is not None:
        return new
    children = list(module.named_children())
    if not children or _qualname(module) not in _KNOWN_CONTAINERS:
        kind = "a container whose forward is not known to be dynamic linear" if children else "not supported"
        raise BcosifyError(
            f"cannot B-cosify module {path or '<root>'} ({_qualname(module)}): {kind}. Supported layers: Conv2d, "
            "Linear, BatchNorm2d, LayerNorm, MultiheadAttention, MaxPool2d, ReLU, GELU, Dropout, Identity, "
            "AvgPool2d, AdaptiveAvgPool2d, Flatten and the blocks of torchvision's ResNet/DenseNet/ViT and "
            "open_clip's ModifiedResNet; replace the module or add a rule in bcos_lib/methods/bcosification/convert.py")
    if getattr(module, "memory_efficient", False):
        module.memory_efficient = False  # DenseNet's checkpointed path re-runs the forward: not needed here
    for name, child in children:
        setattr(module, name, convert_modules(child, cfg, f"{path}.{name}" if path else name))
    return module


def _encode_first_conv(features: nn.Module, path: str, mean: Sequence[float], std: Sequence[float],
                       cfg: Conversion, image_channels: int | None = None) -> tuple[int, Tensor | None, Tensor | None]:
    """Replace the (already converted) first conv at ``path`` by one on ``[x, 1 − x]`` inputs.

    ``image_channels=1`` for a source that takes RGB: grey images repeated to RGB, folded into
    the weights (W·[x, x, x] = (Σ_c W_c)·x).  Returns the image channels the network takes and,
    with ``cfg.input_norm == "layer"``, the mean ``(μ, 1 − μ)`` and std ``(σ, σ)`` that normalise
    ``[x, 1 − x]`` in front of the layer, whose weights are then ``[W, −W]/2`` (B-cosification
    §3.1 as the official code computes it); else ``None, None`` (folded into the weights)."""
    parent_path, _, name = path.rpartition(".")
    parent = features.get_submodule(parent_path) if parent_path else features
    conv = getattr(parent, name)
    c = conv.in_channels
    if len(mean) != c or len(std) != c:
        raise BcosifyError(f"the first layer {path} takes {c} channel(s) but mean/std have {len(mean)}/{len(std)} "
                           "entries: pass the source network's input normalisation (mean=…, std=…)")
    if conv.groups != 1:
        raise BcosifyError(f"the first layer {path} is a grouped convolution: not supported")
    channels = c if image_channels is None else image_channels
    norm_mean = norm_std = None
    if cfg.input_norm == "layer":
        if channels != c:
            raise BcosifyError(f"input_norm='layer' normalises each of the source's {c} input channels: it cannot "
                               "take grey images repeated to them (image_channels=1); use input_norm='fold'")
        w = torch.cat([conv.weight.detach(), -conv.weight.detach()], dim=1) / 2
        norm_mean = torch.tensor([*mean, *(1 - m for m in mean)], dtype=torch.float64).view(1, -1, 1, 1)
        norm_std = torch.tensor([*std, *std], dtype=torch.float64).view(1, -1, 1, 1)
    else:
        w = encoded_input_weight(conv.weight.detach(), torch.tensor(mean, dtype=torch.float64),
                                 torch.tensor(std, dtype=torch.float64))
    if channels != c:
        if channels != 1:
            raise BcosifyError(f"the first layer {path} takes {c} channel(s); image_channels={channels} can only "
                               f"be {c} or 1 (grey images repeated to every channel)")
        w = torch.cat([w[:, :c].sum(1, keepdim=True), w[:, c:].sum(1, keepdim=True)], 1)
    new = BcosifiedConv2d(2 * channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, b=cfg.b, keep_bias=conv.bias is not None and cfg.keep_bias)
    with torch.no_grad():
        new.weight.copy_(w)
        if new.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, name, new)
    return channels, norm_mean, norm_std


def _linear_as_conv(lin: nn.Linear, in_channels: int | None = None, kernel: int = 1) -> nn.Conv2d:
    """A linear layer on flattened (C, k, k) features as the equivalent k×k convolution."""
    c = in_channels or lin.in_features
    if c * kernel * kernel != lin.in_features:
        raise BcosifyError(f"{lin} cannot act on {c}×{kernel}×{kernel} features")
    conv = nn.Conv2d(c, lin.out_features, kernel, bias=lin.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(lin.weight.view(lin.out_features, c, kernel, kernel))
        if lin.bias is not None:
            conv.bias.copy_(lin.bias)
    return conv


# ----------------------------------------------------------------------------- the converted networks
class BcosifiedNetwork(ImageClassifier):
    """A B-cosified CNN: ``features`` (the source's converted trunk, first layer on
    ``[x, 1 − x]``) → ``classifier`` (1×1 B-cos conv) → global average pool → fixed logit bias.
    Dynamic linear once no bias is left (:func:`~bcos_lib.layers.bcosified.live_biases`)."""

    encoding = "add_inverse"

    def __init__(self, *, image_channels: int, num_classes: int, features: nn.Module, classifier: nn.Module,
                 logit_bias: float | None, loss: str, layer_titles: dict[str, str] | None = None,
                 input_mean: Tensor | None = None, input_std: Tensor | None = None):
        super().__init__(image_channels, num_classes)
        self.default_loss = loss
        if input_mean is not None:   # input_norm="layer": [x, 1 − x] normalised before the first layer
            self.encoding = "add_inverse_normalised"
            self.register_buffer("input_mean", input_mean.float())
            self.register_buffer("input_std", input_std.float())
        self.features = features
        self.classifier = classifier
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logit = LogitLayer(num_classes, 1.0, logit_bias)
        self._layer_titles = layer_titles or {}

    @property
    def dynamic_linear(self) -> bool:  # type: ignore[override]
        return not live_biases(self)

    def explanation_layers(self) -> dict[str, str]:
        return dict(self._layer_titles)

    def class_maps(self, x: Tensor) -> Tensor:
        """Per-position class evidence before pooling, (N, K, H', W')."""
        self.check_input(x)
        return self.classifier(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.logit(self.pool(self.class_maps(x)).flatten(1))


class _InputMass(nn.Module):
    """m(x) for ``[x, 1 − x]`` inputs: the mean of the channel sums over a window, divided by C.

    Every pixel's 2C channels sum to C, so m(x) = 1 exactly; but m is *linear* in x, so a
    constant times m(x) is part of ``W(x) x`` (the same device as :class:`bcos_lib.models.vit.PositionEmbedding`)."""

    def __init__(self, image_channels: int):
        super().__init__()
        self.image_channels = image_channels

    def forward(self, x: Tensor, window: int | None = None) -> Tensor:
        s = x.sum(1, keepdim=True) / self.image_channels
        return s.mean((2, 3)) if window is None else F.avg_pool2d(s, window, stride=window)


class BcosifiedViT(ImageClassifier):
    """A B-cosified torchvision ``VisionTransformer``.

    The class token and the position embedding are constants added to the tokens, i.e.
    biases; here they are multiplied by the input mass m(x) (exactly 1 for ``[x, 1 − x]``
    inputs, and linear in x), so the forward pass is the original one and the explanation
    still sums to the logit: their share of the evidence is spread over the pixels of the
    image (class token) or of the token's patch (position embedding).  The classifier acts on
    the class token (there is no pooling to move it before)."""

    encoding = "add_inverse"

    def __init__(self, *, image_channels: int, num_classes: int, image_size: int, patch_size: int,
                 patch_embed: nn.Module, class_token: Tensor, pos_embedding: Tensor, layers: nn.Module,
                 norm: nn.Module, head: nn.Module, logit_bias: float | None, loss: str):
        super().__init__(image_channels, num_classes)
        self.default_loss = loss
        self.image_size, self.patch_size = image_size, patch_size
        self.fixed_input_size = image_size
        self.patch_embed = patch_embed
        self.class_token = nn.Parameter(class_token.detach().clone())
        self.pos_embedding = nn.Parameter(pos_embedding.detach().clone())
        self.mass = _InputMass(image_channels)
        self.layers, self.norm, self.head = layers, norm, head
        self.logit = LogitLayer(num_classes, 1.0, logit_bias)

    @property
    def dynamic_linear(self) -> bool:  # type: ignore[override]
        return not live_biases(self)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}×{self.image_size} images (got {tuple(x.shape[-2:])})")
        n = len(x)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)                     # (N, T, D)
        patch_mass = self.mass(x, self.patch_size).flatten(1).unsqueeze(-1)         # (N, T, 1)
        image_mass = self.mass(x).view(n, 1, 1)                                     # (N, 1, 1)
        cls = (self.class_token + self.pos_embedding[:, :1]) * image_mass
        tokens = torch.cat([cls, tokens + self.pos_embedding[:, 1:] * patch_mass], 1)
        out = self.norm(self.layers(tokens))[:, 0]
        return self.logit(self.head(out))


def _imagenet_or(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
                 ) -> tuple[Sequence[float], Sequence[float]]:
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std, or neither")
    if mean is None:
        if channels != 3:
            raise BcosifyError(f"the network takes {channels} channel(s): pass its input normalisation (mean=…, "
                               "std=…); the ImageNet default is for RGB")
        return IMAGENET_MEAN, IMAGENET_STD
    return mean, std


def _num_classes_of(classifier: nn.Module) -> int:
    return classifier.out_features if isinstance(classifier, nn.Linear) else classifier.out_channels


def bcosify(model: nn.Module, b: float = 2.0, keep_bias: bool = False, max_pool: str = "avg",
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
            logit_bias: float | None = None, loss: str = "bce", image_channels: int | None = None,
            input_norm: str = "fold") -> ImageClassifier:
    """B-cosify a trained conventional classifier (a copy; ``model`` is left as it is).

    ``b``: the exponent B of every layer (2: the paper's choice; a linear schedule is set during
    fine-tuning, see :mod:`bcos_lib.methods.bcosification`).  ``keep_bias``: keep every bias
    (the folded batch-norm terms included) at full strength, to be faded out by fine-tuning;
    with ``False`` (the paper) they are removed and the network is dynamic linear at once.
    ``max_pool``: ``"avg"`` (the paper) or ``"keep"``.  ``mean``/``std``: the input
    normalisation the source was trained with (read from the model for the project's models;
    ImageNet's by default for torchvision's).  ``logit_bias``: the fixed logit bias (default
    log(1/(K−1)) for the BCE loss, 0 for CE).  ``loss``: the loss to fine-tune with.
    ``image_channels=1``: an RGB source made to take grey images (repeated to RGB, folded into
    the first layer).  ``input_norm`` (CNN sources): ``"fold"`` puts the source's normalisation
    into the first layer's weights, so the network takes ``[x, 1 − x]`` and is dynamic linear in
    it; ``"layer"`` normalises ``[x, 1 − x]`` with mean ``(μ, 1 − μ)`` and std ``(σ, σ)`` before a
    first layer ``[W, −W]/2``, as the official code does (the same function at B = 1; at B > 1 the
    first layer's patch norm sees the normalised input, so the models differ, and the explanation
    is of the normalised input: ``model.prepare_input`` applies the normalisation).

    The converted network has the source's floating-point type (a float64 model is converted, and
    comes back, in float64: its function at B = 1 matches the source's to float64 precision).
    """
    cfg = Conversion(float(b), bool(keep_bias), max_pool, input_norm)
    if loss not in ("bce", "ce"):
        raise ValueError(f"loss must be 'bce' or 'ce' (got {loss!r})")
    if logit_bias is None and loss == "ce":
        logit_bias = 0.0
    src = copy.deepcopy(model).cpu().eval()
    for adapter in _ADAPTERS:
        parts = adapter(src, mean, std)
        if parts is not None:
            break
    else:
        raise BcosifyError(f"cannot B-cosify a {_qualname(model)}: supported are the project's std_cnn and "
                           "std_resnet, torchvision's ResNet, VGG, DenseNet and VisionTransformer (for an "
                           "open_clip CLIP image tower use bcosify_clip_visual)")
    dtype = next((p.dtype for p in src.parameters() if p.is_floating_point()), torch.get_default_dtype())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)   # the new layers are created in the source's type
    try:
        return parts(cfg, logit_bias, loss, image_channels).to(dtype).eval()
    finally:
        torch.set_default_dtype(previous)


# each adapter: (source, mean, std) → None (not this architecture) or a function (cfg, logit_bias, loss) → model
def _project_adapter(src: nn.Module, mean, std):
    from ...models.cnn import ConvNet
    from ...models.resnet import ResNet
    if not isinstance(src, (ConvNet, ResNet)):
        return None
    if src.encoding != "none" or getattr(src, "default_loss", "ce") != "ce":
        raise BcosifyError(f"{type(src).__name__} {getattr(src, 'model_name', '')!r} is already a B-cos-style "
                           "network (its input is [x, 1 − x]): B-cosification converts conventional networks")
    norm = src.stem if isinstance(src, ConvNet) else src.input_norm
    if mean is None and isinstance(norm, Normalize):
        mean, std = norm.mean.flatten().tolist(), norm.std.flatten().tolist()
    elif mean is None:
        mean, std = [0.0] * src.image_channels, [1.0] * src.image_channels
    first = "0" if isinstance(src, ConvNet) else "stem.conv"
    titles = ({f"features.{i}": f"block {i // 3 + 1}" for i in range(2, len(src.features), 3)}
              if isinstance(src, ConvNet) else {f"features.{n}": n for n, _ in src.features.named_children()})

    def build(cfg: Conversion, logit_bias, loss, image_channels):
        features = convert_modules(src.features, cfg, "features")
        channels, norm_mean, norm_std = _encode_first_conv(features, first, mean, std, cfg, image_channels)
        classifier = convert_modules(src.classifier, cfg, "classifier")
        return BcosifiedNetwork(image_channels=channels, num_classes=src.num_classes, features=features,
                                classifier=classifier, logit_bias=logit_bias, loss=loss, layer_titles=titles,
                                input_mean=norm_mean, input_std=norm_std)
    return build


def _torchvision_cnn_adapter(src: nn.Module, mean, std):
    from torchvision.models import VGG, DenseNet, ResNet
    if isinstance(src, ResNet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        trunk = nn.Sequential(OrderedDict((n, getattr(src, n)) for n in names))
        classifier, first = src.fc, "conv1"
        titles = {f"features.layer{i}": f"layer{i}" for i in range(1, 5)}
    elif isinstance(src, DenseNet):
        trunk = nn.Sequential(OrderedDict(features=src.features, relu=nn.ReLU()))  # F.relu in DenseNet.forward
        classifier, first = src.classifier, "features.conv0"
        titles = {f"features.features.denseblock{i}": f"dense block {i}" for i in range(1, 5)}
    elif isinstance(src, VGG):
        head = list(src.classifier.children())
        linears = [m for m in head if isinstance(m, nn.Linear)]
        c = [m for m in src.features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        k = math.isqrt(linears[0].in_features // c) if linears else 0
        if (not linears or head[-1] is not linears[-1] or not isinstance(src.avgpool, nn.AdaptiveAvgPool2d)
                or c * k * k != linears[0].in_features):
            raise BcosifyError("module classifier: expected VGG's head AdaptiveAvgPool2d(k) → Linear(C·k·k, …) → … "
                               "→ Linear(…, classes)")
        convs: list[nn.Module] = []
        in_c = c
        for m in head:  # the MLP on flattened k×k features is a k×k conv, then 1×1 convs
            if isinstance(m, nn.Linear):
                convs.append(_linear_as_conv(m, in_c, k if not convs else 1))
                in_c = m.out_features
            else:
                convs.append(m)
        classifier = convs.pop()
        trunk = nn.Sequential(OrderedDict(features=src.features, avgpool=src.avgpool, head=nn.Sequential(*convs)))
        first, titles = "features.0", {}
    else:
        return None
    mean, std = _imagenet_or(mean, std, trunk.get_submodule(first).in_channels)
    num_classes = _num_classes_of(classifier)

    def build(cfg: Conversion, logit_bias, loss, image_channels):
        features = convert_modules(trunk, cfg, "features")
        channels, norm_mean, norm_std = _encode_first_conv(features, first, mean, std, cfg, image_channels)
        cls = classifier if isinstance(classifier, nn.Conv2d) else _linear_as_conv(classifier)  # 1×1, before pooling
        return BcosifiedNetwork(image_channels=channels, num_classes=num_classes, features=features,
                                classifier=convert_modules(cls, cfg, "classifier"), logit_bias=logit_bias, loss=loss,
                                layer_titles=titles, input_mean=norm_mean, input_std=norm_std)
    return build


def _torchvision_vit_adapter(src: nn.Module, mean, std):
    from torchvision.models import VisionTransformer
    if not isinstance(src, VisionTransformer):
        return None
    heads = list(src.heads.named_children())
    if len(heads) != 1 or heads[0][0] != "head":
        raise BcosifyError("module heads: a ViT with a pre-logits layer (representation_size) is not supported: "
                           "its tanh is not dynamic linear")
    mean, std = _imagenet_or(mean, std, src.conv_proj.in_channels)

    def build(cfg: Conversion, logit_bias, loss, image_channels):
        patch = nn.Sequential(OrderedDict(proj=src.conv_proj))
        patch = convert_modules(patch, cfg, "conv_proj")
        if cfg.input_norm != "fold":
            raise BcosifyError("input_norm='layer' is for CNNs: a B-cosified ViT spreads its class token over the input "
                               "mass of [x, 1 − x], which a normalisation in front would change; use input_norm='fold'")
        channels, _, _ = _encode_first_conv(patch, "proj", mean, std, cfg, image_channels)
        return BcosifiedViT(image_channels=channels, num_classes=src.num_classes, image_size=src.image_size,
                            patch_size=src.patch_size, patch_embed=patch.proj, class_token=src.class_token,
                            pos_embedding=src.encoder.pos_embedding,
                            layers=convert_modules(src.encoder.layers, cfg, "encoder.layers"),
                            norm=convert_modules(src.encoder.ln, cfg, "encoder.ln"),
                            head=convert_modules(src.heads.head, cfg, "heads.head"), logit_bias=logit_bias, loss=loss)
    return build


_ADAPTERS: list[Callable[..., Any]] = [_project_adapter, _torchvision_cnn_adapter, _torchvision_vit_adapter]


# ----------------------------------------------------------------------------- CLIP (open_clip ModifiedResNet)
class _CarriedByToken(ExplainableModule):
    """Adds a constant c to tokens t (N, T, D), written as the dynamic-linear map
    ``t ↦ t + c·⟨t̂, t⟩/‖t̂‖²`` with t̂ = t held constant in explanation mode.

    The value is t + c; in explanation mode c's share is attributed along the token it is
    added to, so the explanation still sums to the output (our choice for CLIP's attention-pool
    position embedding, which sits deep in the network where no input mass is at hand)."""

    def __init__(self, constant: Tensor):
        super().__init__()
        self.constant = nn.Parameter(constant.detach().clone())

    def forward(self, t: Tensor) -> Tensor:
        c = self.constant.to(t.dtype)
        if not self.explanation_mode:
            return t + c
        td = t.detach()
        sq = (td * td).sum(-1, keepdim=True)
        coef = torch.where(sq > 0, 1.0 / sq.clamp_min(torch.finfo(t.dtype).tiny), torch.zeros_like(sq))
        return t + c * (coef * (td * t).sum(-1, keepdim=True))


class BcosifiedAttentionPool(nn.Module):
    """CLIP's attention pooling, B-cosified: the mean token (linear) prepended to the spatial
    tokens, the position embedding carried by the tokens (:class:`_CarriedByToken`), one
    B-cosified attention whose query is the mean token; returns its output (N, E)."""

    def __init__(self, pos: Tensor, attention: BcosifiedAttention):
        super().__init__()
        self.pos = _CarriedByToken(pos.unsqueeze(0))
        self.attention = attention

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2).transpose(1, 2)                              # (N, HW, C)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)      # (N, HW + 1, C)
        if tokens.shape[1] != self.pos.constant.shape[1]:
            raise ValueError(f"the attention pool was trained for {self.pos.constant.shape[1] - 1} positions, got "
                             f"{tokens.shape[1] - 1}: use the CLIP model's image size")
        tokens = self.pos(tokens)
        out, _ = self.attention(tokens[:, :1], tokens, tokens)
        return out[:, 0]


class BcosifiedCLIPVisual(nn.Module):
    """The image tower of an open_clip ModifiedResNet CLIP, B-cosified: ``[x, 1 − x]`` (6 channels)
    → converted stem and residual stages → B-cosified attention pooling → embedding (N, E)."""

    def __init__(self, features: nn.Module, attnpool: BcosifiedAttentionPool, image_size: int):
        super().__init__()
        self.features, self.attnpool, self.image_size = features, attnpool, image_size

    def forward(self, x: Tensor) -> Tensor:
        return self.attnpool(self.features(x))


def bcosify_clip_visual(visual: nn.Module, b: float = 2.0, keep_bias: bool = False, max_pool: str = "avg",
                        mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> BcosifiedCLIPVisual:
    """B-cosify the image tower (``clip.visual``) of an open_clip ModifiedResNet (RN50, …)."""
    from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
    if not isinstance(visual, ModifiedResNet):
        raise BcosifyError(f"expected an open_clip ModifiedResNet image tower (clip.visual), got {_qualname(visual)}")
    cfg = Conversion(float(b), bool(keep_bias), max_pool)
    src = copy.deepcopy(visual).cpu().eval()
    names = ["conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool",
             "layer1", "layer2", "layer3", "layer4"]
    features = convert_modules(nn.Sequential(OrderedDict((n, getattr(src, n)) for n in names)), cfg, "visual")
    _encode_first_conv(features, "conv1", mean, std, cfg)  # 6 channels; grey images are repeated by the classifier
    ap = src.attnpool
    if not isinstance(ap, AttentionPool2d):
        raise BcosifyError(f"module visual.attnpool ({_qualname(ap)}) is not open_clip's AttentionPool2d")
    attn = BcosifiedAttention(ap.k_proj.in_features, ap.num_heads, cfg.b, cfg.keep_bias, ap.c_proj.out_features)
    with torch.no_grad():
        for mine, theirs in ((attn.q_proj, ap.q_proj), (attn.k_proj, ap.k_proj), (attn.v_proj, ap.v_proj),
                             (attn.out_proj, ap.c_proj)):
            mine.weight.copy_(theirs.weight)
            if mine.bias is not None:
                mine.bias.copy_(theirs.bias)
    return BcosifiedCLIPVisual(features, BcosifiedAttentionPool(ap.positional_embedding, attn), src.image_size)


class _UnitNorm(ExplainableModule):
    """``e / ‖e‖`` over the last dimension; the norm is a constant in explanation mode."""

    def forward(self, e: Tensor) -> Tensor:
        norm = e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return e / (norm.detach() if self.explanation_mode else norm)


class CLIPZeroShotClassifier(ImageClassifier):
    """Zero-shot classification with a B-cosified CLIP image tower.

    logit_c = s · ⟨e/‖e‖, t_c⟩ with e the image embedding, t_c the (unit) text embedding of
    class c and s CLIP's logit scale.  1/‖e‖ is a constant in explanation mode, so the logit
    is dynamic linear and its explanation sums to it (no fixed term).  Grey or small images
    are resized to the tower's size and repeated to RGB inside the model — both linear, so
    explanations come out on the images as given."""

    encoding = "add_inverse"
    default_loss = "ce"

    def __init__(self, visual: BcosifiedCLIPVisual, text_embeddings: Tensor, logit_scale: float, image_channels: int):
        super().__init__(image_channels, len(text_embeddings))
        if image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 (grey) or 3 (RGB), got {image_channels}")
        self.visual = visual
        self.register_buffer("text_embeddings", F.normalize(text_embeddings.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.unit = _UnitNorm()

    @property
    def dynamic_linear(self) -> bool:  # type: ignore[override]
        return not live_biases(self)

    def explanation_bias(self) -> Tensor:
        return torch.zeros(self.num_classes, device=self.text_embeddings.device)

    logit_bias = explanation_bias

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        size = self.visual.image_size
        size = size if isinstance(size, int) else size[0]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if self.image_channels == 1:
            x = x.repeat_interleave(3, dim=1)  # [x, 1 − x] → [x, x, x, 1 − x, 1 − x, 1 − x]
        return self.logit_scale * self.unit(self.visual(x)) @ self.text_embeddings.to(x.dtype).T


CLIP_TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.")


@torch.no_grad()
def _text_embeddings(clip: nn.Module, tokenizer: Callable, class_names: Sequence[str],
                     templates: Sequence[str]) -> Tensor:
    clip.eval()
    out = []
    for name in class_names:
        t = F.normalize(clip.encode_text(tokenizer([tpl.format(name) for tpl in templates])).float(), dim=-1)
        out.append(F.normalize(t.mean(0), dim=-1))
    return torch.stack(out)


def clip_zero_shot(clip: nn.Module, class_names: Sequence[str], templates: Sequence[str] = CLIP_TEMPLATES,
                   tokenizer: Callable | None = None, b: float = 2.0, image_channels: int = 1,
                   keep_bias: bool = False) -> CLIPZeroShotClassifier:
    """A zero-shot classifier over ``class_names`` from an open_clip ModifiedResNet CLIP: the
    text tower embeds the prompts (as trained), the image tower is B-cosified."""
    import open_clip
    tokenizer = tokenizer or open_clip.get_tokenizer("RN50")
    text = _text_embeddings(clip, tokenizer, class_names, templates)
    visual = bcosify_clip_visual(clip.visual, b=b, keep_bias=keep_bias)
    scale = float(clip.logit_scale.detach().exp()) if hasattr(clip, "logit_scale") else 100.0
    return CLIPZeroShotClassifier(visual, text, scale, image_channels).eval()


def load_clip_rn50(weights: str | os.PathLike | None = None) -> tuple[nn.Module, bool]:
    """open_clip's RN50 CLIP with the OpenAI weights when they are on disk, never downloaded.

    ``weights``: a checkpoint file; by default open_clip's own cache ``~/.cache/clip/RN50.pt``.
    Returns (model, pretrained): random weights (and False) when there is no file."""
    import open_clip
    path = Path(weights) if weights is not None else Path("~/.cache/clip/RN50.pt").expanduser()
    if weights is not None and not path.is_file():
        raise FileNotFoundError(f"CLIP weights {path} do not exist")
    if path.is_file():
        return open_clip.create_model("RN50", pretrained=str(path)).eval(), True
    return open_clip.create_model("RN50", pretrained=None).eval(), False


# ----------------------------------------------------------------------------- torchvision, offline
def torchvision_weights_file(name: str) -> Path:
    """Where torchvision keeps the default weights of model ``name``: ``torch.hub.get_dir()/checkpoints/<file>``."""
    from torchvision.models import get_model_weights
    weights = get_model_weights(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def torchvision_model(name: str, pretrained: str = "auto", **kwargs: Any) -> tuple[nn.Module, bool]:
    """torchvision model ``name`` with its default ImageNet weights when they are in the torch
    hub cache, never downloaded.  ``pretrained``: ``"auto"`` (the weights if cached, random
    otherwise), ``"yes"`` (an error naming the file when it is missing) or ``"no"``.
    Returns (model, whether pretrained weights were loaded)."""
    import torchvision
    if pretrained not in ("auto", "yes", "no"):
        raise ValueError(f"pretrained must be 'auto', 'yes' or 'no' (got {pretrained!r})")
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if pretrained == "no":
        return model.eval(), False
    path = torchvision_weights_file(name)
    if not path.is_file():
        if pretrained == "yes":
            raise FileNotFoundError(f"no pretrained weights for {name} at {path}; copy the file there (from "
                                    f"{torchvision.models.get_model_weights(name).DEFAULT.url}) or use "
                                    "pretrained='auto'")
        return model.eval(), False
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"{path} does not hold weights for torchvision's {name} ({str(e).splitlines()[0]})") from e
    return model.eval(), True
