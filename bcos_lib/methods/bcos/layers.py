"""B-cos convolution and linear layers (Böhle et al., CVPR 2022, eq. 3; TPAMI 2024).

One output unit with weight w and input x computes

    B-cos(x; w) = |cos(x, w)|^(B-1) · ŵᵀx = (ŵᵀx) · |ŵᵀx / ‖x‖|^(B-1),   ŵ = w / ‖w‖.

For a convolution, ‖x‖ is the norm of the input patch that the unit sees
(k×k×C_in/groups values, following stride, padding, dilation and groups).
B = 1 is a linear unit with unit-norm weights; B = 2 is the default.

MaxOut (v1 and the CIFAR configs of v2): every unit owns ``max_out`` filters and returns
the largest of their outputs.  Because the B-cos scaling l·|l/‖x‖|^(B-1) is monotone in the
linear response l, taking the max of the linear responses first is the same unit.
(``max().values`` rather than ``amax``: its backward routes the gradient to the chosen
filter by index, about 3.5× cheaper on CPU than amax's tie-splitting mask; ties are
measure-zero and either choice is a valid W(x).)

In explanation mode the dynamic scale |cos|^(B-1) (and with it the patch norm) and the
MaxOut choice are constants, so the layer is the linear map ``x ↦ s(x)·ŵᵀx``.  The conv
layer then runs everything after its convolution as one autograd node whose backward pass
is a single product with the fixed factors (``_FixedFactorUnit``): explaining n² classes
takes n² backward passes through the same forward, so each one's cost is what counts.

v1 layer scale: v1 divides every layer's output by a fixed number, by default
``√(k_h·k_w)·√C_in / 100`` (k·√C_in/100 for a square k×k kernel; the public v1 module uses
k, not k²).  The v1 CIFAR-10 experiments instead passed one scale per B to every layer,
``10^(−2 + 1.5·(2.5 − B))`` (:func:`v1_cifar_layer_scale`).  v2 drops the scale.

Numerics: the patch norm and the dynamic scale are computed in at least float32
(half-precision inputs cannot overflow x²); float64 inputs stay float64 throughout.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.explanation_mode import ExplainableModule

__all__ = ["BcosConv2d", "BcosLinear", "bcos_scale", "patch_norm", "v1_layer_scale", "v1_cifar_layer_scale", "compute_dtype", "BcosAttention", "attention_weights", "UncentredBatchNorm2d", "UncentredLayerNorm", "channel_var"]

NORM_EPS = 1e-6  # inside the square root of the patch norm: ‖x‖ = sqrt(Σx² + ε)
COS_EPS = 1e-6   # added to |cos| so that |cos|^(B-1) has a finite gradient at 0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype for norms and scales: float32 for half-precision inputs, the input's own otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def v1_layer_scale(kernel_size: tuple[int, int], in_channels: int, scale_factor: float = 100.0) -> float:
    """v1's default fixed output scale ``√(k_h·k_w)·√C_in / 100`` (= k·√C_in/100 for square kernels)."""
    return math.sqrt(kernel_size[0] * kernel_size[1]) * math.sqrt(in_channels) / scale_factor


def v1_cifar_layer_scale(b: float) -> float:
    """The scale the v1 CIFAR-10 experiments gave every layer for a given B: ``10^(−2 + 1.5·(2.5 − B))``."""
    return 10.0 ** (-2.0 + 1.5 * (2.5 - float(b)))


def patch_norm(x: Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int] | str, dilation: tuple[int, int], groups: int) -> Tensor:
    """‖patch‖ for every output position and group: shape (N, groups, H', W').

    Σ over the patch of x² is a convolution of x² with a kernel of ones, which follows
    stride, padding and dilation exactly; groups see only their own channels.
    Computed in at least float32 so that half-precision inputs cannot overflow x².
    """
    n, c, h, w = x.shape
    sq = x.to(compute_dtype(x.dtype))
    sq = sq.square().view(n, groups, c // groups, h, w).sum(2)  # (square: a cheaper backward than sq * sq)
    if (not isinstance(padding, str) and tuple(dilation) == (1, 1)
            and all(2 * p <= k for p, k in zip(padding, kernel_size))):
        # the same sum as an average pool (zeros in the padding counted) times the patch size:
        # about 2× faster than a one-channel convolution, forward and backward
        ssq = F.avg_pool2d(sq, kernel_size, stride, padding, count_include_pad=True) * (kernel_size[0] * kernel_size[1])
    else:
        ones = torch.ones(groups, 1, *kernel_size, dtype=sq.dtype, device=sq.device)
        ssq = F.conv2d(sq, ones, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (ssq.clamp_min(0) + NORM_EPS).sqrt()


def bcos_scale(linear_out: Tensor, norm: Tensor, b: float, detach: bool) -> Tensor:
    """The dynamic scale |cos|^(B-1), with cos = ŵᵀx / ‖x‖ (constant in explanation mode)."""
    abs_cos = (linear_out / norm).abs() + COS_EPS
    if detach:
        abs_cos = abs_cos.detach()
    return abs_cos if b == 2 else abs_cos.pow(b - 1)  # B = 2 (the default) needs no pow


def _check_b(b: float) -> float:
    b = float(b)
    if not math.isfinite(b) or b < 1:
        raise ValueError(f"B must be a real number ≥ 1 (got {b}); B = 1 is linear, B = 2 the default")
    return b


def _check_scale(scale: float | str) -> float:
    if isinstance(scale, str):
        raise ValueError(f"scale must be a number, None or 'auto' (got {scale!r})")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"the layer scale must be a finite number > 0 (got {scale})")
    return scale


def _max_out(lin: Tensor, max_out: int) -> tuple[Tensor, Tensor]:
    """MaxOut over each unit's ``max_out`` consecutive filters of (N, C·M, H, W): values and index (N, C, H, W)."""
    n, cm, h, w = lin.shape
    return lin.view(n, cm // max_out, max_out, h, w).max(2)


class _FixedFactorUnit(torch.autograd.Function):
    """The explanation-mode B-cos unit after its convolution, as one autograd node.

    Input: the linear responses ``lin`` (N, C·M, H, W) of the C units' M MaxOut filters
    each.  Output: the chosen filter's response times the constant factor
    f = |cos|^(B-1) / layer scale, which is ``y = Σ_m F_m ⊙ lin_m`` with the fixed
    F = one-hot(argmax) · f.  Its backward pass is the single product ``∂y · F``; the
    usual path (max, scale, layer scale as separate autograd nodes) pays for MaxOut's
    zero-fill-and-scatter and every product again in each explained class's backward
    pass.  The output is the same number as the usual path's; ``BcosConv2d.fused_explanation
    = False`` switches back to the usual path (tests compare the two).
    """

    @staticmethod
    def forward(ctx, lin: Tensor, norm: Tensor | None, b: float, max_out: int, scale: float) -> Tensor:  # noqa: D102
        if max_out > 1:
            values, index = _max_out(lin, max_out)
        else:
            values, index = lin, None
        if norm is not None:
            values_c = values.to(norm.dtype)
            factor = bcos_scale(values_c, norm, b, detach=True)
            out = (values_c * factor).to(lin.dtype)
        else:
            factor = torch.ones((), dtype=lin.dtype, device=lin.device).expand_as(values)
            out = values.clone()
        if scale != 1.0:
            out = out / scale
            factor = factor / scale
        factor = factor.to(lin.dtype)
        if index is not None:  # the factor at the chosen filter, 0 at the others
            n, c, h, w = values.shape
            factor = torch.zeros_like(lin).view(n, c, max_out, h, w).scatter_(2, index.unsqueeze(2), factor.unsqueeze(2))
        ctx.save_for_backward(factor)
        ctx.max_out = max_out
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: D102
        (factor,) = ctx.saved_tensors
        if ctx.max_out > 1:
            n, c, m, h, w = factor.shape
            grad = (grad_out.unsqueeze(2) * factor).reshape(n, c * m, h, w)  # (reshape: vmap has a rule for it)
        else:
            grad = grad_out * factor
        return grad, None, None, None, None


class _BcosUnit(torch.autograd.Function):
    """The training-mode B-cos unit after its convolution, as one autograd node.

    Inputs: the linear responses ``lin`` (N, C·M, H, W) of the C units' M MaxOut filters and
    the patch norms ``n`` (N, 1 or C, H, W).  Output (B-cos v1 §3.1, Eq. 3; v2 Eq. 4 with
    the ε that keeps |cos|^(B−1) differentiable at 0), for the chosen filter's response v:

        y = v · a^(B−1) / s,   a = |r| + ε,   r = v / n   (r = cos(x, ŵ) when ‖ŵ‖ = 1)

    with its derivatives written out (a > 0, n > 0):

        ∂y/∂v = (a^(B−1) + (B−1)·a^(B−2)·|r|) / s        (B = 2: (2|r| + ε) / s)
        ∂y/∂n = −(B−1)·a^(B−2)·r·|r| / s                 (B = 2: −r|r| / s)

    summed over the channels a norm is shared by; MaxOut's gradient goes to the chosen filter.
    The output is the same number as the separate operations' (the same four operations in the
    same order); the backward pass is 5–6 elementwise passes where autograd's graph of max,
    division, abs, sum and product takes about twice as many, and it keeps only r and n
    instead of every intermediate.  ``BcosConv2d.fused_training = False`` switches back to the
    separate operations (tests compare the gradients in float64).
    """

    @staticmethod
    def forward(ctx, lin: Tensor, norm: Tensor, b: float, max_out: int, scale: float) -> Tensor:  # noqa: D102
        if max_out > 1:
            values, index = _max_out(lin, max_out)
        else:
            values, index = lin, None
        v = values.to(norm.dtype)
        r = v / norm
        a = r.abs().add_(COS_EPS)
        out = v * (a if b == 2 else a.pow(b - 1))
        if scale != 1.0:
            out = out / scale
        ctx.save_for_backward(r, norm, index)
        ctx.b, ctx.max_out, ctx.scale, ctx.lin_shape, ctx.lin_dtype = b, max_out, scale, lin.shape, lin.dtype
        return out.to(lin.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: D102
        r, norm, index = ctx.saved_tensors
        b = ctx.b
        g = grad_out.to(r.dtype)
        if ctx.scale != 1.0:
            g = g / ctx.scale
        ar = r.abs()
        if b == 2:
            grad_v = torch.addcmul(g * COS_EPS, g, ar, value=2.0)   # g·(2|r| + ε)
            grad_n = (g * r).mul_(ar)                                 # −∂y/∂n (negated below)
        else:
            a = ar + COS_EPS
            k = a.pow(b - 2).mul_(b - 1)           # (B−1)·a^(B−2)
            grad_v = g * (a * k).div_(b - 1).add_(k * ar)   # a^(B−1) + (B−1)·a^(B−2)·|r|
            grad_n = (g * r).mul_(ar).mul_(k)
        if norm.shape[1] != grad_n.shape[1]:       # one norm shared by every channel
            grad_n = grad_n.sum(1, keepdim=True)
        grad_n = grad_n.neg_()
        grad_v = grad_v.to(ctx.lin_dtype)
        if ctx.max_out > 1:
            n, cm, h, w = ctx.lin_shape
            grad_lin = grad_v.new_zeros(n, cm // ctx.max_out, ctx.max_out, h, w)
            grad_lin = grad_lin.scatter_(2, index.unsqueeze(2), grad_v.unsqueeze(2)).view(n, cm, h, w)
        else:
            grad_lin = grad_v
        return grad_lin, grad_n.to(norm.dtype), None, None, None


class BcosConv2d(ExplainableModule):
    """A B-cos 2-d convolution: no bias, unit-norm filters, dynamic |cos|^(B-1) scaling.

    ``scale`` divides the output by a fixed number (v1's layer scale; ``"auto"`` gives
    k·√C_in / 100 as in v1, ``None`` gives 1 as in v2).  ``normalize_weights=False``
    keeps the raw weight norm (B-cosification keeps the pretrained weights' scale).
    """

    #: in explanation mode, run the unit after the convolution as one autograd node (faster
    #: backward passes, same numbers; see ``_FixedFactorUnit``)
    fused_explanation: bool = True
    #: in training (and any other gradient outside explanation mode), the same for the unit with
    #: its dynamic scale (hand-written derivatives; see ``_BcosUnit``)
    fused_training: bool = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, b: float = 2.0,
                 max_out: int = 1, scale: float | str | None = None, normalize_weights: bool = True):
        super().__init__()
        pair = nn.modules.utils._pair
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be divisible by groups={groups}")
        if max_out < 1:
            raise ValueError(f"max_out must be ≥ 1 (got {max_out})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.groups, self.b, self.max_out = groups, _check_b(b), int(max_out)
        self.normalize_weights = normalize_weights
        if scale == "auto":
            scale = v1_layer_scale(self.kernel_size, in_channels)
        self.scale = 1.0 if scale is None else _check_scale(scale)
        self.weight = nn.Parameter(torch.empty(out_channels * self.max_out, in_channels // groups, *self.kernel_size))
        nn.init.kaiming_normal_(self.weight, nonlinearity="linear")

    def effective_weight(self) -> Tensor:
        """ŵ = w/‖w‖ per filter (or w itself when ``normalize_weights`` is off)."""
        w = self.weight
        if not self.normalize_weights:
            return w
        return w / w.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}")
        w = self.effective_weight().to(x.dtype)
        lin = self._conv(x, w)
        if (self.explanation_mode and self.fused_explanation and lin.requires_grad
                and (self.max_out > 1 or self.b != 1 or self.scale != 1.0)):
            norm = None
            if self.b != 1:
                with torch.no_grad():  # a constant in explanation mode
                    norm = self._patch_norm(x)
            return _FixedFactorUnit.apply(lin, norm, self.b, self.max_out, self.scale)
        if (not self.explanation_mode and self.fused_training and self.b != 1
                and (lin.requires_grad or x.requires_grad)):
            return _BcosUnit.apply(lin, self._patch_norm(x), self.b, self.max_out, self.scale)
        if self.max_out > 1:
            lin = _max_out(lin, self.max_out).values
        if self.b != 1:
            norm = self._patch_norm(x)
            lin_c = lin.to(norm.dtype)
            lin = (lin_c * bcos_scale(lin_c, norm, self.b, self.explanation_mode)).to(x.dtype)
        return lin / self.scale if self.scale != 1.0 else lin

    def _conv(self, x: Tensor, w: Tensor) -> Tensor:
        """The linear part ŵᵀx of every filter at every position: (N, C_out·M, H', W').

        A one-channel input whose gradient will be taken on the CPU is convolved image by
        image.  PyTorch's CPU convolution hands a batch to oneDNN and a single image to its own
        im2col kernel, and for a one-channel input oneDNN's input gradient is about 20× slower
        per image (measured: 1.9 ms for 4 images of 84×84 and 32 filters, 0.09 ms for one);
        in explanation mode that backward pass runs once per explained class.
        """
        if x.shape[1] == 1 and len(x) > 1 and x.requires_grad and x.device.type == "cpu":
            return torch.cat([F.conv2d(xi, w, None, self.stride, self.padding, self.dilation, self.groups)
                              for xi in x.split(1)])
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _patch_norm(self, x: Tensor) -> Tensor:
        """‖patch‖ per output channel and position (every channel sees the patch of its own group)."""
        norm = patch_norm(x, self.kernel_size, self.stride, self.padding, self.dilation, self.groups)
        return norm.repeat_interleave(self.out_channels // self.groups, dim=1) if self.groups > 1 else norm

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, b={self.b}, "
                f"max_out={self.max_out}, scale={self.scale:g}")


class BcosLinear(ExplainableModule):
    """A B-cos linear layer on the last dimension: ``(ŵᵀx)·|ŵᵀx/‖x‖|^(B-1)``, no bias."""

    def __init__(self, in_features: int, out_features: int, b: float = 2.0, max_out: int = 1,
                 scale: float | str | None = None, normalize_weights: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.b, self.max_out, self.normalize_weights = _check_b(b), int(max_out), normalize_weights
        if scale == "auto":
            scale = v1_layer_scale((1, 1), in_features)
        self.scale = 1.0 if scale is None else _check_scale(scale)
        self.weight = nn.Parameter(torch.empty(out_features * self.max_out, in_features))
        nn.init.kaiming_normal_(self.weight, nonlinearity="linear")

    def effective_weight(self) -> Tensor:
        w = self.weight
        return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12) if self.normalize_weights else w

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"BcosLinear expects (..., {self.in_features}) input, got {tuple(x.shape)}")
        lin = F.linear(x, self.effective_weight().to(x.dtype))
        if self.max_out > 1:
            lin = lin.unflatten(-1, (self.out_features, self.max_out)).max(-1).values
        if self.b != 1:
            xf = x.to(compute_dtype(x.dtype))
            norm = ((xf * xf).sum(-1, keepdim=True) + NORM_EPS).sqrt()
            lin_c = lin.to(norm.dtype)
            lin = (lin_c * bcos_scale(lin_c, norm, self.b, self.explanation_mode)).to(x.dtype)
        return lin / self.scale if self.scale != 1.0 else lin

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, b={self.b}, max_out={self.max_out}, scale={self.scale:g}"


# ----------------------------------------------------------------------------- uncentred norms
# Normalisation layers of B-cos v2 (Böhle et al., TPAMI 2024, §4.1).
# 
# Uncentred batch norm: ``x / sqrt(Var[x] + ε) · γ``, with no mean subtraction and no β,
# so that the layer stays linear in x (a mean or a bias would break ``y = W(x)x``).
# In explanation mode the variance (a function of the batch) is a constant.
def channel_var(x: Tensor) -> Tensor:
    """Per-channel (biased) variance of an (N, C, H, W) tensor, two-pass (mean first).

    The same number as ``x.var(dim=(0, 2, 3), unbiased=False)``, but reducing the
    contiguous H, W dimensions first is about 4× faster on CPU, forward and backward.
    """
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.sum((2, 3)).sum(0) / n
    centred = x - mean.view(1, -1, 1, 1)
    return (centred * centred).sum((2, 3)).sum(0) / n


class UncentredBatchNorm2d(ExplainableModule):
    """Batch norm without centring and without bias: ``x / sqrt(var + eps) * weight``.

    The statistic is the usual per-channel batch variance (running average kept for
    evaluation); only the output skips the mean subtraction.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            var = channel_var(x.to(compute_dtype(x.dtype)))
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                unbiased = var * (n / max(n - 1, 1))
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
                self.num_batches_tracked.add_(1)
        else:
            var = self.running_var
        if self.explanation_mode:
            var = var.detach()
        var = var.to(compute_dtype(x.dtype))  # a half-precision model keeps its running_var in half
        scale = (self.weight.to(var.dtype) / (var + self.eps).sqrt()).to(x.dtype)
        return x * scale.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class UncentredLayerNorm(ExplainableModule):
    """Layer norm over the last dimension without centring and bias: ``x / sqrt(var + eps) * weight``.

    The variance of each token is a constant in explanation mode (B-cos ViTs)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        var = x.to(compute_dtype(x.dtype)).var(dim=-1, unbiased=False, keepdim=True)
        if self.explanation_mode:
            var = var.detach()
        return x * (1.0 / (var + self.eps).sqrt()).to(x.dtype) * self.weight.to(x.dtype)


# ----------------------------------------------------------------------------- attention
# B-cos multi-head self-attention (B-cos v2, Böhle et al., TPAMI 2024, §4: B-cos ViTs).
# 
# For tokens X (T×D) and one head h with projections Q = B-cos_q(X), K = B-cos_k(X),
# V = B-cos_v(X) (B-cos linear units, no biases):
# 
#     A_h(X) = softmax(Q_h K_hᵀ / √d_h)         (T×T, rows sum to 1)
#     out    = B-cos_o([A_1 V_1, …, A_H V_H])
# 
# A_h(X) V_h is linear in V for a fixed A, so attention is *dynamic linear* once the
# attention pattern counts as a data-dependent weight: in explanation mode Q and K are
# detached, A(X) is a constant, and the only path from X to the output runs through the
# (dynamic-linear) value and output projections.  Then ``out = W(X) X`` exactly.
def attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """softmax(q kᵀ / √d) over the keys, computed in at least float32; (..., T_q, T_k)."""
    dt = compute_dtype(q.dtype)
    dots = torch.matmul(q.to(dt), k.to(dt).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return dots.softmax(-1)


class BcosAttention(ExplainableModule):
    """Multi-head self-attention on (N, T, D) tokens with B-cos q/k/v/output projections.

    ``linear`` builds the projections (``linear(in, out)``); by default B-cos linear
    layers with exponent ``b``.  In explanation mode the attention pattern is a constant.
    """

    def __init__(self, dim: int, heads: int = 4, b: float = 2.0,
                 linear: Callable[[int, int], nn.Module] | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads = dim, heads
        linear = linear or (lambda i, o: BcosLinear(i, o, b=b))
        self.qkv = linear(dim, 3 * dim)
        self.proj = linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"BcosAttention expects (N, tokens, {self.dim}) input, got {tuple(x.shape)}")
        n, t, d = x.shape
        # (N, T, 3, H, d_h) → three tensors (N, H, T, d_h)
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.explanation_mode:  # the attention pattern is a dynamic weight: constant for the explanation
            q, k = q.detach(), k.detach()
        attn = attention_weights(q, k).to(v.dtype)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"
