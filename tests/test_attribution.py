"""Attribution maps by name (bcos_lib.explain): shapes, the model's own
explanation, and that several targets per image give what one captum call per target gives."""
from __future__ import annotations

import pytest
import torch

from bcos_lib import create_model
from bcos_lib.explain import attribute, attribution_label, gradcam_layer, list_attributions, posthoc_attributions
from bcos_lib.explain import explain

torch.set_num_threads(1)
SMALL = dict(channels=(8, 8, 16, 16), strides=(1, 2, 1, 2))
FAST = {"ig": {"steps": 4}, "occlusion": {"window": 4}}


def small(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(arch, **SMALL).eval()


@pytest.fixture(scope="module", params=["bcos_cnn", "std_cnn"])
def model(request) -> torch.nn.Module:
    return small(request.param)


def inputs(model: torch.nn.Module, n: int = 3, size: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return model.prepare_input(torch.rand(n, 1, size, size, generator=gen))


TARGETS = torch.tensor([[0, 3], [5, 1], [9, 9]])


@pytest.mark.parametrize("attribution", list_attributions())
def test_every_attribution_gives_one_map_per_image_and_target(model, attribution):
    x = inputs(model)
    if attribution == "own" and not model.explainable:
        with pytest.raises(ValueError, match="dynamic-linear"):
            attribute(model, x, TARGETS, attribution)
        return
    maps = attribute(model, x, TARGETS, attribution, **FAST.get(attribution, {}))
    assert maps.shape == (3, 2, 16, 16)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert not maps.requires_grad
    assert all(p.grad is None for p in model.parameters())
    single = attribute(model, x, 3, attribution, **FAST.get(attribution, {}))   # an int target: T = 1
    assert single.shape == (3, 1, 16, 16)


def test_own_equals_the_contribution_map():
    model = small("bcos_cnn")
    x = inputs(model)
    expected = explain(model, x, TARGETS, colour=False).contribution_map
    assert torch.allclose(attribute(model, x, TARGETS, "own"), expected, atol=1e-7)
    # and the contributions sum to the logit minus the fixed bias (W(x) x = y − b)
    with torch.no_grad():
        logits = model(x)
    total = attribute(model, x, TARGETS, "own").sum((2, 3))
    assert torch.allclose(total, logits.gather(1, TARGETS) - model.explanation_bias()[TARGETS], atol=1e-4)


@pytest.mark.parametrize("attribution", posthoc_attributions())
def test_several_targets_equal_one_captum_call_per_target(attribution):
    model = small("bcos_cnn")
    x = inputs(model)
    opts = dict(FAST.get(attribution, {}), chunk_size=4)                 # chunks that split an image's targets
    together = attribute(model, x, TARGETS, attribution, **opts)
    for t in range(TARGETS.shape[1]):
        alone = attribute(model, x, TARGETS[:, t], attribution, **opts)[:, 0]
        assert torch.allclose(together[:, t], alone, atol=1e-6, rtol=1e-5), t


def test_occlusion_matches_captum_with_a_target():
    from captum.attr import Occlusion

    model = small("std_cnn")
    x = inputs(model)
    maps = attribute(model, x, TARGETS, "occlusion", window=4, stride=2)
    for t in range(TARGETS.shape[1]):
        ref = Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0,
                                         target=TARGETS[:, t]).sum(1)
        assert torch.allclose(maps[:, t], ref, atol=1e-6)


def test_ixg_is_input_times_gradient_of_the_trained_model():
    model = small("std_cnn")
    x = inputs(model).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, 4].sum(), x)
    assert torch.allclose(attribute(model, x.detach(), 4, "ixg")[:, 0], (g * x).sum(1).detach(), atol=1e-6)


def test_gradcam_reads_the_vits_last_token_map():
    """For a ViT the last 4-d output must be the last tokens as a grid, not the patch embedding."""
    torch.manual_seed(0)
    model = create_model("bcos_vit").eval()
    x = inputs(model, size=28)
    layer = gradcam_layer(model, x)
    assert layer is model.token_map
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    assert captured[0].shape[1:] == (64, 7, 7)  # D channels on the 7×7 token grid
    maps = attribute(model, x, TARGETS, "gradcam")
    assert maps.shape == (len(x), TARGETS.shape[1], 28, 28) and maps.abs().sum() > 0


def test_gradcam_reads_the_last_feature_map_and_upsamples(model):
    assert gradcam_layer(model, inputs(model)) is model.features[-1]
    maps = attribute(model, inputs(model, size=20), TARGETS, "gradcam", layer="features.0")
    assert maps.shape == (3, 2, 20, 20)


def test_the_model_mode_is_restored_and_errors_are_clear():
    model = small("bcos_cnn").train()
    attribute(model, inputs(model), TARGETS, "ixg")
    assert model.training
    with pytest.raises(ValueError, match="unknown attribution"):
        attribute(model, inputs(model), TARGETS, "lime")
    with pytest.raises(TypeError, match="steps"):
        attribute(model, inputs(model), TARGETS, "ig", n_steps=3)
    with pytest.raises(ValueError, match="targets"):
        attribute(model, inputs(model), torch.zeros(2, 2, dtype=torch.long), "ixg")


def test_attribution_labels():
    assert attribution_label("ig") == "Integrated Gradients"
    assert all(attribution_label(m) for m in list_attributions() + ["random"])
    with pytest.raises(ValueError):
        attribution_label("nope")
