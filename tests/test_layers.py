"""The fast layers against their slow float64 references (bcos_lib.layers.reference), and the
B-cos layer's defining properties: B = 1 is a unit-norm convolution, explanation mode does not
change the output and makes the layer exactly linear, invalid B is rejected, v1's scale and
temperature follow the v1 code."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bcos_lib.methods.bcos.layers import BcosAttention
from bcos_lib.methods.bcos.layers import BcosConv2d, BcosLinear, v1_cifar_layer_scale, v1_layer_scale
from bcos_lib.layers.logit import LogitLayer, v1_logit_temperature
from bcos_lib.methods.bcos.layers import UncentredBatchNorm2d, UncentredLayerNorm
from bcos_lib.layers.explanation_mode import explanation_mode
from bcos_lib.methods.bcos.layers import bcos_scale
from bcos_lib.layers.logit import V1_CIFAR_LOG10_TEMPERATURE
from reference import bcos_conv2d_reference, reference_forward, unfold_patches

torch.set_num_threads(1)

# (c_in, c_out, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (3, 4, 3, 1, 1, 1, 1),
    (4, 6, 3, 2, 1, 1, 1),
    (4, 6, 3, 1, 2, 2, 1),
    (4, 6, 3, 2, 0, 1, 2),
    (6, 6, 3, 1, 1, 1, 3),
    (2, 4, 1, 1, 0, 1, 1),
    (4, 4, (3, 2), (2, 1), (1, 0), (1, 2), 2),
    (3, 5, 5, 3, 2, 1, 1),
]
B_VALUES = [1.0, 1.25, 2.0, 2.5]


def _conv(case, b=2.0, max_out=1, seed=0, **kw) -> BcosConv2d:
    c_in, c_out, k, s, p, d, g = case
    torch.manual_seed(seed)
    return BcosConv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, b=b, max_out=max_out, **kw).double()


def _input(case, n=2, size=9, seed=1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, case[0], size, size + 1, dtype=torch.float64)


def _jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """∂f(x)/∂x as a (f(x).numel(), x.numel()) matrix."""
    jac = torch.autograd.functional.jacobian(f, x, vectorize=True)
    return jac.reshape(-1, x.numel())


# --- fast vs reference -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}-{}_k{}_s{}_p{}_d{}_g{}".format(*c))
@pytest.mark.parametrize("b", B_VALUES)
@pytest.mark.parametrize("max_out", [1, 2])
def test_conv_matches_reference(case, b, max_out):
    layer, x = _conv(case, b, max_out), _input(case)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-12)


def test_unfold_matches_torch_unfold():
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    kw = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1))
    ours = unfold_patches(x, **kw)
    theirs = F.unfold(x, **kw).view(2, 3, 3, 2, *ours.shape[-2:])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_reference_without_stabilisers_is_the_pure_equation():
    """With ε = 0 the reference is (ŵᵀx)·|ŵᵀx/‖x‖|^(B−1); the fast layer differs only by its ε's."""
    case = (3, 4, 3, 1, 1, 1, 1)
    layer, x = _conv(case, b=2.0), _input(case)
    pure = bcos_conv2d_reference(x, layer.weight, 2.0, 1, 1, norm_eps=0.0, cos_eps=0.0)
    w_hat = layer.effective_weight()
    lin = F.conv2d(x, w_hat, padding=1)
    norm = F.conv2d((x ** 2).sum(1, keepdim=True), torch.ones(1, 1, 3, 3, dtype=x.dtype), padding=1).sqrt()
    torch.testing.assert_close(pure, lin * lin.abs() / norm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x), pure, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("b", B_VALUES)
@pytest.mark.parametrize("max_out", [1, 2])
def test_linear_matches_reference(b, max_out):
    torch.manual_seed(0)
    layer = BcosLinear(7, 5, b=b, max_out=max_out).double()
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-12)


def test_unnormalised_weights_and_scale_match_reference():
    case = (4, 6, 3, 2, 1, 1, 2)
    layer, x = _conv(case, b=1.5, max_out=2, normalize_weights=False, scale=0.3), _input(case)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_uncentred_batch_norm_matches_reference(training):
    torch.manual_seed(0)
    bn = UncentredBatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 3 + 1
    bn.train(training)
    expected = reference_forward(bn, x)
    var_before = bn.running_var.clone()
    torch.testing.assert_close(bn(x), expected, rtol=1e-12, atol=1e-12)
    if training:  # running variance: momentum average of the *unbiased* batch variance
        unbiased = x.var(dim=(0, 2, 3), unbiased=True)
        torch.testing.assert_close(bn.running_var, 0.9 * var_before + 0.1 * unbiased, rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(bn.running_var, var_before)


def test_channel_var_is_accurate_in_float32_with_a_large_mean():
    """The fast two-pass variance of the batch norm must not lose digits where E[x²] − E[x]² would."""
    from bcos_lib.methods.bcos.layers import channel_var
    torch.manual_seed(0)
    x = torch.randn(16, 4, 7, 7) * 0.5 + 300.0
    expected = x.double().var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(channel_var(x).double(), expected, rtol=1e-4, atol=0)
    naive = (x * x).mean((0, 2, 3)) - x.mean((0, 2, 3)) ** 2  # what the fast path must not do
    assert (naive.double() - expected).abs().max() > 1e-3


def test_uncentred_batch_norm_does_not_centre():
    bn = UncentredBatchNorm2d(1).double().eval()
    x = torch.full((1, 1, 2, 2), 3.0, dtype=torch.float64)
    torch.testing.assert_close(bn(x), x / math.sqrt(1 + bn.eps))  # running_var = 1: only the scale


def test_uncentred_layer_norm_matches_reference():
    torch.manual_seed(0)
    ln = UncentredLayerNorm(8).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 8, dtype=torch.float64) + 2
    torch.testing.assert_close(ln(x), reference_forward(ln, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b", [1.0, 2.0, 2.5])
def test_attention_matches_reference(b):
    torch.manual_seed(0)
    attn = BcosAttention(8, heads=2, b=b).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(attn(x), reference_forward(attn, x), rtol=1e-10, atol=1e-12)


# --- B = 1 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}-{}_k{}_s{}_p{}_d{}_g{}".format(*c))
def test_b1_is_a_convolution_with_unit_norm_filters(case):
    layer, x = _conv(case, b=1.0), _input(case)
    w = layer.weight
    w_hat = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = F.conv2d(x, w_hat, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w_hat.flatten(1).norm(dim=1), torch.ones(len(w), dtype=w.dtype))


def test_b1_linear_is_unit_norm_linear():
    torch.manual_seed(0)
    layer = BcosLinear(6, 4, b=1.0).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    w = layer.weight
    torch.testing.assert_close(layer(x), x @ (w / w.norm(dim=1, keepdim=True)).T, rtol=1e-12, atol=1e-12)


# --- explanation mode -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES[:5], ids=lambda c: "c{}-{}_k{}_s{}_p{}_d{}_g{}".format(*c))
@pytest.mark.parametrize("b", [1.25, 2.0, 2.5])
@pytest.mark.parametrize("max_out", [1, 2])
def test_explanation_mode_same_output_and_exactly_linear(case, b, max_out):
    layer, x = _conv(case, b, max_out), _input(case, n=1, size=6)
    y = layer(x)
    with explanation_mode(layer):
        assert torch.equal(layer(x), y)  # the same numbers, only the graph differs
        jac = _jacobian(layer, x)
    assert not layer.explanation_mode  # restored
    torch.testing.assert_close(jac @ x.flatten(), y.flatten(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "c{}-{}_k{}_s{}_p{}_d{}_g{}".format(*c))
def test_explanation_jacobian_is_scaled_unit_filters(case):
    """In explanation mode ∂y/∂x = diag(s(x))·Ŵ with s = |cos|^(B−1)/scale: the conv of ŵ, row-scaled."""
    layer, x = _conv(case, b=2.5, scale=0.7), _input(case, n=1, size=6)
    w_hat = layer.effective_weight().detach()

    def lin_fn(v):
        return F.conv2d(v, w_hat, None, layer.stride, layer.padding, layer.dilation, layer.groups)

    s = (layer(x) / lin_fn(x)).flatten()  # the dynamic scale per output
    with explanation_mode(layer):
        jac = _jacobian(layer, x)
    torch.testing.assert_close(jac, s[:, None] * _jacobian(lin_fn, x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES + [(1, 4, 3, 1, 1, 1, 1)],
                         ids=lambda c: "c{}-{}_k{}_s{}_p{}_d{}_g{}".format(*c))
@pytest.mark.parametrize("b, max_out, scale", [(1.0, 2, None), (2.0, 1, 0.7), (2.0, 2, None), (2.5, 3, 0.7)])
def test_fused_explanation_node_matches_the_usual_graph(case, b, max_out, scale):
    """The explanation-mode conv layer as one autograd node (BcosConv2d.fused_explanation) gives the same
    output, the same Jacobian ∂y/∂x (also vectorised, as explain's batched VJPs use it on a GPU) and
    the same weight gradients as the graph of max, scale and layer scale."""
    layer, x = _conv(case, b, max_out, scale=scale), _input(case, n=3, size=6)
    results = {}
    for fused in (True, False):
        layer.zero_grad()
        xg = x.clone().requires_grad_(True)
        with explanation_mode(layer):
            layer.fused_explanation = fused
            try:
                y = layer(xg)
                jac = _jacobian(layer, x)
                go = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2))
                (y * go).sum().backward()
            finally:
                del layer.fused_explanation  # back to the class default
        results[fused] = (y.detach(), jac, xg.grad, layer.weight.grad.clone())
    (y1, j1, gx1, gw1), (y0, j0, gx0, gw0) = results[True], results[False]
    assert torch.equal(y1, y0)
    torch.testing.assert_close(j1, j0, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gx1, gx0, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gw1, gw0, rtol=1e-10, atol=1e-12)
    assert not layer.explanation_mode and BcosConv2d.fused_explanation


@pytest.mark.parametrize("case", CONV_CASES + [(1, 4, 3, 1, 1, 1, 1)],
                         ids=lambda c: "c{}-{}_k{}_s{}_p{}_d{}_g{}".format(*c))
@pytest.mark.parametrize("b, max_out, scale", [(2.0, 1, None), (2.0, 2, 0.7), (1.5, 1, None), (2.5, 3, 0.7)])
def test_fused_training_node_matches_the_usual_graph(case, b, max_out, scale):
    """The training-mode conv layer as one autograd node with hand-written derivatives
    (BcosConv2d.fused_training) gives the same output as the separate operations and the same
    gradients with respect to the input (through the linear part and the patch norm) and the weights."""
    layer, x = _conv(case, b, max_out, scale=scale), _input(case, n=3, size=6)
    results = {}
    for fused in (True, False):
        layer.zero_grad()
        xg = x.clone().requires_grad_(True)
        layer.fused_training = fused
        try:
            y = layer(xg)
            go = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2))
            (y * go).sum().backward()
            node = type(y.grad_fn).__name__
        finally:
            del layer.fused_training  # back to the class default
        results[fused] = (y.detach(), xg.grad, layer.weight.grad.clone(), node)
    (y1, gx1, gw1, node1), (y0, gx0, gw0, node0) = results[True], results[False]
    assert node1 == "_BcosUnitBackward" and node0 != node1  # the fused node ran, and the usual graph did not
    assert torch.equal(y1, y0)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw1, gw0, rtol=1e-10, atol=1e-12)
    assert BcosConv2d.fused_training


def test_fused_training_node_passes_gradcheck():
    """Finite differences agree with the hand-written derivatives of _BcosUnit (float64)."""
    from bcos_lib.methods.bcos.layers import _BcosUnit
    gen = torch.Generator().manual_seed(0)
    lin = torch.randn(2, 6, 4, 4, dtype=torch.float64, generator=gen).requires_grad_(True)
    norm = (torch.rand(2, 1, 4, 4, dtype=torch.float64, generator=gen) + 0.5).requires_grad_(True)
    for b, max_out, scale in [(2.0, 1, 1.0), (2.0, 2, 0.7), (2.5, 3, 1.0), (1.5, 2, 2.0)]:
        assert torch.autograd.gradcheck(lambda l, n: _BcosUnit.apply(l, n, b, max_out, scale), (lin, norm))


def test_fused_training_node_with_bfloat16_matches_float32():
    """Under bf16 the unit computes in float32 (norms and scales) and returns the input's dtype."""
    torch.manual_seed(0)
    layer = BcosConv2d(4, 8, 3, padding=1, max_out=2)
    x = torch.rand(2, 4, 6, 6)
    y32 = layer(x)
    xb = x.bfloat16().requires_grad_(True)
    yb = layer.bfloat16()(xb)
    yb.sum().backward()
    assert yb.dtype == torch.bfloat16 and xb.grad.dtype == torch.bfloat16
    assert type(yb.grad_fn).__name__ == "_BcosUnitBackward"
    torch.testing.assert_close(yb.float(), y32, rtol=0.05, atol=0.02)


def test_one_channel_batch_convolved_image_by_image_is_the_same():
    """A one-channel batch that needs an input gradient is convolved image by image on the CPU (a
    faster backward pass): the output and the input gradient equal the batched convolution's."""
    torch.manual_seed(0)
    layer = BcosConv2d(1, 8, 3, padding=1, max_out=2)
    x = torch.rand(5, 1, 12, 12)
    w_hat = layer.effective_weight().detach()
    xg = x.clone().requires_grad_(True)
    with explanation_mode(layer):
        y = layer(xg)
        y.sum().backward()
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "CatBackward0"  # the image-by-image path was taken
    xr = x.clone().requires_grad_(True)
    with explanation_mode(layer):
        layer.fused_explanation = False
        try:
            lin = F.conv2d(xr, w_hat, padding=1).view(5, 8, 2, 12, 12).max(2).values  # one batched conv
            norm = layer._patch_norm(xr)
            yr = lin * bcos_scale(lin, norm, 2.0, detach=True)
            yr.sum().backward()
        finally:
            del layer.fused_explanation
    torch.testing.assert_close(y, yr, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_explanation_mode_linear_layer_jacobian():
    torch.manual_seed(0)
    layer = BcosLinear(6, 4, b=2.0, max_out=2).double()
    x = torch.randn(6, dtype=torch.float64)
    y = layer(x)
    with explanation_mode(layer):
        jac = _jacobian(layer, x)
    torch.testing.assert_close(jac @ x, y, rtol=1e-10, atol=1e-12)
    # each row is the winning filter ŵ times the scale
    w_hat = layer.effective_weight().detach()
    winners = (x @ w_hat.T).view(4, 2).argmax(1) + 2 * torch.arange(4)
    s = y / (x @ w_hat[winners].T)
    torch.testing.assert_close(jac, s[:, None] * w_hat[winners], rtol=1e-10, atol=1e-12)


def test_explanation_mode_switch_covers_all_layers_and_restores():
    model = torch.nn.Sequential(BcosConv2d(2, 4, 3, padding=1), UncentredBatchNorm2d(4), BcosConv2d(4, 4, 1))
    model[1].explanation_mode = True  # a pre-set flag must be restored as it was
    with explanation_mode(model):
        assert all(m.explanation_mode for m in model)
    assert [m.explanation_mode for m in model] == [False, True, False]


# --- invalid arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("b", [0.5, 0.0, -1.0, float("nan"), float("inf")])
def test_invalid_b_raises(b):
    with pytest.raises(ValueError, match="B must be"):
        BcosConv2d(2, 2, 3, b=b)
    with pytest.raises(ValueError, match="B must be"):
        BcosLinear(2, 2, b=b)
    with pytest.raises(ValueError, match="B must be"):
        v1_logit_temperature(b)


def test_other_invalid_arguments_raise():
    with pytest.raises(ValueError, match="divisible by groups"):
        BcosConv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="max_out"):
        BcosConv2d(2, 2, 3, max_out=0)
    with pytest.raises(ValueError, match="scale"):
        BcosConv2d(2, 2, 3, scale=0.0)
    with pytest.raises(ValueError, match="expects"):
        BcosConv2d(2, 2, 3)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="temperature"):
        LogitLayer(10, temperature=float("nan"))


# --- v1: layer scale and logit temperature ------------------------------------------------------------

def test_v1_layer_scale_is_k_sqrt_cin_over_100():
    assert BcosConv2d(16, 8, 3, scale="auto").scale == pytest.approx(3 * 4 / 100)
    assert BcosConv2d(2, 8, 5, scale="auto").scale == pytest.approx(5 * math.sqrt(2) / 100)
    assert BcosConv2d(4, 8, (3, 1), scale="auto").scale == pytest.approx(math.sqrt(3) * 2 / 100)
    assert BcosLinear(64, 8, scale="auto").scale == pytest.approx(8 / 100)
    assert v1_layer_scale((3, 3), 16) == pytest.approx(0.12)
    assert BcosConv2d(2, 2, 3).scale == 1.0  # v2: no scale


def test_v1_layer_scale_divides_the_output():
    case = (4, 6, 3, 1, 1, 1, 1)
    scaled, plain, x = _conv(case, scale="auto"), _conv(case), _input(case)
    torch.testing.assert_close(scaled(x) * scaled.scale, plain(x), rtol=1e-12, atol=1e-12)


def test_v1_cifar_scale_and_temperature_table():
    assert v1_cifar_layer_scale(2.5) == pytest.approx(1e-2)
    assert v1_cifar_layer_scale(1.0) == pytest.approx(10 ** 0.25)
    for b, t in V1_CIFAR_LOG10_TEMPERATURE.items():
        assert v1_logit_temperature(b) == pytest.approx(10 ** t)
    assert v1_logit_temperature(3.0) == pytest.approx(1e3)  # held at the last entry
    # between entries: log-linear, monotone where the table is
    assert 1e1 < v1_logit_temperature(1.875) < 1e2
    assert v1_logit_temperature(1.875) == pytest.approx(10 ** 1.5)
    temps = [v1_logit_temperature(1 + i / 20) for i in range(41)]
    assert all(a <= b for a, b in zip(temps, temps[1:]))


def test_bcos_cnn_v1_defaults():
    from bcos_lib import create_model
    from bcos_lib.methods.bcos.model import bcos_cnn

    m = bcos_cnn(variant="v1", b=2.0, channels=(4, 4), strides=(1, 2))
    convs = [mod for mod in m.modules() if isinstance(mod, BcosConv2d)]
    assert all(c.scale == pytest.approx(v1_cifar_layer_scale(2.0)) for c in convs)
    assert [c.max_out for c in convs] == [2, 2, 1]  # MaxOut 2, the classifier without
    assert m.logit.temperature == pytest.approx(100.0)
    assert not any(isinstance(mod, UncentredBatchNorm2d) for mod in m.modules())
    auto = bcos_cnn(variant="v1", b=1.6, layer_scale="auto", logit_temperature=3.0, channels=(4,), strides=(1,))
    assert auto.features[0].scale == pytest.approx(3 * math.sqrt(2) / 100) and auto.logit.temperature == 3.0
    v2 = create_model("bcos_cnn")
    # v2: no layer scale; T = d^(−(B−1)/2) with d the classifier's input channels (128 by default)
    assert v2.logit.temperature == pytest.approx(128 ** -0.5)
    assert all(c.scale == 1.0 for c in v2.modules() if isinstance(c, BcosConv2d))
    assert create_model("bcos_cnn", b=1.0).logit.temperature == 1.0
    with pytest.raises(ValueError, match="v1"):
        bcos_cnn(variant="v2", layer_scale="auto")
    with pytest.raises(ValueError, match="layer_scale"):
        bcos_cnn(variant="v1", layer_scale="bogus")
