"""Numerical edge cases: all-zero and constant inputs, very large and very small inputs, and
float16 / bfloat16 give finite outputs and finite explanations, for the B-cos layers and for
every registered model; the explanation identity still holds to the precision of the dtype."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bcos_lib import create_model, list_models
from bcos_lib.explain import explain
from bcos_lib.methods.bcos.layers import BcosAttention
from bcos_lib.methods.bcos.layers import BcosConv2d, BcosLinear
from bcos_lib.methods.bcos.layers import UncentredBatchNorm2d, UncentredLayerNorm
from bcos_lib.layers.explanation_mode import explanation_mode

torch.set_num_threads(1)

HALF = [torch.float16, torch.bfloat16]
# name → (layer factory, input shape)
LAYERS = {
    "conv_b1": (lambda: BcosConv2d(2, 4, 3, padding=1, b=1.0), (2, 2, 6, 6)),
    "conv_b1.25_maxout2_stride2": (lambda: BcosConv2d(2, 4, 3, stride=2, padding=1, b=1.25, max_out=2), (2, 2, 6, 6)),
    "conv_b2": (lambda: BcosConv2d(2, 4, 3, padding=1, b=2.0), (2, 2, 6, 6)),
    "conv_b2.5_groups_dilation": (lambda: BcosConv2d(4, 4, 3, padding=2, dilation=2, groups=2, b=2.5), (2, 4, 6, 6)),
    "conv_v1_scale": (lambda: BcosConv2d(2, 4, 3, padding=1, b=2.0, max_out=2, scale="auto"), (2, 2, 6, 6)),
    "linear_b2": (lambda: BcosLinear(6, 4, b=2.0), (2, 5, 6)),
    "linear_b1.5_maxout2": (lambda: BcosLinear(6, 4, b=1.5, max_out=2), (2, 5, 6)),
    "bn_train": (lambda: UncentredBatchNorm2d(2).train(), (2, 2, 4, 4)),
    "bn_eval": (lambda: UncentredBatchNorm2d(2).eval(), (2, 2, 4, 4)),
    "layer_norm": (lambda: UncentredLayerNorm(6), (2, 5, 6)),
    "attention": (lambda: torch.nn.Sequential(UncentredLayerNorm(8), BcosAttention(8, 2)), (2, 5, 8)),
}
HOMOGENEOUS = [k for k in LAYERS if k.startswith(("conv", "linear"))]  # B-cos(αx) = α·B-cos(x) for α > 0


def _layer(name: str, dtype=torch.float32) -> tuple[torch.nn.Module, tuple[int, ...]]:
    factory, shape = LAYERS[name]
    torch.manual_seed(0)
    return factory().to(dtype), shape


def _explained(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and W(x)ᵀ·1 (the input gradient of Σ outputs in explanation mode)."""
    x = x.detach().clone().requires_grad_(True)
    with explanation_mode(layer):
        y = layer(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), grad


def _inputs(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(shape, generator=g)
    return {"zeros": torch.zeros(shape), "constant_0.5": torch.full(shape, 0.5), "ones": torch.ones(shape),
            "random": rand, "signed": rand - 0.5, "large_1e6": rand * 1e6, "large_1e15": (rand - 0.5) * 1e15,
            "tiny_1e-30": rand * 1e-30}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("kind", list(_inputs((1,))))
def test_layers_finite_in_float32(name, kind):
    layer, shape = _layer(name)
    x = _inputs(shape)[kind]
    y, grad = _explained(layer, x)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    # the explanation identity Σ y = Σ W(x) ⊙ x, to float32 precision of the terms
    scale = (grad * x).abs().sum() + y.abs().sum()
    assert ((grad * x).sum() - y.sum()).abs() <= 1e-5 * scale + 1e-30


@pytest.mark.parametrize("name", HOMOGENEOUS)
@pytest.mark.parametrize("factor", [1e6, 1e15])
def test_large_inputs_scale_the_output(name, factor):
    """Nothing saturates for large inputs: B-cos is positively homogeneous, layer(αx) = α·layer(x)."""
    layer, shape = _layer(name)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) - 0.3
    with torch.no_grad():
        torch.testing.assert_close(layer(x * factor) / factor, layer(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("kind", ["zeros", "ones", "random", "signed", "large_100"])
def test_layers_in_half_precision(name, dtype, kind):
    layer32, shape = _layer(name)
    inputs = _inputs(shape)
    x = inputs["random"] * 100 if kind == "large_100" else inputs[kind]
    layer = copy.deepcopy(layer32).to(dtype)
    y, grad = _explained(layer, x.to(dtype))
    assert y.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    with torch.no_grad():
        ref = layer32(x.to(dtype).float())  # same input values, float32 computation
    tol = 2e-2 if dtype == torch.float16 else 6e-2
    torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol * ref.abs().max().item() + 1e-6)


# --- models ----------------------------------------------------------------------------------------------

def _recalibrate_norms(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Set every batch norm's running statistics to those of ``images`` (as after a long training),
    so that eval-mode activations have the scale they have in a trained model."""
    norms = [m for m in model.modules() if hasattr(m, "running_var") and hasattr(m, "momentum")]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(model.prepare_input(images))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


@pytest.fixture(scope="module")
def trained32():
    """name → the model in float32 after 3 training steps, batch-norm statistics recalibrated."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            model = create_model(name)
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            model.train()
            for step in range(3):
                x = torch.rand(8, model.image_channels, 28, 28, generator=torch.Generator().manual_seed(step))
                out = model(model.prepare_input(x))
                labels = torch.arange(8) % model.num_classes
                loss = (F.binary_cross_entropy_with_logits(out, F.one_hot(labels, out.shape[1]).float())
                        if model.default_loss == "bce" else F.cross_entropy(out, labels))
                opt.zero_grad()
                loss.backward()
                opt.step()
            _recalibrate_norms(model, torch.rand(32, model.image_channels, 28, 28,
                                                 generator=torch.Generator().manual_seed(9)))
            cache[name] = model.eval()
        return cache[name]

    return get


def _model_images(model, kind: str) -> torch.Tensor:
    shape = (2, model.image_channels, 28, 28)
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "ones":
        return torch.ones(shape)
    if kind == "constant":
        return torch.full(shape, 0.37)
    return torch.rand(shape, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dtype", [torch.float32, *HALF], ids=str)
def test_models_finite_outputs_and_explanations(name, dtype, trained32):
    if dtype == torch.float16 and getattr(trained32(name), "pooling", "mean") == "sum":
        # CoDA nets sum-pool (CoDA Nets §3.3): after the fixture's three lr-1e-2 steps their 9-layer
        # activations grow ~8× per layer and the summed logits exceed float16's range (65 504);
        # bfloat16, with float32's range, is checked for them below
        pytest.skip("sum pooling exceeds float16's range; bfloat16 covers the half-precision path")
    model = copy.deepcopy(trained32(name)).to(dtype)
    rel = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    for kind in ("zeros", "ones", "constant", "random"):
        x = model.prepare_input(_model_images(model, kind).to(dtype))
        with torch.no_grad():
            out = model(x)
        assert out.dtype == dtype and torch.isfinite(out).all(), kind
        e = explain(model, x, targets=torch.tensor([[0, 3], [1, 9]]))
        assert torch.isfinite(e.weights).all() and torch.isfinite(e.contribution_map).all(), kind
        if e.rgba is not None:
            assert torch.isfinite(e.rgba).all() and (e.rgba >= 0).all() and (e.rgba <= 1).all(), kind
        if model.explainable:  # the identity, to the precision of the dtype
            total = e.contribution_map.float().sum(dim=(-2, -1))
            expected = (e.target_outputs - e.bias).float()
            size = e.contributions.float().abs().sum(dim=(-3, -2, -1)) + expected.abs()
            # the logit y = z + b itself is rounded to the dtype: |y| + |b| times its precision
            rounding = 2 * torch.finfo(dtype).eps * (e.target_outputs.float().abs() + e.bias.float().abs())
            assert ((total - expected).abs() <= rel * size + rounding + 1e-6).all(), kind
