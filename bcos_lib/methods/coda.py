"""CoDA Nets: Convolutional Dynamic Alignment Networks (Böhle, Fritz, Schiele; CVPR 2021).

The paper in four lines:

* A **Dynamic Alignment Unit** computes its weights from its input, ``w(x) = B·(A x) + b``
  (rank r), and outputs ``g(w(x))ᵀx`` with ``‖g(w)‖ < 1`` (§3.1–3.2,
  :class:`bcos_lib.layers.DynamicAlignmentConv2d`): large outputs need weights aligned with x.
* A **CoDA Net** is DAU layers only, then sum pooling and ``logit = z / T + b`` (§3.3).  In
  explanation mode it is exactly ``y = W(x) x``, so ``W(x) ⊙ x`` sums to ``logit − b``.
* The **temperature T** sets the alignment pressure (§5, Fig. on T): the logits must be
  large for a low loss, and only aligned weights give large outputs, so a larger T forces
  stronger alignment — and better localisation (CIFAR-10: 0.31, 0.64, 0.84, 0.91 for
  T = 10, 100, 500, 1000).
* **Hybrids** (§5, ImageNet): a conventional network's first layers followed by DAUs; the
  DAU part is dynamic linear in *its* input, so the explanation is exact at that layer
  ("interpretable depth") and is compared with Grad-CAM at the same layer.

Models: ``coda_net`` (the paper's 9-layer CIFAR-10 net by default) and ``coda_hybrid``.
Metric: ``dau_input_localisation`` (the grid pointing game at the input of the first DAU
layer, own explanation against Grad-CAM there).  Figures: the T sweep and CoDA next to the
B-cos CNN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import DynamicAlignmentConv2d, LogitLayer, Normalize
from ..layers.dau import SQUASHES
from ..models.base import prepare_input
from ..models.cnn import FMNIST_MEAN, FMNIST_STD, ConvNet
from ..paper import CODA_CIFAR10_LOCALISATION, CODA_LOCALISATION_BY_T
from ..registry import register_model
from ..utils import evaluating
from . import EvalContext, Method, Metric, MetricResult, ModelResult, register_method, register_metric, results_of

__all__ = ["CoDANet", "CoDAHybrid", "SumPool2d", "coda_net", "coda_hybrid", "explain_at_dau_input",
           "dau_input_localisation", "t_sweep_table", "plot_t_sweep", "coda_report", "CIFAR10_CONFIG"]

#: the paper's CIFAR-10 CoDA Net (9 DAU layers; the last, 1×1 with 10 units, is the classifier)
CIFAR10_CONFIG = {"channels": (16, 16, 32, 32, 32, 64, 64, 64), "strides": (1, 1, 2, 1, 1, 2, 1, 1),
                  "kernels": (3, 3, 3, 3, 3, 3, 3, 3), "ranks": (32, 32, 64, 64, 64, 64, 64, 64, 64),
                  "logit_temperature": 1000.0}
ENCODINGS = ("add_inverse", "none")
T_SWEEP_GROUP = "coda_t_sweep"


class SumPool2d(nn.Module):
    """Sum over all positions, (N, C, H, W) → (N, C, 1, 1) (CoDA §3.3: the logits sum the class maps)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=(2, 3), keepdim=True)


def _check_config(channels: Sequence[int], strides: Sequence[int], kernels: Sequence[int], ranks: Sequence[int],
                  logit_temperature: float, squash: str, where: str) -> None:
    """Clear errors, naming the argument, for a configuration that cannot build a CoDA net."""
    n = len(channels)
    if n < 1:
        raise ValueError(f"{where}: channels must list at least one hidden DAU layer")
    if len(strides) != n or len(kernels) != n:
        raise ValueError(f"{where}: channels ({n}), strides ({len(strides)}) and kernels ({len(kernels)}) must have "
                         "the same length")
    if len(ranks) != n + 1:
        raise ValueError(f"{where}: ranks needs one entry per DAU layer including the classifier: {n + 1} "
                         f"(got {len(ranks)})")
    for name, values in (("channels", channels), ("strides", strides), ("kernels", kernels), ("ranks", ranks)):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"{where}: every entry of {name} must be an integer ≥ 1 (got {list(values)})")
    if not isinstance(logit_temperature, (int, float)) or not math.isfinite(logit_temperature) or logit_temperature <= 0:
        raise ValueError(f"{where}: logit_temperature T must be a number > 0 (got {logit_temperature!r}); "
                         "the paper's CIFAR-10 net uses T = 1000")
    if squash not in SQUASHES:
        raise ValueError(f"{where}: squash must be one of {SQUASHES} (got {squash!r})")


def _dau_factory(kernels: Sequence[int], ranks: Sequence[int], squash: str, first_in: int | None = None):
    """The ``conv`` and ``classifier`` arguments of ConvNet: DAU layers with per-layer kernel and rank.

    ConvNet builds its layers in order (the hidden layers, then the classifier), so the i-th
    call gets the i-th kernel and rank.  ``first_in`` replaces the first layer's input
    channels (a hybrid's stem changes them).
    """
    calls = iter(range(len(ranks)))

    def conv(ci: int, co: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> DynamicAlignmentConv2d:
        i = next(calls)
        k = kernels[i]
        ci = first_in if (i == 0 and first_in is not None) else ci
        return DynamicAlignmentConv2d(ci, co, kernel_size=k, stride=stride, padding=k // 2, rank=ranks[i],
                                      squash=squash)

    def classifier(ci: int, co: int, kernel_size: int = 1) -> DynamicAlignmentConv2d:
        return DynamicAlignmentConv2d(ci, co, kernel_size=1, stride=1, padding=0, rank=ranks[next(calls)],
                                      squash=squash)

    return conv, classifier


class CoDANet(ConvNet):
    """DAU layers → 1×1 DAU classifier → **sum** pooling → ``z / T + b`` (CoDA §3.3).

    Built with ``dynamic_linear=True``: in explanation mode it is y = W(x) x + b exactly."""

    #: the logits sum the class maps over positions (ConvNet averages)
    pooling = "sum"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool = SumPool2d()

    def explanation_layers(self) -> dict[str, str]:
        """Hidden DAU layers for the interpretable-depth figure."""
        return {f"features.{i}": f"DAU layer {i + 1}" for i in range(len(self.features))}


class CoDAHybrid(CoDANet):
    """A conventional stem (conv–BN–ReLU) followed by DAU layers (CoDA §5, the ImageNet hybrids).

    The whole network is *not* dynamic linear (the stem has ReLUs and BN shifts), so
    ``explainable`` is False and the shared "own" explanation does not apply.  Its DAU part
    is: :meth:`dau_part` is that part as a model of the stem's output, explained exactly at
    the input of the first DAU layer (``dau_input_layer``).
    """

    #: the module whose output is the first DAU layer's input (Grad-CAM reads the same layer)
    dau_input_layer = "stem"

    def explanation_bias(self) -> Tensor | None:
        """None: at the image the hybrid is not dynamic linear (see :meth:`dau_part` for its DAU part)."""
        return None

    def dau_part(self) -> "DAUPart":
        """The DAU layers, pooling and logit layer as a model of the stem's output (in this model's
        train/eval mode: code that restores the part's mode then restores this model's)."""
        return DAUPart(self).train(self.training)


class DAUPart(nn.Module):
    """``h ↦ logit(sum_pool(classifier(features(h))))`` of a :class:`CoDAHybrid` (h: the stem's output).

    Dynamic linear in h, so :func:`bcos_lib.explain.explain` gives ``W(h) ⊙ h`` summing to logit − b.
    """

    encoding = "none"

    def __init__(self, net: CoDAHybrid):
        super().__init__()
        self.net = net

    def forward(self, h: Tensor) -> Tensor:
        n = self.net
        return n.logit(n.pool(n.classifier(n.features(h))).flatten(1))

    def explanation_bias(self) -> Tensor:
        """The fixed logit bias b of the hybrid's logit layer (what W(h) ⊙ h leaves out)."""
        return self.net.logit.bias


@register_model
def coda_net(num_classes: int = 10, image_channels: int = 1,
             channels: Sequence[int] = CIFAR10_CONFIG["channels"], strides: Sequence[int] = CIFAR10_CONFIG["strides"],
             kernels: Sequence[int] = CIFAR10_CONFIG["kernels"], ranks: Sequence[int] = CIFAR10_CONFIG["ranks"],
             logit_temperature: float = CIFAR10_CONFIG["logit_temperature"], logit_bias: float | None = None,
             squash: str = "squash", encoding: str = "add_inverse") -> CoDANet:
    """CoDA Net: DAU layers only, sum pooling, ``z / T + b`` (the defaults: the paper's CIFAR-10 net).

    ``channels``/``strides``/``kernels``: the hidden DAU layers; ``ranks``: one rank per DAU layer
    *including* the 1×1 classifier (len(channels) + 1).  ``logit_temperature``: T (> 0); the logit
    bias b defaults to log(1/(K−1)) (binary cross-entropy, as the B-cos networks).  ``squash``:
    ``"squash"`` (‖w‖²/(1+‖w‖²)·ŵ, the paper) or ``"l2"`` (ŵ).  ``encoding``: ``"add_inverse"``
    (``[x, 1 − x]``, the paper) or ``"none"`` (the images alone: black pixels contribute 0).
    """
    _check_config(channels, strides, kernels, ranks, logit_temperature, squash, "coda_net")
    if encoding not in ENCODINGS:
        raise ValueError(f"coda_net: encoding must be one of {ENCODINGS} (got {encoding!r})")
    conv, classifier = _dau_factory(kernels, ranks, squash)
    return CoDANet(image_channels=image_channels, num_classes=num_classes, channels=list(channels),
                   strides=list(strides), conv=conv, classifier=classifier, norm=None, act=None, stem=None,
                   logit=LogitLayer(num_classes, float(logit_temperature), logit_bias), encoding=encoding,
                   default_loss="bce", dynamic_linear=True)


@register_model
def coda_hybrid(num_classes: int = 10, image_channels: int = 1, stem_channels: Sequence[int] = (16, 32),
                stem_strides: Sequence[int] = (1, 2), channels: Sequence[int] = (32, 64, 64),
                strides: Sequence[int] = (1, 2, 1), kernels: Sequence[int] = (3, 3, 3),
                ranks: Sequence[int] = (32, 64, 64, 64), logit_temperature: float = 1000.0,
                logit_bias: float | None = None, squash: str = "squash", mean: float = FMNIST_MEAN,
                std: float = FMNIST_STD) -> CoDAHybrid:
    """A conventional stem (3×3 conv without bias + BN + ReLU per entry of ``stem_channels``), then
    DAU layers as in :func:`coda_net` (``channels``, ``strides``, ``kernels``, ``ranks``), sum pooling
    and ``z / T + b``.  The stem takes the images normalised by ``mean``/``std``."""
    _check_config(channels, strides, kernels, ranks, logit_temperature, squash, "coda_hybrid")
    if len(stem_channels) < 1 or len(stem_channels) != len(stem_strides):
        raise ValueError(f"coda_hybrid: stem_channels ({len(stem_channels)}) and stem_strides "
                         f"({len(stem_strides)}) must have the same length ≥ 1")
    stem: list[nn.Module] = [Normalize([mean] * image_channels, [std] * image_channels)]
    c_in = image_channels
    for c, s in zip(stem_channels, stem_strides):
        stem += [nn.Conv2d(c_in, c, 3, s, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        c_in = c
    conv, classifier = _dau_factory(kernels, ranks, squash, first_in=c_in)
    return CoDAHybrid(image_channels=image_channels, num_classes=num_classes, channels=list(channels),
                      strides=list(strides), conv=conv, classifier=classifier, norm=None, act=None,
                      stem=nn.Sequential(*stem), logit=LogitLayer(num_classes, float(logit_temperature), logit_bias),
                      encoding="none", default_loss="bce", dynamic_linear=False)


# ----------------------------------------------------------------------------- the hybrid's explanation
def explain_at_dau_input(model: CoDAHybrid, x: Tensor, targets: Tensor, upsample: bool = True):
    """The hybrid's exact explanation at the input h of its first DAU layer, for model inputs ``x``.

    Returns the :class:`bcos_lib.explain.Explanation` of :meth:`CoDAHybrid.dau_part` for h (its
    contributions ``W(h) ⊙ h`` sum to logit − b) and the contribution map summed over h's channels,
    (N, T, H, W) — bilinearly upsampled to the input size with ``upsample`` (as captum upsamples
    Grad-CAM), else at h's resolution.
    """
    from ..explain import explain

    if not isinstance(model, CoDAHybrid):
        raise TypeError(f"explain_at_dau_input needs a CoDA hybrid (coda_hybrid), got {type(model).__name__}")
    with evaluating(model):
        with torch.no_grad():
            h = model.stem(x)
    e = explain(model.dau_part(), h, targets, colour=False)
    maps = e.contribution_map.detach()
    if upsample and maps.shape[-2:] != x.shape[-2:]:
        n, t = maps.shape[:2]
        maps = F.interpolate(maps.flatten(0, 1).unsqueeze(1), size=x.shape[-2:], mode="bilinear").view(n, t,
                                                                                                         *x.shape[-2:])
    return e, maps


@dataclass
class DAUInputLocalisationOptions:
    """``evaluate.options.dau_input_localisation``: how many grids (0: ``evaluate.n_grids``) and which maps."""

    n_grids: int = 0
    methods: list[str] = field(default_factory=lambda: ["own", "gradcam"])

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in ("own", "gradcam")]
        if bad or not self.methods:
            raise ValueError(f"dau_input_localisation.methods: choose from 'own' and 'gradcam' (got {self.methods})")
        if self.n_grids < 0:
            raise ValueError(f"dau_input_localisation.n_grids must be ≥ 0 (got {self.n_grids})")


def dau_input_localisation(ctx: EvalContext) -> MetricResult | None:
    """The grid pointing game at the input of the first DAU layer of a hybrid (CoDA §5).

    The same grids as the shared localisation (:func:`bcos_lib.metrics.confident_pool` and
    :func:`~bcos_lib.metrics.make_grids` with the run's seed); "own" = Σ_channels W(h) ⊙ h of the
    DAU part, "gradcam" = Grad-CAM at the stem's output (the same layer); both upsampled
    bilinearly to the grid and scored with :func:`~bcos_lib.metrics.localisation_scores`.
    """
    from ..attribution import attribute
    from ..metrics import confident_pool, localisation_scores, make_grids

    model, cfg = ctx.model, ctx.cfg
    if not isinstance(model, CoDAHybrid):
        ctx.log(f"dau_input_localisation: {type(model).__name__} has no conventional stem before its DAUs "
                "(only coda_hybrid models); skipped")
        return None
    opts = ctx.options or DAUInputLocalisationOptions()
    n = cfg.grid_size
    n_grids = opts.n_grids or cfg.n_grids
    pool = confident_pool(model, ctx.test_data, cfg.min_confidence, cfg.batch_size * n * n, ctx.device)
    grids, classes = make_grids(ctx.test_data, pool, n, n_grids, ctx.seed)
    rows, summary = [], {"layer": model.dau_input_layer, "n_grids": int(len(grids)), "grid_size": int(n)}
    for method in opts.methods:
        scores = []
        for i in range(0, len(grids), max(1, cfg.batch_size)):
            x = prepare_input(model, grids[i:i + cfg.batch_size].to(ctx.device))
            t = classes[i:i + cfg.batch_size].to(ctx.device)
            if method == "own":
                maps = explain_at_dau_input(model, x, t)[1]
            else:
                maps = attribute(model, x, t, "gradcam", layer=model.dau_input_layer)
            scores.append(localisation_scores(maps, n, cfg.smooth).cpu())
        s = torch.cat(scores).double()
        summary[method] = float(s.mean())
        rows.append(pd.DataFrame({"grid": np.repeat(np.arange(len(s)), s.shape[1]),
                                  "cell": np.tile(np.arange(s.shape[1]), len(s)),
                                  "target": classes[:len(s)].reshape(-1).numpy(),
                                  "score": s.reshape(-1).numpy(), "method": method}))
        ctx.log(f"dau_input_localisation: {method:<8} {summary[method]:.3f} at {model.dau_input_layer} "
                f"({len(s)} grids)")
    return MetricResult(summary=summary, tables={"dau_input_localisation": pd.concat(rows, ignore_index=True)})


# ----------------------------------------------------------------------------- figures and report
def _localisation(r: ModelResult) -> dict[str, Any]:
    """{method: {mean, …}} of the shared localisation metric (empty when it did not run)."""
    return (r.metric("localisation") or {}).get("methods") or {}


def t_sweep_table(results: Mapping[str, ModelResult]) -> pd.DataFrame:
    """One row per model of the T-sweep group: key, T, test accuracy, own localisation, the paper's."""
    rows = []
    for r in results_of(results, method="CoDA", group=T_SWEEP_GROUP):
        t = float(r.entry.kwargs.get("logit_temperature", CIFAR10_CONFIG["logit_temperature"]))
        own = _localisation(r).get("own") or {}
        rows.append({"key": r.key, "T": t, "test_accuracy": (r.train or {}).get("test_accuracy"),
                     "localisation": own.get("mean"),
                     "paper_localisation": CODA_LOCALISATION_BY_T.get(int(t)) if t.is_integer() else None})
    return pd.DataFrame(rows, columns=["key", "T", "test_accuracy", "localisation", "paper_localisation"]).sort_values("T")


def plot_t_sweep(sweep: pd.DataFrame):
    """Localisation (this pipeline and the paper's CIFAR-10 numbers) and accuracy against T (log axis)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3))
    a.plot(sweep["T"], sweep["localisation"], marker="o", label="this pipeline (Fashion-MNIST)")
    paper = sorted(CODA_LOCALISATION_BY_T.items())
    a.plot([t for t, _ in paper], [v for _, v in paper], marker="s", ls="--", color="tab:gray",
           label="paper (CIFAR-10)")
    a.set(xscale="log", xlabel="logit temperature T", ylabel="mean localisation (own explanation)",
          title="grid pointing game vs T", ylim=(0, 1))
    a.legend(fontsize=7)
    b.plot(sweep["T"], sweep["test_accuracy"], marker="o", color="tab:orange")
    b.set(xscale="log", xlabel="logit temperature T", ylabel="test accuracy (%)", title="accuracy vs T")
    fig.tight_layout()
    from ..figures import finished
    return finished(fig)


def coda_figures(results: Mapping[str, ModelResult], run: Any) -> dict[str, Any]:
    """``coda_t_sweep`` (localisation and accuracy vs T) and ``coda_vs_bcos`` (explanations of the
    CoDA nets next to the B-cos CNN's on the same test images)."""
    from ..figures import plot_model_comparison

    figs: dict[str, Any] = {}
    sweep = t_sweep_table(results)
    if len(sweep) and sweep["localisation"].notna().any():
        figs["coda_t_sweep"] = plot_t_sweep(sweep)
    saved = {r.key: {**r.explanations, "label": r.label} for r in results.values()
             if r.explanations is not None and (r.method == "CoDA" and r.entry.group != T_SWEEP_GROUP
                                                or r.entry.arch == "bcos_cnn" and not r.entry.group)}
    # the CoDA net of the comparison is the T-sweep member with the paper's T when no separate one exists
    if not any(results[k].method == "CoDA" for k in saved):
        for r in results_of(results, method="CoDA", group=T_SWEEP_GROUP):
            if r.explanations is not None and float(r.entry.kwargs.get("logit_temperature", 1000)) == 1000:
                saved[r.key] = {**r.explanations, "label": r.label}
    if len(saved) > 1:
        figs["coda_vs_bcos"] = plot_model_comparison(saved)
    return figs


def _fmt(v: Any, nd: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def coda_report(results: Mapping[str, ModelResult]) -> str:
    """The CoDA section of the results: accuracy and 3×3 localisation beside the paper, the T sweep, the hybrid."""
    lines = ["### CoDA Nets (Dynamic Alignment Units)", ""]
    methods = ["own", "occlusion", "gradcam", "ig", "ixg"]
    header = "| model | test acc. (%) | " + " | ".join(methods) + " |"
    lines += [header, "|" + "---|" * (len(methods) + 2)]
    for r in results_of(results, method="CoDA"):
        loc = _localisation(r)
        if not loc:
            continue
        cells = [_fmt((loc.get(m) or {}).get("mean")) for m in methods]
        lines.append(f"| {r.label or r.key} | {_fmt((r.train or {}).get('test_accuracy'), 2)} | " + " | ".join(cells) + " |")
    lines.append("| paper, CIFAR-10, T = 1000 | – | " + " | ".join(_fmt(CODA_CIFAR10_LOCALISATION.get(m))
                                                                 for m in methods) + " |")
    sweep = t_sweep_table(results)
    if len(sweep):
        lines += ["", "| T | test acc. (%) | localisation (own) | paper (CIFAR-10) |", "|---|---|---|---|"]
        for _, row in sweep.iterrows():
            lines.append(f"| {row['T']:g} | {_fmt(row['test_accuracy'], 2)} | {_fmt(row['localisation'])} | "
                         f"{_fmt(row['paper_localisation'], 2)} |")
    for r in results_of(results, method="CoDA"):
        m = r.metric("dau_input_localisation")
        if m:
            lines += ["", f"{r.label or r.key}: localisation at the input of the first DAU layer (`{m['layer']}`, "
                      f"{m['n_grids']} grids): own explanation {_fmt(m.get('own'))}, Grad-CAM at the same layer "
                      f"{_fmt(m.get('gradcam'))}; test accuracy {_fmt((r.train or {}).get('test_accuracy'), 2)} %."]
    return "\n".join(lines) + "\n"


register_metric(Metric("dau_input_localisation", dau_input_localisation, DAUInputLocalisationOptions,
                       "grid pointing game at the input of a hybrid's first DAU layer: own explanation vs Grad-CAM"))

register_method(Method(name="CoDA", paper="Böhle, Fritz, Schiele: Convolutional Dynamic Alignment Networks for "
                       "Interpretable Classifications (CVPR 2021)",
                       models=("coda_net", "coda_hybrid"), options=None, training=None, init=None,
                       figures=coda_figures, report=coda_report, order=30))
