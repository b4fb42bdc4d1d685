"""B-cosification (bcos_lib.methods.bcosification): float64 exactness of the
conversion for every supported architecture (random weights, offline), the explanation identity
after the full conversion, clear errors, offline pretrained weights, CLIP, the schedules and the
speed-up arithmetic."""
from __future__ import annotations

import copy
import urllib.request

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from bcos_lib import create_model
from bcos_lib.methods.bcosification.convert import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, BcosifyError, bcosify, bcosify_clip_visual, clip_zero_shot, load_clip_rn50, torchvision_model, torchvision_weights_file)
from bcos_lib.explain import explain
from bcos_lib.layers.encoding import add_inverse
from bcos_lib.layers.explanation_mode import explanation_mode
from bcos_lib.methods.bcosification.layers import live_biases, set_bias_scale
from bcos_lib.core.contract import StepInfo
from bcos_lib.methods.bcosification import model as bcosification_model
from bcos_lib.methods.bcosification import present as bcosification_present
from bcos_lib.core.pipeline import load_model, save_model

torch.set_num_threads(1)
SHAPE = {"channels": [8, 16, 16, 32], "strides": [1, 2, 1, 2]}


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights everywhere: BN statistics and affine terms, biases, and the parameters
    torchvision initialises to zero (ViT head and class token), so that no term can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        for name, p in model.named_parameters():
            if not p.abs().sum() or name.endswith("bias") or "class_token" in name or "pos_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.double().eval()


def _tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


def _narrow_vgg11_bn() -> nn.Module:
    """torchvision's VGG-11-BN (its features, its head's structure) with a 64-wide head
    instead of 4096 (the float64 test would hold 130 M parameters otherwise)."""
    with torch.device("meta"):  # (not initialising the 4096-wide head saves seconds)
        m = torchvision.models.vgg11_bn(weights=None, num_classes=10)
    m.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
                                 nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    m.features.to_empty(device="cpu")
    for layer in m.features.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        if isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
    return m


# name → (source builder, image size, input normalisation (None: the model's own, 1 channel))
ARCHS = {
    "std_cnn": (lambda: create_model("std_cnn", **SHAPE), 28, None),
    "std_resnet": (lambda: create_model("std_resnet", widths=[8, 16], blocks=[1, 1], strides=[1, 2]), 28, None),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), 64, IMAGENET_MEAN),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None, num_classes=10), 64, IMAGENET_MEAN),
    "vgg11_bn": (_narrow_vgg11_bn, 32, IMAGENET_MEAN),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None, num_classes=10), 64, IMAGENET_MEAN),
    "vit": (_tiny_vit, 32, IMAGENET_MEAN),
}


def _source_output(src: nn.Module, x: torch.Tensor, normalised: bool) -> torch.Tensor:
    if not normalised:
        return src(x)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return src((x - mean) / std)


def _images(channels: int, size: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _recalibrate(model: nn.Module, x: torch.Tensor) -> None:
    """One train-mode pass with momentum 1: every uncentred BN takes the batch's variance, so
    that the B = 2 network's activations have a sane scale (as after fine-tuning)."""
    for m in model.modules():
        if hasattr(m, "running_var"):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def _identity_error(model: nn.Module, x: torch.Tensor) -> float:
    """max |Σ contributions − (logit − bias)|, relative to Σ |contributions| + |logit| (the scale of its
    float error: the sum's cancellations, and the logit − bias subtraction)."""
    e = explain(model, x, colour=False)
    total = e.contribution_map.sum((-2, -1))
    scale = e.contributions.abs().sum((-3, -2, -1)) + e.target_outputs.abs()
    assert (scale > 0).all()
    return float(((total - (e.target_outputs - e.bias)).abs() / scale).max())


@pytest.mark.parametrize("name", list(ARCHS))
def test_b1_with_biases_computes_the_original(name):
    """B = 1, biases kept, max-pools kept: every other conversion step leaves the function as it was."""
    make, size, norm = ARCHS[name]
    torch.manual_seed(0)
    src = _randomise(make())
    channels = 3 if norm else 1
    x = _images(channels, size)
    with torch.no_grad():
        ref = _source_output(src, x, norm is not None)
        out = bcosify(src, b=1.0, keep_bias=True, max_pool="keep", logit_bias=0.0).double().eval()(add_inverse(x))
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_a_float64_source_is_converted_in_float64():
    """bcosify keeps the source's dtype: a float64 network comes back float64, and at B = 1 with its
    biases it computes the source's function to float64 precision (not float32's)."""
    make, size, norm = ARCHS["std_cnn"]
    torch.manual_seed(0)
    src = _randomise(make()).double()
    x = _images(3 if norm else 1, size).double()
    converted = bcosify(src, b=1.0, keep_bias=True, max_pool="keep", logit_bias=0.0)
    assert {p.dtype for p in converted.parameters()} == {torch.float64}
    assert torch.get_default_dtype() == torch.float32   # restored
    with torch.no_grad():
        ref = _source_output(src, x, norm is not None)
        out = converted.eval()(add_inverse(x))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    assert {p.dtype for p in bcosify(src.float()).parameters()} == {torch.float32}


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_max_pool_becomes_avg_pool(name):
    """With ``max_pool="avg"`` the network is the original with its max-pools swapped for avg-pools."""
    make, size, _ = ARCHS[name]
    src = _randomise(make())
    swapped = copy.deepcopy(src)
    for parent in swapped.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    x = _images(3, size)
    with torch.no_grad():
        ref = _source_output(swapped, x, True)
        out = bcosify(src, b=1.0, keep_bias=True, logit_bias=0.0).double().eval()(add_inverse(x))
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("name", list(ARCHS))
def test_full_conversion_is_dynamic_linear(name):
    """B = 2, biases removed: the explanation W(x) ⊙ x sums to the logit minus the fixed logit bias."""
    make, size, norm = ARCHS[name]
    src = _randomise(make())
    model = bcosify(src).double()
    assert model.dynamic_linear and not live_biases(model)
    x = add_inverse(_images(3 if norm else 1, size, n=3))
    _recalibrate(model, x)
    assert _identity_error(model, x) < 1e-9


def test_kept_biases_are_reported_and_fade_out():
    src = _randomise(create_model("std_cnn", **SHAPE))
    model = bcosify(src, keep_bias=True).double()
    assert not model.dynamic_linear and live_biases(model)
    x = add_inverse(_images(1, 28))
    _recalibrate(model, x)
    assert _identity_error(model, x) > 1e-3  # the biases carry part of the logit
    set_bias_scale(model, 0.0)
    assert model.dynamic_linear and _identity_error(model, x) < 1e-9


def test_grey_images_into_an_rgb_network():
    """An RGB network made to take grey images: the same as feeding it the grey image thrice."""
    src = _randomise(ARCHS["resnet18"][0]())
    x = _images(1, 64)
    with torch.no_grad():
        ref = _source_output(src, x.repeat(1, 3, 1, 1), True)
        out = bcosify(src, b=1.0, keep_bias=True, max_pool="keep", logit_bias=0.0, image_channels=1).double()(
            add_inverse(x))
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


# ----------------------------------------------------------------------------- input_norm="layer"
@pytest.mark.parametrize("name", ["std_cnn", "resnet18"])
def test_layer_input_norm_b1_computes_the_original_and_b2_differs_from_fold(name):
    """input_norm="layer" (the official code's placement): [x, 1 − x] normalised in front of a first
    layer [W, −W]/2.  At B = 1 with the biases it is the source's function, as the folded conversion
    is; at B = 2 the first layer's patch norm sees another input, so the two models differ."""
    make, size, norm = ARCHS[name]
    torch.manual_seed(0)
    src = _randomise(make())
    x = _images(3 if norm else 1, size)
    layer = bcosify(src, b=1.0, keep_bias=True, max_pool="keep", logit_bias=0.0, input_norm="layer").double().eval()
    assert layer.encoding == "add_inverse_normalised" and layer.input_channels == 2 * x.shape[1]
    z = layer.prepare_input(x)
    assert float(z.min()) < 0            # the normalised input leaves [0, 1]
    with torch.no_grad():
        ref = _source_output(src, x, norm is not None)
        out = layer(z)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))
    fold2, layer2 = bcosify(src).double(), bcosify(src, input_norm="layer").double()
    for m in (fold2, layer2):
        _recalibrate(m, m.prepare_input(x))
    with torch.no_grad():
        a, b = fold2.class_maps(fold2.prepare_input(x)), layer2.class_maps(layer2.prepare_input(x))
    assert a.abs().max() > 1e-3 and (a - b).abs().max() > 1e-2 * a.abs().max()


def test_layer_input_norm_is_dynamic_linear_in_the_normalised_input(tmp_path):
    """B = 2, no biases: the explanation of the normalised input sums to the logit minus the logit
    bias, and the model saves, rebuilds (init → builder) and loads with its normalisation."""
    parent = _randomise(create_model("std_cnn", **SHAPE)).float()
    model = bcosification_model.init(parent, bcosification_model.BcosificationOptions(b=2.0, input_norm="layer"))
    assert model.model_kwargs["input_norm"] == "layer"
    x = _images(1, 28, n=3)
    d = copy.deepcopy(model).double()
    _recalibrate(d, d.prepare_input(x))
    assert _identity_error(d, d.prepare_input(x)) < 1e-9
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.encoding == "add_inverse_normalised"
    xf = x.float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(loaded.prepare_input(xf)), model.eval()(model.prepare_input(xf)))


def test_layer_input_norm_is_refused_where_it_cannot_hold():
    with pytest.raises(BcosifyError, match="input_norm='layer' is for CNNs"):
        bcosify(_tiny_vit(), input_norm="layer")
    with pytest.raises(BcosifyError, match="cannot take grey images repeated"):
        bcosify(ARCHS["resnet18"][0](), input_norm="layer", image_channels=1)
    with pytest.raises(ValueError, match="input_norm must be one of fold, layer"):
        bcosify(create_model("std_cnn", **SHAPE), input_norm="folded")
    from bcos_lib.core.config import ConfigError
    with pytest.raises(ConfigError, match="options.input_norm"):
        bcosification_model.BcosificationOptions(input_norm="normalise")


# ----------------------------------------------------------------------------- errors
def test_unsupported_module_is_named_with_its_path():
    src = torchvision.models.resnet18(weights=None)
    src.layer2[1].relu = nn.SiLU()
    with pytest.raises(BcosifyError, match=r"features\.layer2\.1\.relu.*SiLU"):
        bcosify(src)


def test_unknown_container_and_unknown_network_are_refused():
    src = torchvision.models.resnet18(weights=None)

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(64, 64, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.conv(x))

    src.layer1[0] = Gate()
    with pytest.raises(BcosifyError, match=r"features\.layer1\.0 .*Gate.*not known to be dynamic linear"):
        bcosify(src)
    with pytest.raises(BcosifyError, match="cannot B-cosify a .*MobileNetV2"):
        bcosify(torchvision.models.mobilenet_v2(weights=None))
    with pytest.raises(BcosifyError, match="already a B-cos"):
        bcosify(create_model("bcos_cnn"))


def test_wrong_normalisation_is_refused():
    with pytest.raises(BcosifyError, match="takes 3 channel.*mean/std have 1"):
        bcosify(torchvision.models.resnet18(weights=None), mean=[0.5], std=[0.5])


# ----------------------------------------------------------------------------- pretrained weights, offline
def test_torchvision_weights_come_from_the_hub_cache_and_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    path = torchvision_weights_file("resnet18")
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    model, pretrained = torchvision_model("resnet18")
    assert not pretrained
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        torchvision_model("resnet18", pretrained="yes")
    torch.manual_seed(3)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    model, pretrained = torchvision_model("resnet18")
    assert pretrained
    torch.testing.assert_close(model.state_dict()["fc.weight"], saved["fc.weight"])


# ----------------------------------------------------------------------------- CLIP
def _tiny_clip_visual() -> nn.Module:
    from open_clip.modified_resnet import ModifiedResNet
    torch.manual_seed(0)
    return ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=64, width=8)


def test_clip_image_tower_b1_is_the_original():
    src = _randomise(_tiny_clip_visual())
    x = _images(3, 64)
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = src((x - mean) / std)
        out = bcosify_clip_visual(src, b=1.0, keep_bias=True, max_pool="keep").double().eval()(add_inverse(x))
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_clip_zero_shot_explains_a_zero_shot_logit(monkeypatch, tmp_path):
    """open_clip's RN50 (random weights: none are on disk here), three prompts on grey 28×28 images."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip/RN50.pt
    clip, pretrained = load_clip_rn50()
    assert not pretrained
    with pytest.raises(FileNotFoundError):
        load_clip_rn50(tmp_path / "missing.pt")
    clf = clip_zero_shot(clip, ["t-shirt", "trouser", "sneaker"], templates=["a photo of a {}."])
    x = clf.prepare_input(torch.rand(2, 1, 28, 28))
    with torch.no_grad():
        logits = clf(x)
    assert logits.shape == (2, 3) and clf.dynamic_linear
    for m in clf.modules():
        if hasattr(m, "running_var"):
            m.momentum = 1.0
    clf.train()
    with torch.no_grad():
        clf(x)
    clf.eval()
    e = explain(clf, x, colour=False)
    assert e.contribution_map.shape == (2, 1, 28, 28)
    err = (e.contribution_map.sum((-2, -1)) - e.target_outputs).abs() / e.contributions.abs().sum((-3, -2, -1))
    assert err.max() < 1e-4  # float32


def test_clip_attention_pool_position_embedding_is_explained():
    """The position embedding of CLIP's attention pool is part of W(x) x (carried by the tokens)."""
    visual = bcosify_clip_visual(_randomise(_tiny_clip_visual())).double()
    x = add_inverse(_images(3, 64))
    with explanation_mode(visual):
        x_ = x.clone().requires_grad_(True)
        out = visual(x_)[:, 0]
        (grad,) = torch.autograd.grad(out.sum(), x_)
    torch.testing.assert_close((grad * x).sum((1, 2, 3)), out.detach(), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- the pipeline's method
def test_init_records_how_to_rebuild_and_save_load_roundtrip(tmp_path):
    parent = create_model("std_cnn", **SHAPE)
    _randomise(parent).float()
    model = bcosification_model.init(parent, bcosification_model.BcosificationOptions(b=2.0))
    assert model.model_name == "bcosified" and model.model_kwargs["source_arch"] == "std_cnn"
    assert model.model_kwargs["source_kwargs"] == SHAPE
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = model.prepare_input(torch.rand(2, 1, 28, 28))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_torchvision_source_through_the_builder():
    model = create_model("bcosified", source_arch="torchvision.resnet18", num_classes=10, image_channels=1)
    assert model.image_channels == 1 and model.input_channels == 2
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet19'"):
        create_model("bcosified", source_arch="torchvision.resnet19")


def test_options_are_validated():
    from bcos_lib.core.config import ConfigError
    with pytest.raises(ConfigError, match="b_start"):
        bcosification_model.BcosificationOptions(b=2.0, b_start=3.0)
    with pytest.raises(ConfigError, match="max_pool"):
        bcosification_model.BcosificationOptions(max_pool="min")


def test_schedules_end_where_the_builder_starts():
    opts = bcosification_model.BcosificationOptions(b=2.0, b_start=1.0, keep_bias=True)
    info = lambda s: StepInfo(epoch=0, step=s, epochs=1, total_steps=10, loss_name="bce")  # noqa: E731
    assert bcosification_model.schedule(opts, info(0)) == pytest.approx((1.1, 0.9))
    assert bcosification_model.schedule(opts, info(4)) == pytest.approx((1.5, 0.5))
    assert bcosification_model.schedule(opts, info(9)) == (2.0, 0.0)
    assert bcosification_model.schedule(bcosification_model.BcosificationOptions(), info(0)) == (2.0, 0.0)
    assert bcosification_model.training(None, bcosification_model.BcosificationOptions(), None).step is None


def test_epochs_to_reach_and_speedup():
    scratch = pd.DataFrame({"epoch": [1, 2, 3, 4], "test_accuracy": [50.0, 70.0, 80.0, 84.0]})
    converted = pd.DataFrame({"epoch": [1, 2], "test_accuracy": [80.0, 88.0]})
    assert bcosification_present.epochs_to_reach(scratch, 84.0, 10.0) == 4.0
    assert bcosification_present.epochs_to_reach(converted, 84.0, 10.0) == pytest.approx(1.5)
    assert bcosification_present.epochs_to_reach(converted, 95.0, 10.0) is None
    s = bcosification_present.speedup(scratch, converted, 10, scratch_seconds_per_epoch=10.0, converted_seconds_per_epoch=12.0)
    assert s["ratio"] == pytest.approx(4 / 1.5) and s["seconds_ratio"] == pytest.approx(40 / 18)
    assert bcosification_present.speedup(scratch, converted.assign(test_accuracy=[30.0, 40.0]))["ratio"] is None
