"""Class-specific gates (CSG, ECCV 2020): the gate layer against its float64 reference, the
gated twins of the project's CNNs, the alternating training hooks, and the CSG metrics (MIS,
gate, filter localisation, adversarial detection) on gated and ungated models."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bcos_lib.core.config import ConfigError, EvaluateConfig, ModelEntry
from bcos_lib.core.data import ImageDataset
from bcos_lib.methods.csg.layers import ClassSpecificGate, class_gates, gate_labels
from reference import class_gate_reference, gate_renormalise_reference, gate_sparsity_reference
from bcos_lib.core.contract import EvalContext, ModelResult, StepInfo
from bcos_lib.core.registry import get_metric
from bcos_lib.methods.csg import metrics as csg_metrics
from bcos_lib.methods.csg import model as csg_model
from bcos_lib.methods.csg import present as csg_present
from bcos_lib.core.registry import create_model
from bcos_lib.train import default_step

torch.set_num_threads(1)

SMALL = {"channels": [8, 16], "strides": [1, 2]}


def _info(epoch: int, step: int = 0, loss: str = "ce") -> StepInfo:
    return StepInfo(epoch=epoch, step=step, epochs=4, total_steps=40, loss_name=loss)


# ----------------------------------------------------------------------------- the layer
def test_gate_matches_reference_and_is_open_without_labels():
    torch.manual_seed(0)
    gate = ClassSpecificGate(5, 3).double()
    with torch.no_grad():
        gate.weight.copy_(torch.rand(5, 3, dtype=torch.float64))
    f = torch.randn(4, 5, 6, 7, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 2])
    assert torch.equal(gate(f), f), "without labels the gate must be open"
    gate.labels = labels
    torch.testing.assert_close(gate(f), class_gate_reference(f, gate.gate.detach(), labels), rtol=0, atol=1e-15)
    pooled = f.mean((2, 3))
    torch.testing.assert_close(gate(pooled), class_gate_reference(pooled, gate.gate.detach(), labels), rtol=0,
                               atol=1e-15)


@pytest.mark.parametrize("lr_scale", [1.0, 30.0])
def test_sparsity_loss_and_renormalisation_match_reference(lr_scale):
    torch.manual_seed(1)
    gate = ClassSpecificGate(6, 4, lr_scale=lr_scale).double()
    g = torch.rand(6, 4, dtype=torch.float64) * 1.5 - 0.2
    g[3] = torch.tensor([-0.5, -0.1, -0.3, -0.2])  # a row with no positive entry
    with torch.no_grad():
        gate.weight.copy_(g / lr_scale)
    for d in (0.2, 0.9):
        assert gate.sparsity_loss(1e-3, d).item() == pytest.approx(gate_sparsity_reference(g, 1e-3, d), abs=1e-15)
    gate.renormalise_()
    torch.testing.assert_close(gate.gate.detach(), gate_renormalise_reference(g), rtol=0, atol=1e-12)
    assert (gate.gate.max(1).values == 1).all(), "every filter stays fully open for at least one class"
    assert torch.equal(gate.gate.detach()[3], torch.tensor([0, 1, 0, 0], dtype=torch.float64))


def test_sparsity_loss_only_penalises_density_above_the_target():
    gate = ClassSpecificGate(10, 10)       # density 0.5
    assert gate.sparsity_loss(1e-3, 0.6).item() == 0.0
    assert gate.sparsity_loss(1e-3, 0.2).item() == pytest.approx(1e-3 * (50 - 20))
    assert gate.density().item() == pytest.approx(0.5)


def test_gate_labels_sets_and_restores_and_rejects_bad_labels():
    model = create_model("csg_std_cnn", **SMALL)
    (gate,) = class_gates(model)
    with gate_labels(model, torch.tensor([1, 2])):
        assert torch.equal(gate.labels, torch.tensor([1, 2]))
    assert gate.labels is None
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        with gate_labels(model, torch.tensor([3, 10])):
            pass
    with pytest.raises(ValueError, match="no ClassSpecificGate"):
        with gate_labels(create_model("std_cnn", **SMALL), torch.tensor([0])):
            pass
    x = torch.rand(3, 1, 28, 28)
    with pytest.raises(ValueError, match="one class per image"):
        with gate_labels(model, torch.tensor([0, 1])):
            model(x)


def test_gate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="initial value"):
        ClassSpecificGate(4, 2, init=0.0)
    with pytest.raises(ValueError, match="lr_scale"):
        ClassSpecificGate(4, 2, lr_scale=0)


# ----------------------------------------------------------------------------- the models
@pytest.mark.parametrize("twin, extra", [("std_cnn", {}), ("bcos_cnn", {"b": 2.0, "max_out": 2, "encoding": "none",
                                                                       "logit_temperature": 1.0})])
def test_gated_model_is_its_twin_plus_a_gate(twin, extra):
    torch.manual_seed(0)
    plain = create_model(twin, **SMALL, **extra).eval()
    gated = create_model("csg_" + twin, **SMALL, **extra, gate_init=0.5, gate_lr_scale=10.0).eval()
    ps, gs = plain.state_dict(), gated.state_dict()
    renamed = {k.replace("classifier.conv.", "classifier."): v for k, v in gs.items() if "gate" not in k}
    assert {k: v.shape for k, v in renamed.items()} == {k: v.shape for k, v in ps.items()}
    assert gs["classifier.gate.weight"].shape == (16, 10)
    torch.testing.assert_close(gated.classifier.gate.gate, torch.full((16, 10), 0.5))
    gated.load_state_dict({**{k: ps[k.replace("classifier.conv.", "classifier.")] for k in gs if "gate" not in k},
                           "classifier.gate.weight": gs["classifier.gate.weight"]})
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(gated(gated.prepare_input(x)), plain(plain.prepare_input(x)))
        with gate_labels(gated, torch.tensor([0, 1, 2, 3])):
            assert not torch.allclose(gated(gated.prepare_input(x)), plain(plain.prepare_input(x)))
    assert gated.explainable == plain.explainable


def test_gated_builder_checks_its_arguments():
    with pytest.raises(TypeError, match="unknown argument"):
        create_model("csg_std_cnn", gate_int=0.5)
    with pytest.raises(TypeError, match="unknown argument"):
        create_model("csg_std_cnn", b=2.0)   # a B-cos argument: not one of std_cnn's
    m = create_model("csg_bcos_cnn", b=1.5, gate_init=0.25)
    assert m.model_kwargs == {"b": 1.5, "gate_init": 0.25}
    assert class_gates(m)[0].gate.detach().eq(0.25).all()


# ----------------------------------------------------------------------------- training
def test_schedule_is_a_pure_function_of_the_epoch():
    o = csg_model.CSGOptions(warmup_epochs=2, period=3)
    assert [csg_model.is_csg_epoch(e, o) for e in range(9)] == [False, False, True, False, False, True, False, False, True]
    assert [csg_model.is_csg_epoch(e, csg_model.CSGOptions(warmup_epochs=0, period=1)) for e in range(3)] == [True] * 3
    two_of_three = csg_model.CSGOptions(warmup_epochs=1, period=3, gated=2)
    assert [csg_model.is_csg_epoch(e, two_of_three) for e in range(8)] == [False, True, True, False, True, True,
                                                                             False, True]


def test_alternation_by_step_gates_every_period_th_batch_after_the_warm_up():
    from bcos_lib.core.contract import StepInfo
    o = csg_model.CSGOptions(warmup_epochs=1, period=2, unit="step")
    info = [StepInfo(epoch=s // 5, step=s, epochs=3, total_steps=15, loss_name="ce") for s in range(15)]
    assert [csg_model.is_csg_step(i, o) for i in info] == [False] * 5 + [False, True, False, True, False,
                                                                   True, False, True, False, True]
    assert [csg_model.is_csg_epoch(e, o) for e in range(3)] == [False, True, True]
    by_epoch = csg_model.CSGOptions(warmup_epochs=1, period=2)
    assert [csg_model.is_csg_step(i, by_epoch) for i in info] == [False] * 5 + [True] * 5 + [False] * 5
    with pytest.raises(ConfigError, match="unit must be one of epoch, step"):
        csg_model.CSGOptions(unit="batch")


@pytest.mark.parametrize("bad, match", [({"period": 0}, "period"), ({"density": 0.0}, "density"),
                                        ({"warmup_epochs": -1}, "warmup"), ({"sparsity_weight": -1.0}, "sparsity"),
                                        ({"period": 2, "gated": 3}, "gated must lie in 1 … period"),
                                        ({"gated": 0}, "gated")])
def test_options_are_validated(bad, match):
    with pytest.raises(ConfigError, match=match):
        csg_model.CSGOptions(**bad)


def test_training_hooks_gate_only_csg_epochs():
    torch.manual_seed(0)
    model = create_model("csg_std_cnn", **SMALL, gate_lr_scale=1.0).train()
    (gate,) = class_gates(model)
    opts = csg_model.CSGOptions(warmup_epochs=1, period=2, sparsity_weight=0.5, density=0.2)
    hooks = csg_model.training(model, opts, type("Cfg", (), {"epochs": 3})())
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    std = hooks.step(model, x, y, _info(0))
    std.loss.backward()
    assert gate.weight.grad is None, "a standard step must not touch the gate"
    assert std.terms == {"csg_step": 0.0, "sparsity": 0.0, "gate_density": pytest.approx(0.5)}
    model.zero_grad(set_to_none=True)
    gated = hooks.step(model, x, y, _info(1))
    assert gated.terms["csg_step"] == 1.0 and gated.terms["sparsity"] == pytest.approx(0.5 * (80 - 32))
    plain = default_step(model, x, y, _info(1))
    assert gated.loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(_gated_logits(model, x, y), y).item() + 0.5 * 48, rel=1e-6)
    assert not torch.isclose(gated.loss, plain.loss)
    gated.loss.backward()
    assert gate.weight.grad is not None and gate.weight.grad[:, 8:].eq(0.5).all(), \
        "classes absent from the batch get only the sparsity gradient"
    with torch.no_grad():
        gate.weight.mul_(0.3)
        hooks.after_step(model, _info(0))
        assert gate.gate.max().item() == pytest.approx(0.15), "no renormalisation after a standard step"
        hooks.after_step(model, _info(1))
        assert (gate.gate.max(1).values == 1).all()


def _gated_logits(model, x, y):
    with torch.no_grad(), gate_labels(model, y):
        return model(model.prepare_input(x))


def test_training_rejects_a_schedule_without_csg_epochs_and_ungated_models():
    with pytest.raises(ConfigError, match="no CSG epoch"):
        csg_model.training(create_model("csg_std_cnn", **SMALL), csg_model.CSGOptions(warmup_epochs=3),
                     type("Cfg", (), {"epochs": 3})())
    with pytest.raises(ConfigError, match="no class-specific gate"):
        csg_model.training(create_model("std_cnn", **SMALL), csg_model.CSGOptions(), type("Cfg", (), {"epochs": 3})())


# ----------------------------------------------------------------------------- analysis
def test_mis_is_high_for_class_specific_features_and_low_for_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    specific = np.stack([(y == c) + 0.05 * rng.standard_normal(400) for c in range(4)], 1)
    noise = rng.standard_normal((400, 4))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))   # the entropy of 1[y = c]: the most MI can be
    mi = csg_metrics.mutual_information_matrix(specific, y, 4)
    assert mi.shape == (4, 4) and np.argmax(mi, 0).tolist() == [0, 1, 2, 3]
    assert csg_metrics.mutual_information_score(mi) == pytest.approx(h, abs=0.05)
    assert csg_metrics.mutual_information_score(csg_metrics.mutual_information_matrix(noise, y, 4)) < 0.05
    assert csg_metrics.mutual_information_score(np.array([[0.1, 0.5], [0.3, 0.2]])) == pytest.approx(0.4)


def test_class_filter_maps_weigh_each_filter_by_its_class():
    torch.manual_seed(0)
    model = create_model("csg_std_cnn", **SMALL).eval()
    x = torch.rand(2, 1, 28, 28)
    w = torch.rand(16, 10)
    classes = torch.tensor([[3, 7], [0, 3]])
    maps = csg_metrics.class_filter_maps(model, x, classes, w)
    a = csg_metrics.feature_maps(model, x).clamp_min(0)
    for n in range(2):
        for t in range(2):
            expected = (w[:, classes[n, t]].view(-1, 1, 1) * a[n]).sum(0)
            up = torch.nn.functional.interpolate(expected[None, None], size=(28, 28), mode="bilinear",
                                                 align_corners=False)[0, 0]
            torch.testing.assert_close(maps[n, t], up, rtol=1e-5, atol=1e-6)
    one_hot = csg_metrics.class_filter_weights(model, np.eye(10, 16) + 0.01, "mi")
    assert one_hot[:10].argmax(1).tolist() == list(range(10)) and one_hot.sum(1).eq(1).all()
    with pytest.raises(ValueError, match="gated model"):
        csg_metrics.class_filter_weights(create_model("std_cnn", **SMALL), None, "gate")


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = create_model("std_cnn", **SMALL).eval()
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    adv = csg_metrics.pgd_attack(model, x, y, eps=0.05, steps=5, seed=0)
    assert (adv - x).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(adv), y) > ce(model(x), y)
    fgsm = csg_metrics.pgd_attack(model, x, y, eps=0.05, steps=1, step_size=0.05, seed=None)
    assert torch.allclose((fgsm - x).abs()[(x > 0.05) & (x < 0.95)], torch.tensor(0.05))
    with pytest.raises(ValueError, match="ε > 0"):
        csg_metrics.pgd_attack(model, x, y, eps=0.0)


def test_detection_score_is_one_minus_cosine_to_the_predicted_template():
    f = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    template = torch.tensor([[1.0, 0.0], [0.0, 1.0]])   # (C, K): class 0 = filter 0, class 1 = filter 1
    s = csg_metrics.detection_scores(f, torch.tensor([0, 1]), template)
    torch.testing.assert_close(s, torch.tensor([0.0, 1 - 1 / math.sqrt(2)]))


# ----------------------------------------------------------------------------- metrics on trained models
@pytest.fixture(scope="module")
def fmnist() -> tuple[ImageDataset, ImageDataset]:
    from bcos_lib.core.data import load_fashion_mnist, subset
    from bcos_lib.core.paths import project_root
    root = project_root() / "data" / "fashion-mnist"
    return subset(load_fashion_mnist(root, "train"), 1500, seed=0), subset(load_fashion_mnist(root, "test"), 300, seed=0)


@pytest.fixture(scope="module")
def trained(fmnist):
    """A gated and an ungated small CNN trained a few standard and CSG epochs on 1500 Fashion-MNIST images."""
    from bcos_lib.train import batches
    train, test = fmnist
    out = {}
    for arch in ("std_cnn", "csg_std_cnn"):
        torch.manual_seed(0)
        kwargs = dict(SMALL, **({"gate_lr_scale": 30.0} if arch.startswith("csg") else {}))
        model = create_model(arch, **kwargs)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        opts = csg_model.CSGOptions(warmup_epochs=1, period=1)
        hooks = csg_model.training(model, opts, type("Cfg", (), {"epochs": 4})()) if arch.startswith("csg") else None
        step = 0
        for epoch in range(4):
            for x, y in batches(train, 100, shuffle=True, epoch=epoch):
                info = _info(epoch, step)
                r = hooks.step(model, x, y, info) if hooks else default_step(model, x, y, info)
                opt.zero_grad()
                r.loss.backward()
                opt.step()
                if hooks:
                    with torch.no_grad():
                        hooks.after_step(model, info)
                step += 1
        out[arch] = model.eval()
    return out, (train, test)


def _ctx(model, data, metric, **options) -> EvalContext:
    m = get_metric(metric)
    train, test = data
    return EvalContext(key="k", model=model, entry=ModelEntry(arch=model.model_name), test_data=test,
                       cfg=EvaluateConfig(grid_size=2, n_grids=4, min_confidence=0.0, batch_size=4),
                       options=m.options(**options), device="cpu", seed=0, log=lambda s: None,
                       load_train_data=lambda: train)


def test_metrics_run_on_gated_and_ungated_models(trained):
    models, train = trained
    for arch, model in models.items():
        gated = arch.startswith("csg")
        mis = get_metric("mis").fn(_ctx(model, train, "mis", n_images=200))
        assert 0 <= mis.summary["mis"] <= math.log(2) and mis.summary["n_filters"] == 16
        assert len(mis.tables["mutual_information"]) == 160
        gate = get_metric("gate").fn(_ctx(model, train, "gate"))
        assert gate.summary["gated"] is gated
        if gated:
            assert gate.summary["density"] < 0.5 and len(gate.tables["gate_matrix"]) == 160
            assert gate.summary["accuracy_true_gate"] >= gate.summary["accuracy_open"] - 1e-9
        else:
            assert gate.summary["density"] == 1.0 and not gate.tables
            assert gate.summary["accuracy_true_gate"] == gate.summary["accuracy_open"]
        loc = get_metric("filter_localisation").fn(_ctx(model, train, "filter_localisation", mi_images=200))
        assert loc.summary["assignment"] == ("gate" if gated else "mi")
        assert 0 <= loc.summary["mean"] <= 1 and set(loc.tables["filter_localisation"]["assignment"]) == (
            {"gate", "mi"} if gated else {"mi"})
        det = get_metric("adversarial_detection").fn(_ctx(model, train, "adversarial_detection", eps=0.3, steps=3,
                                                          n_images=100, template_images=300, folds=2, trees=10))
        assert det.summary["n_attacked"] > 20
        if det.summary["auroc_forest"] is not None:
            assert 0 <= det.summary["auroc_forest"] <= 1 and 0 <= det.summary["auroc_class_mean"] <= 1
            assert (det.summary["auroc_gate"] is None) is (not gated)


def test_a_class_filter_map_points_at_its_own_class(trained):
    """On 2×2 grids, the maps of each class's own filters put more of their mass in that class's
    cell than chance (0.25) and than the maps of another class's filters."""
    models, (train, test) = trained
    model = models["csg_std_cnn"]
    w = csg_metrics.class_filter_weights(model, None, "gate")
    kw = dict(n=2, n_grids=12, min_confidence=0.0, batch_size=6)
    own = csg_metrics.filter_localisation(model, test, w, **kw)["score"].mean()
    other = csg_metrics.filter_localisation(model, test, w.roll(1, dims=1), **kw)["score"].mean()
    assert own > 0.25 and own > other + 0.02, (own, other)


def test_metric_options_are_validated():
    with pytest.raises(ConfigError, match="split"):
        csg_metrics.MISOptions(split="val")
    with pytest.raises(ConfigError, match="eps"):
        csg_metrics.DetectionOptions(eps=0.0)


# ----------------------------------------------------------------------------- report
def test_report_pairs_each_gated_model_with_its_twin():
    def result(key, arch, acc, mis, density, twin=""):
        entry = ModelEntry(arch=arch, kwargs={"channels": [8]} | ({"gate_lr_scale": 30.0} if "csg" in arch else {}),
                           group="csg", label=key, twin=twin)
        return ModelResult(key=key, entry=entry, method="csg", label=key, train={"test_accuracy": acc},
                           explain=None, evaluate={"mis": {"mis": mis}, "gate": {"density": density}},
                           history=None, tables={}, explanations=None)
    res = {"a": result("a", "std_cnn", 90.0, 0.10, 1.0), "b": result("b", "csg_std_cnn", 89.0, 0.2, 0.2, twin="a")}
    table = csg_present.csg_table(res)
    assert table["accuracy_vs_twin"].tolist()[1] == pytest.approx(-1.0) and pd.isna(table["accuracy_vs_twin"][0])
    text = csg_present.report(res)
    assert "| b | 89.00 | -1.00 |" in text and "0.200" in text
