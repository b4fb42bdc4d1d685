"""CoDA Nets: the Dynamic Alignment Unit against its float64 reference, the CoDA network's exact
explanation, the hybrid's explanation at its first DAU layer, the method's metric, figures and report."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from bcos_lib import create_model
from bcos_lib.core.config import ModelEntry
from bcos_lib.explain import explain
from bcos_lib.methods.coda.layers import DynamicAlignmentConv2d, DynamicAlignmentLinear
from bcos_lib.layers.explanation_mode import explanation_mode
from bcos_lib.methods.coda.layers import NORM_EPS
from reference import dau_conv2d_reference, reference_forward
from bcos_lib.core.contract import EvalContext, ModelResult
from bcos_lib.core.registry import get_method, get_metric, method_of
from bcos_lib.methods.coda import metrics as coda_metrics
from bcos_lib.methods.coda import present as coda_present
torch.set_num_threads(1)

SMALL = dict(channels=[4, 6], strides=[1, 2], kernels=[3, 3], ranks=[3, 4, 5])
SMALL_HYBRID = dict(stem_channels=[4], stem_strides=[2], channels=[6], strides=[1], kernels=[3], ranks=[3, 4])


def _trained(name: str, steps: int = 3, size: int = 28, **kw) -> torch.nn.Module:
    """A float64 model after a few Adam steps on random images (weights no longer at their initialisation)."""
    torch.manual_seed(0)
    model = create_model(name, **kw).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for s in range(steps):
        x = model.prepare_input(torch.rand(6, 1, size, size, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(s)))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(x), torch.nn.functional.one_hot(torch.arange(6) % 10, 10).double())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _sum_identity(e, tol: float = 1e-9) -> None:
    total = e.contribution_map.sum(dim=(-2, -1))
    expected = e.target_outputs - e.bias
    assert (total - expected).abs().max() <= tol * expected.abs().max().clamp_min(1.0), \
        f"Σ contributions differs from logit − b by {(total - expected).abs().max():.3g}"


# --- the layer against the reference ------------------------------------------------------------------------

@pytest.mark.parametrize("squash", ["squash", "l2"])
@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 2, 0), (2, 1, 1)])
def test_dau_conv_matches_reference_outputs_and_weights(squash, k, stride, padding):
    torch.manual_seed(1)
    m = DynamicAlignmentConv2d(3, 5, k, stride, padding, rank=4, squash=squash).double()
    with torch.no_grad():  # move b away from its initialisation so B and b both matter
        m.bias.mul_(3)
    x = torch.rand(2, 3, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), dau_conv2d_reference(x, m.a_weight, m.b_weight, m.bias, stride, padding, squash),
                               rtol=1e-12, atol=1e-13)
    # gradients: as trained (through w(x)) and in explanation mode (w(x) and its norm constant)
    g = torch.randn(m(x).shape, dtype=torch.float64)
    for mode in (False, True):
        xa = x.clone().requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        with explanation_mode(m, mode):
            (m(xa) * g).sum().backward()
            (reference_forward(m, xb) * g).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12, msg=f"explanation_mode={mode}")
    assert not torch.allclose(xa.grad, x.new_zeros(()).expand_as(x))


def test_explanation_mode_gradient_is_the_squashed_weight_vector():
    """At one output position, ∂a/∂(patch) in explanation mode is g(w(x)) — read off the materialised w."""
    torch.manual_seed(2)
    m = DynamicAlignmentConv2d(2, 3, 3, 1, 0, rank=2).double()
    x = torch.rand(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)   # one patch = one output position
    with explanation_mode(m):
        out = m(x)
    w = m.dynamic_weights(x.detach())[0, :, :, :, :, 0, 0].flatten(1)       # (O, d)
    sq = (w * w).sum(1, keepdim=True)
    g = sq / (1 + sq) * w / (sq + NORM_EPS).sqrt()                          # ‖w‖ with the layer's ε
    for o in range(3):
        (grad,) = torch.autograd.grad(out[0, o, 0, 0], x, retain_graph=True)
        torch.testing.assert_close(grad.flatten(), g[o], rtol=1e-10, atol=1e-12)
    assert (g.norm(dim=1) < 1).all()                                         # ‖g(w)‖ < 1: |a| ≤ ‖x‖
    assert (out.abs().flatten() <= x.detach().norm()).all()


def test_alignment_maximises_the_output():
    """For a fixed ‖x‖ a DAU's output is largest when x points along w(x) (CoDA §3.2)."""
    torch.manual_seed(3)
    m = DynamicAlignmentConv2d(1, 1, 1, rank=1).double()
    with torch.no_grad():
        m.a_weight.zero_()                      # w(x) = b: a fixed direction
        m.bias.fill_(2.0)
    x_aligned = torch.full((1, 1, 1, 1), 1.0, dtype=torch.float64)
    x_against = -x_aligned
    sq = 4.0
    assert m(x_aligned).item() == pytest.approx(sq / (1 + sq) * 1.0)       # ‖g(w)‖·‖x‖
    assert m(x_against).item() == pytest.approx(-sq / (1 + sq))


def test_linear_dau_matches_reference():
    torch.manual_seed(4)
    m = DynamicAlignmentLinear(7, 4, rank=3, squash="l2").double()
    x = torch.randn(2, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), reference_forward(m, x), rtol=1e-12, atol=1e-13)
    assert m(x).shape == (2, 5, 4)


def test_dau_bad_arguments():
    with pytest.raises(ValueError, match="rank must be an integer ≥ 1"):
        DynamicAlignmentConv2d(2, 4, rank=0)
    with pytest.raises(ValueError, match="squash must be one of"):
        DynamicAlignmentConv2d(2, 4, squash="tanh")
    m = DynamicAlignmentConv2d(2, 4, kernel_size=7)
    with pytest.raises(ValueError, match=r"kernel 7×7 is larger than its 5×6 input"):
        m(torch.rand(1, 2, 5, 6))
    assert m(torch.rand(1, 2, 7, 7)).shape == (1, 4, 7, 7)


# --- the CoDA network -----------------------------------------------------------------------------------------

def test_coda_net_defaults_are_the_paper_cifar10_net():
    model = create_model("coda_net")
    daus = [m for m in model.modules() if isinstance(m, DynamicAlignmentConv2d)]
    assert len(daus) == 9
    assert [d.out_channels for d in daus] == [16, 16, 32, 32, 32, 64, 64, 64, 10]
    assert [d.stride for d in daus] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert [d.kernel_size for d in daus] == [3] * 8 + [1]
    assert [d.rank for d in daus] == [32, 32] + [64] * 7
    assert model.logit.temperature == 1000 and model.default_loss == "bce" and model.encoding == "add_inverse"
    assert model.explainable and model.dynamic_linear
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.BatchNorm2d)) for m in model.modules())
    assert method_of("coda_net").name == "CoDA" and method_of("coda_hybrid").name == "CoDA"


@pytest.mark.parametrize("kw", [SMALL, {**SMALL, "squash": "l2", "logit_temperature": 10.0},
                                {**SMALL, "encoding": "none"}, {}])
def test_coda_net_explanation_sums_to_the_logit(kw):
    """y = W(x) x exactly: Σ W(x) ⊙ x = logit − b, per image and target; sum pooling and z / T + b."""
    size = 28 if kw else 12                          # the paper-sized default: small images keep it fast
    model = _trained("coda_net", steps=3 if kw else 1, size=size, **kw)
    x = model.prepare_input(torch.rand(3, 1, size, size, dtype=torch.float64))
    with torch.no_grad():
        logits = model(x)
        maps = model.class_maps(x)
        torch.testing.assert_close(logits, maps.sum((2, 3)) / model.logit.temperature + model.logit.bias)
        with explanation_mode(model):
            assert torch.equal(model(x), logits)
    targets = torch.stack([logits.argmax(1), logits.argmin(1)], 1)
    e = explain(model, x, targets=targets, colour=False)
    _sum_identity(e)
    torch.testing.assert_close(e.bias, model.explanation_bias()[targets])
    # hidden layers (interpretable depth): a channel's output summed over positions
    for layer in list(model.explanation_layers())[:2]:
        _sum_identity(explain(model, x, layer=layer, colour=False))


def test_coda_net_explanation_is_not_the_gradient():
    model = _trained("coda_net", **SMALL)
    x = model.prepare_input(torch.rand(2, 1, 28, 28, dtype=torch.float64))
    w = explain(model, x, targets=0, colour=False).weights
    g = explain(model, x, targets=0, colour=False, explanation_mode_on=False).weights
    assert not torch.allclose(w, g, rtol=1e-3, atol=0)


@pytest.mark.parametrize("kw, match", [
    ({"ranks": [0, 4, 5]}, "ranks must be an integer ≥ 1"),
    ({"ranks": [3, 4]}, "ranks needs one entry per DAU layer"),
    ({"logit_temperature": 0.0}, "logit_temperature T must be a number > 0"),
    ({"logit_temperature": -10.0}, "logit_temperature T must be a number > 0"),
    ({"strides": [1]}, "must have the same length"),
    ({"squash": "softmax"}, "squash must be one of"),
])
def test_coda_net_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        create_model("coda_net", **{**SMALL, **kw})


def test_coda_net_kernel_larger_than_input():
    model = create_model("coda_net", channels=[4, 4], strides=[2, 2], kernels=[3, 9], ranks=[2, 2, 2])
    with pytest.raises(ValueError, match="kernel 9×9 is larger than"):
        model(model.prepare_input(torch.rand(1, 1, 12, 12)))


# --- the hybrid -----------------------------------------------------------------------------------------------

def test_hybrid_is_exact_at_the_input_of_its_first_dau_layer():
    model = _trained("coda_hybrid", **SMALL_HYBRID)
    assert not model.explainable and not model.dynamic_linear and model.explanation_bias() is None
    x = model.prepare_input(torch.rand(3, 1, 28, 28, dtype=torch.float64))
    targets = torch.tensor([[0, 1], [2, 3], [4, 5]])
    e, maps = coda_metrics.explain_at_dau_input(model, x, targets)
    assert not model.training, "explaining must leave the model in eval mode"
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(e.target_outputs, logits.gather(1, targets))
    _sum_identity(e)                                    # exact at the DAU input
    assert e.contribution_map.shape == (3, 2, 14, 14) and maps.shape == (3, 2, 28, 28)
    # at the image the hybrid is not dynamic linear: Input×Gradient does not sum to the logit
    full = explain(model, x, targets=targets, colour=False)
    assert (full.contribution_map.sum((-2, -1)) - (e.target_outputs - e.bias)).abs().max() > 1e-6


def _spots(n: int, seed: int):
    """Class c = a bright 3×3 square at position c on a 12×12 noise image (as in test_metrics)."""
    from bcos_lib.core.data import ImageDataset

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = 0.3 * torch.rand(n, 1, 12, 12, generator=gen)
    for i, c in enumerate(labels.tolist()):
        r, col = 4 * (c // 4), 3 * (c % 4)
        images[i, 0, r:r + 3, col:col + 3] = 1.0
    return ImageDataset(images, labels, tuple(f"spot {c}" for c in range(10)))


def test_dau_input_localisation_metric_scores_own_and_gradcam():
    from bcos_lib.core.config import EvaluateConfig
    from bcos_lib.train import loss_fn

    torch.manual_seed(0)
    model = create_model("coda_hybrid", stem_channels=[8], stem_strides=[1], channels=[8, 8], strides=[1, 1],
                         kernels=[3, 3], ranks=[4, 4, 4], logit_temperature=10.0)
    data, test = _spots(640, seed=0), _spots(200, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(len(data), (64,), generator=gen)
        loss = loss_fn("bce", model(model.prepare_input(data.images[idx])), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    cfg = EvaluateConfig(grid_size=2, n_grids=6, min_confidence=0.0, smooth=1, batch_size=4)
    metric = get_metric("dau_input_localisation")
    ctx = EvalContext(key="hyb", model=model, entry=ModelEntry(arch="coda_hybrid"), test_data=test, cfg=cfg,
                      options=metric.options(), device="cpu", seed=0, log=lambda s: None,
                      load_train_data=lambda: data)
    result = metric.fn(ctx)
    assert result is not None, "the metric applies to a hybrid"
    assert result.summary["layer"] == "stem" and result.summary["n_grids"] == 6
    table = result.tables["dau_input_localisation"]
    assert set(table["attribution"]) == {"own", "gradcam"} and len(table) == 2 * 6 * 4
    assert table["score"].between(0, 1).all()
    # the spots are local: the exact explanation at the DAU input points at the right cell more than a
    # uniform map (1/4) does, and here more than Grad-CAM at the same layer (measured 0.38 vs 0.26)
    assert result.summary["own"] > 1 / 4 + 0.05 and result.summary["own"] > result.summary["gradcam"]
    # a CoDA net without a stem: the metric does not apply
    ctx.model = create_model("coda_net", **SMALL)
    assert metric.fn(ctx) is None
    with pytest.raises(ValueError, match="choose from"):
        metric.options(attributions=["ixg"])


# --- figures and report ---------------------------------------------------------------------------------------

def _result(key: str, t: float, acc: float, loc: float, group: str = coda_present.T_SWEEP_GROUP) -> ModelResult:
    entry = ModelEntry(arch="coda_net", kwargs={"logit_temperature": t}, group=group, label=f"CoDA T={t:g}")
    return ModelResult(key=key, entry=entry, method="CoDA", label=entry.label, train={"test_accuracy": acc},
                       explain=None, evaluate={"localisation": {"attributions": {"own": {"mean": loc}, "gradcam": {"mean": 0.4}}}},
                       history=None, tables={}, explanations=None)


def test_t_sweep_table_figure_and_report():
    results = {"c1000": _result("c1000", 1000, 80.0, 0.7), "c10": _result("c10", 10, 82.0, 0.3),
               "c100": _result("c100", 100, 81.0, 0.5)}
    sweep = coda_present.t_sweep_table(results)
    assert sweep["T"].tolist() == [10, 100, 1000] and sweep["localisation"].tolist() == [0.3, 0.5, 0.7]
    assert sweep["paper_localisation"].tolist() == [0.31, 0.64, 0.91]
    figs = get_method("CoDA").figures(results, None)
    assert "coda_t_sweep" in figs
    text = get_method("CoDA").report(results)
    assert "| 1000 | 80.00 | 0.700 | 0.91 |" in text and "0.912" in text
    assert isinstance(sweep, pd.DataFrame)
