"""One sweep over every registered model (``bcos_lib.list_models()``): a new model is tested
by registering it.

For every model: output shapes on 28×28 and 84×84 images (a model that only takes one
size sets ``fixed_input_size``), finite gradients for all parameters, train/eval modes.
For every explainable model (``model.explainable``), in float64 after a few training
steps (so that batch-norm statistics are not trivial): explanation mode gives the same
output, and the contribution map sums to logit − bias for every image and target
(relative error ≤ 1e-4), also for hidden layers (a channel's output summed over
positions or tokens).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bcos_lib import ImageClassifier, create_model, list_models
from bcos_lib.explain import explain
from bcos_lib.layers.explanation_mode import ExplainableModule, explanation_mode
from bcos_lib.methods.csg.layers import class_gates, gate_labels
from bcos_lib.core.registry import model_signature

torch.set_num_threads(1)

MODELS = list_models()
REL_TOL = 1e-4


def _sizes(model: torch.nn.Module) -> list[int]:
    fixed = getattr(model, "fixed_input_size", None)
    return [fixed] if fixed else [28, 84]


def _images(model: ImageClassifier, n: int, size: int = 28, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Random images in [0, 1], the last one constant grey (an edge case for norms)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, model.image_channels, size, size, generator=g)
    x[-1] = 0.5
    return x.to(dtype)


def _loss(model: ImageClassifier, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if model.default_loss == "bce":
        return F.binary_cross_entropy_with_logits(out, F.one_hot(labels, out.shape[1]).to(out.dtype))
    return F.cross_entropy(out, labels)


def _train_steps(model: ImageClassifier, steps: int, dtype=torch.float64, batch: int = 8) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        x = model.prepare_input(_images(model, batch, seed=100 + step, dtype=dtype))
        labels = torch.randint(0, model.num_classes, (batch,), generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        _loss(model, model(x), labels).backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def trained64():
    """name → the model in float64 after 3 training steps (built once per module)."""
    cache: dict[str, ImageClassifier] = {}

    def get(name: str) -> ImageClassifier:
        if name not in cache:
            torch.manual_seed(0)
            model = create_model(name).double()
            _train_steps(model, steps=3)
            cache[name] = model
        return cache[name]

    return get


def _check_identity(e, rel_tol: float = REL_TOL) -> None:
    """Σ contribution map = target output − bias, per image and target."""
    total = e.contribution_map.sum(dim=(-2, -1))
    expected = e.target_outputs - e.bias
    err = (total - expected).abs()
    bound = rel_tol * expected.abs() + 1e-9
    assert (err <= bound).all(), f"max relative error {(err / expected.abs().clamp_min(1e-12)).max():.3g}"


def _hidden_layers(model: torch.nn.Module, x: torch.Tensor, count: int = 2) -> list[str]:
    """Names of explainable layers with feature-map or token outputs, in forward order, spread over the depth."""
    seen: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        if name and isinstance(mod, ExplainableModule):
            def hook(m, i, o, name=name):
                if isinstance(o, torch.Tensor) and o.dim() in (3, 4) and name not in seen:
                    seen.append(name)
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    assert seen, "an explainable model should have explainable hidden layers"
    picks = sorted({len(seen) * (i + 1) // (count + 1) for i in range(count)})
    return [seen[min(i, len(seen) - 1)] for i in picks]


# --- every model ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_is_an_image_classifier(name):
    model = create_model(name)
    assert isinstance(model, ImageClassifier)
    assert model.encoding in ("add_inverse", "none") and model.default_loss in ("bce", "ce")
    assert {"num_classes", "image_channels"} <= set(model_signature(name))
    if model.explainable:
        assert model.encoding == "add_inverse" and model.explanation_bias() is not None


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    for size in _sizes(model):
        with torch.no_grad():
            out = model(model.prepare_input(_images(model, 2, size)))
        assert out.shape == (2, model.num_classes), size
        assert torch.isfinite(out).all()
    rgb = create_model(name, num_classes=5, image_channels=3).eval()
    with torch.no_grad():
        assert rgb(rgb.prepare_input(_images(rgb, 2, _sizes(rgb)[0]))).shape == (2, 5)


@pytest.mark.parametrize("name", MODELS)
def test_class_maps_pool_to_the_logits(name):
    model = create_model(name).eval()
    if not hasattr(model, "class_maps") or not hasattr(model, "logit"):
        pytest.skip("model has no class_maps/logit")
    x = model.prepare_input(_images(model, 2))
    with torch.no_grad():
        maps = model.class_maps(x)
        assert maps.dim() == 4 and maps.shape[:2] == (2, model.num_classes)
        # the logits pool the class maps: their mean (B-cos v2), or their sum for models that say so (CoDA Nets)
        pooled = maps.sum(dim=(2, 3)) if getattr(model, "pooling", "mean") == "sum" else maps.mean(dim=(2, 3))
        torch.testing.assert_close(model.logit(pooled), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients_to_all_parameters(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = model.prepare_input(_images(model, 4))
    labels = torch.arange(4) % model.num_classes
    _loss(model, model(x), labels).backward()
    if class_gates(model):  # a class-specific gate is closed (and learns) on labelled CSG passes only
        with gate_labels(model, labels):
            _loss(model, model(x), labels).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has non-finite gradients"


@pytest.mark.parametrize("name", MODELS)
def test_train_and_eval_modes(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = model.prepare_input(_images(model, 4))
    model.train()
    assert torch.isfinite(model(x)).all()
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b), "eval mode must be deterministic"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "eval forward changed the state"
    with torch.no_grad():
        alone = model(x[:1])
    torch.testing.assert_close(alone, a[:1], rtol=1e-4, atol=1e-5,
                               msg="in eval mode an image's output must not depend on the rest of the batch")


@pytest.mark.parametrize("name", MODELS)
def test_explain_runs_and_keeps_the_model_state(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = model.prepare_input(_images(model, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    e = explain(model, x, targets=torch.tensor([[0, 1], [2, 3]]))
    assert e.contribution_map.shape == (2, 2, 28, 28) and torch.isfinite(e.contribution_map).all()
    assert model.training, "explain must restore the train mode"
    assert all(p.grad is None for p in model.parameters()), "explain must not write parameter gradients"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# --- explainable models: the explanation identity --------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_explanation_identity(name, trained64):
    model = trained64(name)
    if not model.explainable:
        pytest.skip("not an explainable (dynamic-linear) model")
    for size in _sizes(model):
        n = 6 if size == 28 else 2
        x = model.prepare_input(_images(model, n, size, seed=size, dtype=torch.float64))
        with torch.no_grad():
            logits = model(x)
            with explanation_mode(model):
                assert torch.equal(model(x), logits), "explanation mode must not change the output"
        targets = torch.stack([logits.argmax(1), logits.argmin(1), torch.arange(n) % model.num_classes], 1)
        e = explain(model, x, targets=targets)
        torch.testing.assert_close(e.target_outputs, logits.gather(1, targets), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(e.bias, model.explanation_bias().to(logits.dtype)[targets])
        _check_identity(e)


@pytest.mark.parametrize("name", MODELS)
def test_hidden_layer_explanation_identity(name, trained64):
    model = trained64(name)
    if not model.explainable:
        pytest.skip("not an explainable (dynamic-linear) model")
    x = model.prepare_input(_images(model, 4, seed=7, dtype=torch.float64))
    for layer in _hidden_layers(model, x):
        e = explain(model, x, layer=layer)
        assert (e.bias == 0).all()
        _check_identity(e)


@pytest.mark.parametrize("name", MODELS)
def test_explanation_mode_matters_for_the_weights(name, trained64):
    """W(x) in explanation mode is not the plain gradient (the dynamic factors are held fixed)."""
    model = trained64(name)
    if not model.explainable:
        pytest.skip("not an explainable (dynamic-linear) model")
    x = model.prepare_input(_images(model, 2, seed=3, dtype=torch.float64))
    w_expl = explain(model, x, targets=0, colour=False).weights
    w_grad = explain(model, x, targets=0, colour=False, explanation_mode_on=False).weights
    assert not torch.allclose(w_expl, w_grad, rtol=1e-3, atol=0)


@pytest.mark.parametrize("name, layer", [("bcos_cnn", "features.3"), ("bcos_resnet", "features.stage2"),
                                         ("bcos_resnet", "features.stage3.1"), ("bcos_vit", "pos_embed"),
                                         ("bcos_vit", "blocks.1"), ("bcos_vit", "norm")])
def test_block_explanations_by_module_name(name, layer, trained64):
    """Explanations of whole blocks by their module names (feature maps and (N, tokens, D) outputs)."""
    model = trained64(name)
    x = model.prepare_input(_images(model, 3, seed=11, dtype=torch.float64))
    e = explain(model, x, layer=layer, targets=torch.tensor([[0, 1], [2, 3], [4, 5]]))
    assert e.logits.dim() == 2 and e.contribution_map.shape == (3, 2, 28, 28)
    _check_identity(e)


def test_vit_position_embedding_resizes():
    """Tiled for multiples of the training size, interpolated for any size; exact identity either way."""
    torch.manual_seed(0)
    tiled = create_model("bcos_vit", depth=1).double().eval()
    with pytest.raises(ValueError, match="interpolate"):
        tiled(tiled.prepare_input(torch.rand(1, 1, 32, 32, dtype=torch.float64)))
    interp = create_model("bcos_vit", depth=1, pos_resize="interpolate").double().eval()
    interp.load_state_dict(tiled.state_dict())
    x28 = tiled.prepare_input(torch.rand(2, 1, 28, 28, dtype=torch.float64))
    torch.testing.assert_close(interp(x28), tiled(x28))  # same model at the training size
    for size in (32, 56):
        x = interp.prepare_input(torch.rand(2, 1, size, size, dtype=torch.float64))
        _check_identity(explain(interp, x))
    assert tiled.pos_embed.embedding(14, 21).shape == (1, 64, 14, 21)
    torch.testing.assert_close(tiled.pos_embed.embedding(14, 14)[..., 7:, 7:], tiled.pos_embed.weight)


# --- the B-cos CNN without the [x, 1 − x] encoding -------------------------------------------------------

def test_bcos_cnn_takes_the_images_alone_with_encoding_none():
    torch.manual_seed(0)
    model = create_model("bcos_cnn", channels=[8, 8], strides=[1, 2], encoding="none").double()
    assert model.input_channels == 1 and model.features[0].in_channels == 1
    _train_steps(model, steps=3)
    x = _images(model, 4, dtype=torch.float64)
    x[:, :, :10] = 0.0                                             # a black band, as Fashion-MNIST's background
    assert torch.equal(model.prepare_input(x), x)
    e = explain(model, x, targets=torch.tensor([[0, 3], [1, 4], [2, 5], [9, 0]]))
    _check_identity(e)
    assert (e.contributions[..., :10, :] == 0).all()               # a black pixel has nothing to contribute
    assert e.contributions[..., 10:, :].abs().sum() > 0
    # the colour explanation of an x-only model shows the input through the explanation's opacity
    assert e.rgba is not None and e.rgba.shape == (4, 2, 28, 28, 4)
    torch.testing.assert_close(e.rgba[..., 0], x[:, 0, None].expand(4, 2, 28, 28).float())
    assert (e.rgba[..., 3] >= 0).all() and (e.rgba[..., 3] <= 1).all()


def test_bcos_cnn_encoding_errors():
    with pytest.raises(ValueError, match="encoding must be one of"):
        create_model("bcos_cnn", encoding="inverse")
    model = create_model("bcos_cnn", channels=[8], strides=[1], encoding="none")
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, H, W\), got \(2, 2, 28, 28\)"):
        model(torch.rand(2, 2, 28, 28))
    # the [x, 1 − x] model still names the encoding when it gets raw images
    with pytest.raises(ValueError, match="add_inverse"):
        create_model("bcos_cnn", channels=[8], strides=[1])(torch.rand(2, 1, 28, 28))


def test_colour_explanation_formula():
    from bcos_lib.explain import colour_explanation

    # one grey pixel per case, weights for [x, 1 − x]: (w_x, w_inv), input x
    w = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, -2.0], [-1.0, -1.0]]).view(4, 2, 1, 1)
    x = torch.tensor([0.8, 0.3, 0.5, 0.5]).view(4, 1, 1, 1)
    rgba = colour_explanation(w, torch.cat([x, 1 - x], 1), smooth=1, percentile=100)
    # colour = w_x⁺ / (w_x⁺ + w_inv⁺) after dividing by the max |w|; grey images give three equal channels
    torch.testing.assert_close(rgba[:, 0, 0, 0], torch.tensor([0.75, 0.25, 1.0, 0.0]))
    assert torch.equal(rgba[..., 0], rgba[..., 1]) and torch.equal(rgba[..., 0], rgba[..., 2])
    # opacity: ‖W‖ (each image is its own percentile, so 1 where it is positive) and 0 where W·x < 0
    assert rgba[:3, 0, 0, 3].tolist() == [1.0, 1.0, 1.0] and rgba[3, 0, 0, 3] == 0
    with pytest.raises(ValueError, match="even channel count"):
        colour_explanation(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
