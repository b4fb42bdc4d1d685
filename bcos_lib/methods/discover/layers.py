"""Stochastic local winner-takes-all (LWTA) activation (DISCOVER, Panousis & Chatzis,
NeurIPS 2023, §3: "stochastic LWTA layers").

The units of a layer are grouped into blocks of U *competitors*: U consecutive channels at
every position of a conv feature map (``dim=1``), or U consecutive features of a linear or
token layer (``dim=-1``).  In every block exactly one unit wins; the winner passes its own
pre-activation h_u and the U − 1 losers output 0:

    y = h ⊙ ξ,   ξ ∈ {0, 1}^U one-hot (per block)

Training samples the winner from the block's softmax, ``ξ ~ Categorical(softmax(h))``, with a
straight-through Gumbel-softmax:

    g ~ Gumbel(0, 1),  soft = softmax((h + g) / τ),  ξ = onehot(argmax(soft)) − sg(soft) + soft

(what ``torch.nn.functional.gumbel_softmax(..., hard=True)`` computes, here in one autograd node
that is ~2× faster on the CPU): the forward pass uses the hard one-hot, the gradient the relaxed
``soft`` (τ ≈ 1.67 in the paper's code).  At test time the
winner is the block's largest pre-activation (``test_mode="deterministic"``, the default), or a
sample as in training (``test_mode="stochastic"``).  A hard sample does not depend on τ
(argmax((h + g)/τ) = argmax(h + g)); τ only shapes the gradient.  Exactly 1/U of the units are
non-zero (U = 24 → ≈ 4 %).  U = 1 has nothing to compete with: the layer is then the usual
activation of the network it sits in (``fallback``: ReLU for CNNs, GELU for ViTs).

**KL term** (the paper's variational objective): the winner posterior π = softmax(h) of every
block against a uniform prior over its U units,

    KL(π ‖ U(1/U)) = Σ_u π_u log π_u + log U   ≥ 0,

averaged over the blocks, positions and images of a batch.  The public code has it switched
off, and so is it here: with ``track_kl = True`` (set by the DISCOVER training hook when
``options.kl_weight > 0``) a training forward pass stores it in ``last_kl`` for the loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LWTA", "local_winner_takes_all", "lwta_kl", "gumbel_noise", "FALLBACKS", "TEST_MODES"]

FALLBACKS = ("relu", "gelu")
TEST_MODES = ("deterministic", "stochastic")


def _blocks(h: Tensor, competitors: int, dim: int) -> tuple[Tensor, int]:
    """``h`` with its ``dim`` split into (blocks, competitors); returns the view and the competitor dim."""
    d = dim % h.dim()
    width = h.shape[d]
    if width % competitors:
        raise ValueError(f"LWTA: a layer of width {width} cannot be cut into blocks of U = {competitors} competitors; "
                         f"choose a number of competitors that divides every layer width (the model's `competitors` "
                         f"argument, models.<key>.kwargs.competitors in params.yaml), or widths that U divides")
    return h.unflatten(d, (width // competitors, competitors)), d + 1


def gumbel_noise(like: Tensor) -> Tensor:
    """Gumbel(0, 1) samples shaped like ``like``: −log(−log u), u ~ U(0, 1) (from ``torch.rand``,
    ~6× faster on the CPU than ``exponential_``, which ``F.gumbel_softmax`` draws from)."""
    return torch.rand_like(like).clamp_(min=1e-20).log_().neg_().log_().neg_()


def _winner_mask(scores: Tensor, cdim: int) -> Tensor:
    """One-hot of the largest score of every block (the first of equal ones, as ``argmax``).

    ``scores == max`` is ~10× faster on the CPU than ``argmax`` + ``scatter``; the exact argmax is
    only needed where a block has a tie (equal pre-activations, or no noise)."""
    mask = scores == scores.amax(cdim, keepdim=True)
    if bool((mask.sum(cdim) > 1).any()):
        mask = torch.zeros_like(mask).scatter_(cdim, scores.argmax(cdim, keepdim=True), True)
    return mask.to(scores.dtype)


class _StraightThroughLWTA(torch.autograd.Function):
    """y = h ⊙ ξ with ξ the hard one-hot of h + g; the gradient of the relaxed mask
    ξ − sg(soft) + soft, soft = softmax((h + g)/τ), written out in one node:

        ∂L/∂h = ∂L/∂y ⊙ ξ + soft ⊙ (v − Σ_u soft ⊙ v) / τ,   v = ∂L/∂y ⊙ h.
    """

    @staticmethod
    def forward(ctx, blocks: Tensor, noise: Tensor, cdim: int, temperature: float) -> Tensor:
        scores = blocks + noise
        hard = _winner_mask(scores, cdim)
        soft = (scores / temperature).softmax(cdim)
        ctx.save_for_backward(blocks, hard, soft)
        ctx.cdim, ctx.temperature = cdim, temperature
        return blocks * hard

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        blocks, hard, soft = ctx.saved_tensors
        v = grad_out * blocks
        grad = grad_out * hard + soft * (v - (soft * v).sum(ctx.cdim, keepdim=True)) / ctx.temperature
        return grad, None, None, None


def local_winner_takes_all(h: Tensor, competitors: int, dim: int = 1, sample: bool = False,
                           temperature: float = 1.67, straight_through: bool = True,
                           noise: Tensor | None = None) -> Tensor:
    """Winner-takes-all over blocks of ``competitors`` units along ``dim`` of ``h``.

    ``sample=False``: the winner is the largest pre-activation of the block.  ``sample=True``:
    the winner is drawn from softmax(h) with Gumbel noise (``noise``, shaped like ``h``, or fresh
    samples); with ``straight_through`` the gradient flows through the relaxed
    softmax((h + g)/τ) (training), otherwise the mask is a constant.
    """
    blocks, cdim = _blocks(h, competitors, dim)
    if sample:
        g = gumbel_noise(blocks) if noise is None else _blocks(noise, competitors, dim)[0]
        if straight_through:
            return _StraightThroughLWTA.apply(blocks, g, cdim, temperature).flatten(cdim - 1, cdim)
        scores = blocks.detach() + g
    else:
        scores = blocks.detach()
    return (blocks * _winner_mask(scores, cdim)).flatten(cdim - 1, cdim)


def lwta_kl(h: Tensor, competitors: int, dim: int = 1) -> Tensor:
    """Mean over blocks of KL(softmax(h_block) ‖ uniform(1/U)) = Σ π log π + log U (a scalar ≥ 0)."""
    blocks, cdim = _blocks(h, competitors, dim)
    log_pi = F.log_softmax(blocks.float(), dim=cdim)
    return ((log_pi.exp() * log_pi).sum(cdim) + math.log(competitors)).mean().to(h.dtype)


class LWTA(nn.Module):
    """Stochastic LWTA activation over blocks of ``competitors`` units along ``dim`` (module docstring).

    ``temperature``: the Gumbel-softmax τ of training (set from the method's options);
    ``test_mode``: "deterministic" (argmax) or "stochastic" (a sampled winner) in eval mode;
    ``fallback``: the activation used when ``competitors`` is 1; ``width``: the layer width,
    checked when given (so a bad U fails when the model is built, not at its first batch).
    """

    def __init__(self, competitors: int, dim: int = 1, temperature: float = 1.67, test_mode: str = "deterministic",
                 fallback: str = "relu", width: int | None = None):
        super().__init__()
        if isinstance(competitors, bool) or not isinstance(competitors, int) or competitors < 1:
            raise ValueError(f"LWTA: competitors (U) must be an integer ≥ 1, got {competitors!r}")
        if fallback not in FALLBACKS:
            raise ValueError(f"LWTA: fallback must be one of {FALLBACKS}, got {fallback!r}")
        if width is not None and width % competitors:
            _blocks(torch.zeros(width), competitors, 0)  # raises the message that names the fix
        self.competitors, self.dim, self.fallback = competitors, dim, fallback
        self.temperature = temperature
        self.test_mode = test_mode
        self.track_kl = False
        self.last_kl: Tensor | None = None

    @property
    def test_mode(self) -> str:
        return self._test_mode

    @test_mode.setter
    def test_mode(self, mode: str) -> None:
        if mode not in TEST_MODES:
            raise ValueError(f"LWTA: test_mode must be one of {TEST_MODES}, got {mode!r}")
        self._test_mode = mode

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, tau: float) -> None:
        if not tau > 0:
            raise ValueError(f"LWTA: the Gumbel-softmax temperature must be > 0, got {tau!r}")
        self._temperature = float(tau)

    def forward(self, h: Tensor) -> Tensor:
        if self.competitors == 1:
            self.last_kl = None
            return F.relu(h) if self.fallback == "relu" else F.gelu(h)
        self.last_kl = lwta_kl(h, self.competitors, self.dim) if (self.training and self.track_kl) else None
        sample = self.training or self.test_mode == "stochastic"
        return local_winner_takes_all(h, self.competitors, self.dim, sample=sample, temperature=self.temperature,
                                      straight_through=self.training)

    def extra_repr(self) -> str:
        if self.competitors == 1:
            return f"competitors=1 ({self.fallback})"
        return (f"competitors={self.competitors}, dim={self.dim}, temperature={self.temperature:g}, "
                f"test_mode={self.test_mode!r}")
