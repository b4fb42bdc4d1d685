"""Property tests (hypothesis): for random shapes, strides, paddings, dilations, groups, B ∈ [1, 3]
and MaxOut, every explainable layer is exactly linear in explanation mode — its output equals
its Jacobian times its input, y = J(x)·x — in float64, and gives the same output as in normal mode."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bcos_lib.methods.bcos.layers import BcosAttention
from bcos_lib.methods.bcos.layers import BcosConv2d, BcosLinear
from bcos_lib.methods.bcos.layers import UncentredBatchNorm2d, UncentredLayerNorm
from bcos_lib.layers.explanation_mode import explanation_mode
from reference import reference_forward

torch.set_num_threads(1)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
B = st.floats(min_value=1.0, max_value=3.0, allow_nan=False)


def _check_dynamic_linear(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Assert y = J x in explanation mode and the same y as in normal mode; return y."""
    y = layer(x)
    with explanation_mode(layer):
        y_expl = layer(x)
        jac = torch.autograd.functional.jacobian(layer, x, vectorize=True).reshape(y.numel(), x.numel())
    assert torch.equal(y_expl, y)
    torch.testing.assert_close(jac @ x.flatten(), y.flatten(), rtol=1e-9, atol=1e-10)
    return y


@st.composite
def conv_setups(draw):
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    # the smallest image that still gives one output position, plus a few pixels
    size = [max(1, d * (kk - 1) + 1 - 2 * p) + draw(st.integers(0, 4)) for kk, d, p in zip(k, dilation, padding)]
    return dict(in_channels=c_in, out_channels=c_out, kernel_size=k, stride=stride, padding=padding,
                dilation=dilation, groups=groups, b=draw(B), max_out=draw(st.integers(1, 3))), size, draw(st.integers(0, 2**16))


@SETTINGS
@given(conv_setups())
def test_bcos_conv_is_dynamic_linear(setup):
    kwargs, (h, w), seed = setup
    torch.manual_seed(seed)
    layer = BcosConv2d(**kwargs).double()
    x = torch.randn(1, kwargs["in_channels"], h, w, dtype=torch.float64)
    y = _check_dynamic_linear(layer, x)
    torch.testing.assert_close(y, reference_forward(layer, x), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 5), B, st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_bcos_linear_is_dynamic_linear(d_in, d_out, b, max_out, tokens, seed):
    torch.manual_seed(seed)
    layer = BcosLinear(d_in, d_out, b=b, max_out=max_out).double()
    x = torch.randn(tokens, d_in, dtype=torch.float64)
    y = _check_dynamic_linear(layer, x)
    torch.testing.assert_close(y, reference_forward(layer, x), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_uncentred_batch_norm_is_dynamic_linear(channels, batch, training, seed):
    torch.manual_seed(seed)
    bn = UncentredBatchNorm2d(channels).double().train(training)
    with torch.no_grad():
        bn.weight.uniform_(0.2, 3.0)
        bn.running_var.uniform_(0.2, 3.0)
    x = torch.randn(batch, channels, 3, 3, dtype=torch.float64) + 1.0  # the whole batch is the input
    bn.momentum = 0.0  # the Jacobian calls the layer again; keep the running statistics fixed
    _check_dynamic_linear(bn, x)


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 5), B, st.sampled_from([(4, 1), (4, 2), (6, 3), (8, 4)]),
       st.integers(0, 2**16))
def test_attention_and_layer_norm_are_dynamic_linear(batch, tokens, b, dim_heads, seed):
    dim, heads = dim_heads
    torch.manual_seed(seed)
    block = torch.nn.Sequential(UncentredLayerNorm(dim), BcosAttention(dim, heads, b=b)).double()
    x = torch.randn(batch, tokens, dim, dtype=torch.float64)
    _check_dynamic_linear(block, x)


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 2), B), min_size=1, max_size=3),
       st.integers(0, 2**16))
def test_stacks_of_layers_are_dynamic_linear(layers, seed):
    """Dynamic linearity composes: conv → uncentred BN → conv … is W(x) x as a whole."""
    torch.manual_seed(seed)
    mods, c_in = [], 2
    for c_out, stride, b in layers:
        mods += [BcosConv2d(c_in, c_out, 3, stride=stride, padding=1, b=b, max_out=2), UncentredBatchNorm2d(c_out)]
        c_in = c_out
    net = torch.nn.Sequential(*mods).double().eval()
    for m in net:
        if isinstance(m, UncentredBatchNorm2d):
            with torch.no_grad():
                m.running_var.uniform_(0.2, 3.0)
    _check_dynamic_linear(net, torch.rand(1, 2, 5, 5, dtype=torch.float64))
