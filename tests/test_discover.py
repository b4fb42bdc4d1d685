"""DISCOVER: the stochastic LWTA layer, the LWTA models, the concept backends and soft-WPMI
dissection, the metrics, figures and report of the method (bcos_lib/methods/discover/)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from bcos_lib import create_model
from bcos_lib.methods.discover.concepts import (FASHION_MNIST_ATTRIBUTES, VISUAL_CONCEPTS, AnnotatedConcepts, ClipConcepts, ConceptError, load_attribute_table, visual_concepts, visual_measures)
from bcos_lib.core.config import ConfigError
from bcos_lib.core.data import FASHION_MNIST_CLASSES, ImageDataset
from bcos_lib.methods.discover.dissect import (activation_density, activation_layers, dissect, dissection_quality, last_hidden_layer, readout_weights, soft_wpmi)
from bcos_lib.methods.discover.layers import LWTA, local_winner_takes_all, lwta_kl
from bcos_lib.methods.discover.layers import gumbel_noise
from reference import lwta_kl_reference, lwta_reference, reference_forward
from bcos_lib.core.contract import EvalContext, ModelResult, StepInfo
from bcos_lib.methods.discover import metrics as discover_metrics
from bcos_lib.methods.discover import model as discover_model
from bcos_lib.methods.discover import present as discover_present
torch.set_num_threads(1)
SMALL = {"channels": [8, 8, 16, 16], "strides": [1, 2, 1, 2]}


# --- the LWTA layer --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, dim, u", [((3, 8, 5, 4), 1, 4), ((2, 6, 12), -1, 3), ((5, 16), -1, 8)])
def test_deterministic_lwta_matches_the_reference(shape, dim, u):
    torch.manual_seed(0)
    h = torch.randn(*shape, dtype=torch.float64)
    layer = LWTA(u, dim=dim).eval()
    out = layer(h)
    torch.testing.assert_close(out, lwta_reference(h, u, dim), rtol=0, atol=0)
    torch.testing.assert_close(out, reference_forward(layer, h), rtol=0, atol=0)
    blocks = out.movedim(dim % h.dim(), -1).unflatten(-1, (-1, u))
    assert ((blocks != 0).sum(-1) == 1).all(), "exactly one winner per block"
    # the winner keeps its own value: the largest of its block
    hb = h.movedim(dim % h.dim(), -1).unflatten(-1, (-1, u))
    torch.testing.assert_close(blocks.sum(-1), hb.amax(-1))


def test_sampled_winners_follow_the_softmax_of_the_block():
    """ξ ~ Categorical(softmax(h)) in training (Gumbel-softmax) and in the stochastic test mode."""
    h = torch.tensor([1.0, 0.2, -1.0, 0.5]).repeat(20000, 1)  # no 0: a winner is seen by its non-zero output
    expected = torch.softmax(h[0], 0)
    layer = LWTA(4, dim=-1)
    torch.manual_seed(0)
    for mode in ("train", "stochastic"):
        if mode == "train":
            layer.train()
        else:
            layer.eval()
            layer.test_mode = "stochastic"
        won = (layer(h) != 0).double().mean(0)
        assert (won - expected).abs().max() < 0.015, (mode, won, expected)
    layer.test_mode = "deterministic"
    assert torch.equal((layer(h) != 0).double().mean(0), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))


def test_straight_through_gradient_reaches_the_losers_in_training_only():
    torch.manual_seed(0)
    h = torch.randn(64, 8, dtype=torch.float64, requires_grad=True)
    layer = LWTA(4, dim=-1, temperature=1.67).train()
    out = layer(h)
    loser = (out == 0)
    out.sum().backward()
    assert h.grad[loser].abs().sum() > 0, "the relaxed softmax must pass gradient to the losing units"
    h.grad = None
    layer.eval()(h).sum().backward()
    assert torch.equal(h.grad, (layer(h) != 0).double()), "a deterministic winner: the gradient is the mask"


def test_straight_through_node_equals_the_gumbel_softmax_estimator():
    """The one-node forward/backward equals ξ − sg(soft) + soft built from autograd ops, for the same noise."""
    torch.manual_seed(0)
    h = torch.randn(4, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    g, w = gumbel_noise(h), torch.randn(4, 16, 3, 3, dtype=torch.float64)
    (local_winner_takes_all(h, 4, 1, sample=True, temperature=0.7, noise=g) * w).sum().backward()
    fast = h.grad.clone()
    h.grad = None
    b, gb = h.unflatten(1, (4, 4)), g.unflatten(1, (4, 4))
    soft = ((b + gb) / 0.7).softmax(2)
    hard = F.one_hot((b + gb).argmax(2), 4).movedim(-1, 2).double()
    y = (b * (hard - soft.detach() + soft)).flatten(1, 2)
    (y * w).sum().backward()
    torch.testing.assert_close(local_winner_takes_all(h, 4, 1, sample=True, temperature=0.7, noise=g), y)
    torch.testing.assert_close(fast, h.grad)
    torch.testing.assert_close(local_winner_takes_all(h, 4, 1, sample=False), lwta_reference(h.detach(), 4, 1))
    torch.testing.assert_close(local_winner_takes_all(h, 4, 1, sample=True, noise=g, straight_through=False),
                               lwta_reference(h.detach(), 4, 1, noise=g))


def test_ties_go_to_the_first_unit_as_argmax():
    h = torch.tensor([[1.0, 1.0, 0.0, 0.5, 2.0, 2.0, 2.0, 2.0]])
    torch.testing.assert_close(LWTA(4, dim=-1).eval()(h), torch.tensor([[1.0, 0, 0, 0, 2.0, 0, 0, 0]]))


def test_one_competitor_is_the_usual_activation():
    x = torch.randn(4, 6, 3, 3)
    torch.testing.assert_close(LWTA(1, fallback="relu")(x), F.relu(x))
    torch.testing.assert_close(LWTA(1, dim=-1, fallback="gelu")(x), F.gelu(x))


def test_kl_term_matches_the_reference_and_is_off_by_default():
    torch.manual_seed(1)
    h = torch.randn(3, 12, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(lwta_kl(h, 4), lwta_kl_reference(h, 4))
    assert float(lwta_kl(torch.zeros(2, 8), 4, dim=-1)) == pytest.approx(0.0, abs=1e-7)  # uniform posterior
    layer = LWTA(4).train()
    layer(h)
    assert layer.last_kl is None, "the KL term is off unless asked for (as in the public code)"
    layer.track_kl = True
    layer(h)
    torch.testing.assert_close(layer.last_kl, lwta_kl_reference(h, 4))


def test_lwta_errors_name_the_fix():
    with pytest.raises(ValueError, match="competitors"):
        LWTA(3, width=16)
    with pytest.raises(ValueError, match="blocks of U = 3"):
        LWTA(3)(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match="fallback"):
        LWTA(2, fallback="tanh")
    with pytest.raises(ValueError, match="temperature"):
        LWTA(2, temperature=0)
    with pytest.raises(ValueError, match="test_mode"):
        LWTA(2).test_mode = "sampled"
    with pytest.raises(ValueError, match=r"competitors=3 does not divide the channels \[8, 8, 16, 16\]"):
        create_model("lwta_cnn", competitors=3, **SMALL)
    with pytest.raises(ValueError, match="MLP width"):
        create_model("lwta_vit", competitors=5)


# --- the models ------------------------------------------------------------------------------------------

def test_lwta_cnn_with_one_competitor_is_the_standard_cnn():
    torch.manual_seed(0)
    std = create_model("std_cnn", **SMALL).eval()
    twin = create_model("lwta_cnn", competitors=1, **SMALL).eval()
    twin.load_state_dict(std.state_dict())
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), std(x))
    lwta = create_model("lwta_cnn", competitors=4, **SMALL)
    assert [type(m) for m in lwta.features] == [type(m) for m in twin.features]
    assert all(m.competitors == 4 for m in discover_model.lwta_layers(lwta)) and len(discover_model.lwta_layers(lwta)) == 4


def test_norm_scale_sets_the_scale_of_the_competing_pre_activations():
    cnn = create_model("lwta_cnn", competitors=4, norm_scale=5.0, **SMALL)
    norms = [m for m in cnn.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 4 and all(torch.equal(n.weight, torch.full_like(n.weight, 5.0)) for n in norms)
    vit = create_model("lwta_vit", depth=2, norm_scale=3.0)
    assert all(torch.equal(b.norm2.weight, torch.full_like(b.norm2.weight, 3.0)) for b in vit.blocks)
    assert torch.equal(vit.blocks[0].norm1.weight, torch.ones(64))
    with pytest.raises(ValueError, match="norm_scale must be > 0"):
        create_model("lwta_cnn", norm_scale=0.0)


def test_lwta_vit_uses_lwta_in_its_mlps_and_an_additive_position_embedding():
    torch.manual_seed(0)
    vit = create_model("lwta_vit", competitors=8, depth=2).eval()
    assert activation_layers(vit) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert last_hidden_layer(vit) == "blocks.1.mlp.act"
    table = activation_density(vit, torch.rand(4, 1, 28, 28))
    assert table["density"].tolist() == [1 / 8, 1 / 8] and table["units"].tolist() == [128, 128]
    # the position embedding is added whatever the patch contains (a black image gets it too)
    tokens = torch.zeros(1, 64, 7, 7)
    torch.testing.assert_close(vit.pos_embed(tokens, torch.zeros(1, 1, 28, 28)), vit.pos_embed.weight)
    gelu = create_model("lwta_vit", competitors=1, depth=2).eval()
    assert gelu.blocks[0].mlp.act.fallback == "gelu" and not discover_model.lwta_layers(gelu)
    assert not vit.explainable and vit.default_loss == "ce"


def test_density_of_an_lwta_cnn_is_one_over_u():
    torch.manual_seed(0)
    model = create_model("lwta_cnn", competitors=4, **SMALL)
    table = activation_density(model, torch.rand(6, 1, 28, 28), batch_size=4)
    assert table["density"].tolist() == [0.25] * 4 and table["competitors"].tolist() == [4] * 4
    relu = activation_density(create_model("std_cnn", **SMALL), torch.rand(6, 1, 28, 28))
    assert len(relu) == 4 and (relu["density"] > 0.25).all() and (relu["density"] < 1).all()


def test_readout_weights_are_the_effect_of_a_neuron_on_the_logits():
    """ViT: shifting one MLP neuron of the last block at every token by ε moves the logits by
    ε·W[:, j] (to first order, on average over the images); CNN: the classifier's weights, which
    the mean-gradient read-out reproduces."""
    torch.manual_seed(0)
    vit = create_model("lwta_vit", competitors=1, depth=2).double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    w = readout_weights(vit, "blocks.1.mlp.act", x)
    assert w.shape == (10, 128)
    j, eps = 5, 1e-6
    hook = vit.blocks[1].mlp.act.register_forward_hook(lambda m, i, o: o + eps * F.one_hot(torch.tensor(j), 128))
    with torch.no_grad():
        moved = vit(x)
        hook.remove()
        moved = (moved - vit(x)).mean(0) / eps
    torch.testing.assert_close(moved, w[:, j].double(), rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="pass probe images"):
        readout_weights(vit, "blocks.1.mlp.act")
    cnn = create_model("std_cnn", **SMALL).eval()
    layer = last_hidden_layer(cnn)
    exact = readout_weights(cnn, layer)
    assert torch.equal(exact, cnn.classifier.weight.detach().flatten(1))
    wrapped = torch.nn.Sequential(cnn)   # not a ConvNet: the read-out is the mean gradient, which must agree
    torch.testing.assert_close(readout_weights(wrapped, "0." + layer, torch.rand(4, 1, 28, 28)), exact)


# --- soft-WPMI ---------------------------------------------------------------------------------------------

def _soft_wpmi_loops(P, A, top_k, a, lam, p_start=0.998, p_end=0.97, min_prob=1e-7):
    """soft-WPMI written out neuron by neuron, concept by concept (float64)."""
    n_img, n_con = P.shape
    log_p = torch.zeros(A.shape[1], n_con, dtype=torch.float64)
    for j in range(A.shape[1]):
        order = sorted(range(n_img), key=lambda i: -float(A[i, j]))[:top_k]
        for c in range(n_con):
            total = 0.0
            for r, i in enumerate(order):
                e = [math.exp(a * float(P[i, cc])) for cc in range(n_con)]
                p_ci = e[c] / sum(e)
                p_r = p_start - r / top_k * (p_start - p_end)
                total += math.log(1 + p_r * (p_ci - 1) + min_prob)
            log_p[j, c] = total
    prior = torch.tensor([math.log(sum(math.exp(float(log_p[j, c])) for j in range(A.shape[1])) / A.shape[1])
                          for c in range(n_con)], dtype=torch.float64)
    return log_p - lam * prior


def test_soft_wpmi_matches_the_equation():
    torch.manual_seed(0)
    P, A = torch.rand(30, 5, dtype=torch.float64), torch.randn(30, 4, dtype=torch.float64)
    for top_k, a, lam in [(7, 10.0, 1.0), (30, 3.0, 0.5)]:
        torch.testing.assert_close(soft_wpmi(P, A, top_k=top_k, a=a, lam=lam), _soft_wpmi_loops(P, A, top_k, a, lam))


def test_dissection_finds_planted_concepts():
    """Neurons that fire on one class get a concept of that class; soft-WPMI (λ = 1) prefers the
    concepts specific to a neuron, the likelihood alone (λ = 0) the concept all its images share."""
    torch.manual_seed(0)
    n = 400
    labels = torch.arange(n) % 10
    backend = AnnotatedConcepts(FASHION_MNIST_CLASSES, visual=False)
    P = backend.similarity(torch.zeros(n, 1, 28, 28), labels)
    footwear = P[:, backend.concepts.index("footwear")]
    acts = torch.cat([F.one_hot(labels, 10).float(), (footwear + 0.01 * torch.rand(n))[:, None]], 1)
    got = [backend.concepts[int(i)] for i in soft_wpmi(P, acts, top_k=30).argmax(1)]
    for k in range(10):
        assert got[k] in backend.class_concepts(k) and got[k] != "footwear", (k, got[k])
    assert got[7] == "Sneaker" and got[1] == "Trouser"     # ties between a class and its unique attribute: the class
    only_likelihood = [backend.concepts[int(i)] for i in soft_wpmi(P, acts, top_k=30, lam=0.0).argmax(1)]
    assert only_likelihood[10] == "footwear"


# --- concept backends -------------------------------------------------------------------------------------

def test_attribute_table_is_consistent_with_the_classes():
    classes = set(FASHION_MNIST_CLASSES)
    for concept, members in FASHION_MNIST_ATTRIBUTES.items():
        assert set(members) <= classes and concept not in classes
    backend = AnnotatedConcepts(FASHION_MNIST_CLASSES)
    for k, name in enumerate(FASHION_MNIST_CLASSES):
        assert len(backend.class_concepts(k)) >= 3, name    # its name and at least two attributes
    assert backend.class_concepts(9) == {"Ankle boot", "footwear", "has a heel", "covers the ankle"}
    P = backend.similarity(torch.rand(10, 1, 28, 28), torch.arange(10))
    assert P.shape == (10, 10 + len(FASHION_MNIST_ATTRIBUTES) + len(VISUAL_CONCEPTS))
    assert torch.equal(P[:, :10], torch.eye(10))
    sandal = P[5, 10:10 + len(FASHION_MNIST_ATTRIBUTES)]
    assert {c for c, v in zip(FASHION_MNIST_ATTRIBUTES, sandal) if v} == {"footwear", "has a heel", "straps"}


def _shape(kind: str) -> torch.Tensor:
    x = torch.zeros(1, 28, 28)
    if kind == "wide":
        x[:, 11:17, 2:26] = 0.5
    elif kind == "tall":
        x[:, 2:26, 11:17] = 0.5
    elif kind == "bright":
        x[:, 8:20, 8:20] = 1.0
    elif kind == "dark":
        x[:, 8:20, 8:20] = 0.2
    elif kind == "striped":
        x[:, 8:20, 8:20] = 0.3
        x[:, 8:20:2, 8:20] = 0.9
    elif kind == "lopsided":
        x[:, 4:24, 2:12] = 0.6
    return x


def test_visual_measures_and_concepts():
    kinds = ["wide", "tall", "bright", "dark", "striped", "lopsided"]
    images = torch.stack([_shape(k) for k in kinds])
    m = visual_measures(images)
    assert m["aspect"][0] > 1 and m["aspect"][1] < -1                                # log(24/6) = ±1.39
    assert m["intensity"][2] == 1.0 and m["intensity"][3] == pytest.approx(0.2)
    assert m["texture"][4] == pytest.approx(0.6 * 11 * 12 / (2 * 11 * 12))       # 0.6 steps between stripes
    assert m["texture"][2] == 0 and m["texture"][3] == 0
    assert m["symmetry"][2] == pytest.approx(1.0) and m["symmetry"][5] == 0           # no overlap with its mirror
    assert m["area"][0] == pytest.approx(144 / 784)
    empty = visual_measures(torch.zeros(1, 1, 28, 28))
    assert empty["area"] == 0 and empty["symmetry"] == 1 and empty["aspect"] == 0
    names = [v[0] for v in VISUAL_CONCEPTS]
    v = visual_concepts(images, quantile=1 / 6)                      # one image per tail
    shows = {kinds[i]: {names[c] for c in range(len(names)) if v[i, c]} for i in range(len(kinds))}
    assert "wide" in shows["wide"] and "tall" in shows["tall"] and "bright" in shows["bright"]
    assert "textured" in shows["striped"] and "symmetric" not in shows["lopsided"]


def test_custom_concept_table_and_its_errors(tmp_path):
    f = tmp_path / "concepts.yaml"
    f.write_text("has a hood: [Pullover, Coat]\nmetal buckle: [Bag, Sandal]\n")
    table = load_attribute_table(f, FASHION_MNIST_CLASSES)
    assert table == {"has a hood": ("Pullover", "Coat"), "metal buckle": ("Bag", "Sandal")}
    assert AnnotatedConcepts(FASHION_MNIST_CLASSES, table).class_concepts(8) == {"Bag", "metal buckle"}
    f.write_text("has a hood: [Hoodie]\n")
    with pytest.raises(ConceptError, match=r"unknown class\(es\) \['Hoodie'\]"):
        load_attribute_table(f, FASHION_MNIST_CLASSES)
    with pytest.raises(ConceptError, match="evaluate.options.dissection.concepts: the concept file .* does not exist"):
        load_attribute_table(tmp_path / "missing.yaml", FASHION_MNIST_CLASSES)


def test_dissection_options_reject_bad_input(tmp_path):
    with pytest.raises(ConfigError, match=r"dissection.backend: unknown backend 'clipp'.*annotated, clip"):
        discover_metrics.DissectionOptions(backend="clipp")
    with pytest.raises(ConfigError, match="dissection.concepts: the concept file .* does not exist"):
        discover_metrics.DissectionOptions(concepts=str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="dissection.clip_weights: .*nothing is downloaded"):
        discover_metrics.DissectionOptions(backend="clip")
    with pytest.raises(ConfigError, match="options.temperature must be > 0"):
        discover_model.DiscoverOptions(temperature=0.0)
    with pytest.raises(ConceptError, match="clip_weights: .* does not exist. CLIP weights are never downloaded"):
        ClipConcepts(["shoe"], FASHION_MNIST_CLASSES, "ViT-B-16", weights=tmp_path / "none.bin")


TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_clip_backend_with_a_random_tiny_model_from_disk(tmp_path):
    """The user's path: an open_clip architecture + a weights file on disk (here random weights)."""
    import open_clip

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "tiny-test-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip")
    torch.save(model.state_dict(), tmp_path / "tiny.bin")
    words = ["shoe", "shirt", "bag"]
    backend = ClipConcepts(words, FASHION_MNIST_CLASSES, "tiny-test-clip", weights=tmp_path / "tiny.bin")
    images = torch.rand(5, 1, 28, 28)
    P = backend.similarity(images)
    assert P.shape == (5, 3) and (P.abs() <= 1 + 1e-5).all()
    with torch.no_grad():   # the same numbers straight from the model we saved
        x = F.interpolate(images.expand(-1, 3, -1, -1), size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
        x = (x - backend.mean) / backend.std
        img = F.normalize(model.eval().encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.get_tokenizer("tiny-test-clip")(words)), dim=-1)
    torch.testing.assert_close(P, img @ txt.T, rtol=1e-4, atol=1e-5)
    assert backend.class_concepts(8) == set()        # "Bag" is not in this concept list
    d = dissect(create_model("lwta_cnn", competitors=4, **SMALL), images, torch.arange(5), backend, top_k=3)
    assert len(d.labels) == 16 and set(d.labels) <= set(words)


# --- the metrics, figures and report through the method contract --------------------------------------------

def _dataset(n: int = 60, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for i, y in enumerate(labels):  # a class-dependent bright bar, so that the classes differ
        images[i, 0, 2 + 2 * int(y):4 + 2 * int(y), 4:24] = 1.0
    return ImageDataset(images, labels, FASHION_MNIST_CLASSES)


def _ctx(model, key, options, ds):
    return EvalContext(key=key, model=model, entry=None, test_data=ds, cfg=None, options=options, device="cpu",
                       seed=0, log=lambda s: None, load_train_data=lambda: ds)


def test_metrics_figures_and_report():
    import matplotlib
    matplotlib.use("Agg")
    from bcos_lib.core.config import ModelEntry
    from bcos_lib.core.registry import get_metric

    ds = _dataset()
    torch.manual_seed(0)
    results = {}
    for key, arch, kw in [("lwta", "lwta_cnn", {"competitors": 4}), ("twin", "std_cnn", {})]:
        model = create_model(arch, **kw, **SMALL).eval()
        dens = get_metric("activation_density").fn(_ctx(model, key, discover_metrics.DensityOptions(images=40), ds))
        dis = get_metric("dissection").fn(_ctx(model, key, discover_metrics.DissectionOptions(probe_images=0, top_k=10), ds))
        assert dens.summary["n_layers"] == 4 and 0 <= dens.summary["accuracy"] <= 100
        assert dis.summary["n_neurons"] == 16 and dis.summary["layer"] == "features.11"
        assert set(dis.tables["dissection"]["label"]) <= set(AnnotatedConcepts(FASHION_MNIST_CLASSES).concepts)
        results[key] = ModelResult(key=key, entry=ModelEntry(arch=arch), method="x", label=key,
                                   train={"test_accuracy": 50.0}, explain=None,
                                   evaluate={"activation_density": dens.summary, "dissection": dis.summary},
                                   history=None, tables={**dens.tables, **dis.tables}, explanations=None)
    assert results["lwta"].metric("activation_density")["mean_density"] == 0.25
    assert "accuracy_stochastic" in results["lwta"].metric("activation_density")
    assert "accuracy_stochastic" not in results["twin"].metric("activation_density")
    assert get_metric("dissection").fn(_ctx(create_model("bcos_cnn", **SMALL), "b", None, ds)) is None
    text = discover_present.report(results)
    assert "| `lwta` |" in text and "| `twin` |" in text and "25.0 %" in text and "≈ 4 %" in text
    fig = discover_present.plot_density({r.label: r.tables["density"] for r in results.values()}, 1 / 24)
    assert len(fig.axes) == 1
    model = create_model("lwta_cnn", competitors=4, **SMALL).eval()
    fig = discover_present.plot_winning_neurons(model, ds.images[:2], ds.labels[:2], ds.classes, results["lwta"].tables["dissection"],
                                 "features.11", n_neurons=2)
    assert len([a for a in fig.axes if a.get_label() != "<colorbar>"]) == 6   # and its colour bar
    win = discover_present.winning_neurons(model, ds.images[:2], "features.11", 2)
    assert (win["contribution"][:, 0] >= win["contribution"][:, 1]).all()


def test_dissection_quality_counts_labels_of_the_supported_class():
    from bcos_lib.methods.discover.dissect import Dissection
    backend = AnnotatedConcepts(FASHION_MNIST_CLASSES)
    d = Dissection(layer="l", concepts=backend.concepts, kinds=backend.kinds, scores=torch.zeros(3, 1),
                   labels=["footwear", "Bag", "bright"], label_scores=torch.tensor([1.0, 2.0, 3.0]),
                   activations=torch.zeros(5, 3))
    w = torch.zeros(10, 3)
    w[7, 0] = w[1, 1] = w[3, 2] = 1.0              # supports Sneaker, Trouser, Dress
    summary, table = dissection_quality(d, w, backend.class_concepts, FASHION_MNIST_CLASSES)
    assert summary["share_class_concept"] == pytest.approx(1 / 3) and summary["mean_soft_wpmi"] == 2.0
    assert table["label_fits_class"].tolist() == [True, False, False]
    assert table["supports"].tolist() == ["Sneaker", "Trouser", "Dress"]


def test_training_hook_sets_the_temperature_and_adds_the_kl_term():
    model = create_model("lwta_cnn", competitors=4, **SMALL).train()
    hooks = discover_model.training(model, discover_model.DiscoverOptions(temperature=0.5), None)
    assert hooks.step is None and all(m.temperature == 0.5 and not m.track_kl for m in discover_model.lwta_layers(model))
    hooks = discover_model.training(model, discover_model.DiscoverOptions(kl_weight=0.1), None)
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    info = StepInfo(epoch=0, step=0, epochs=1, total_steps=1, loss_name="ce")
    torch.manual_seed(0)
    out = hooks.step(model, x, y, info)
    kl = sum(float(m.last_kl.detach()) for m in discover_model.lwta_layers(model))
    assert out.terms["kl"] == pytest.approx(kl) and kl > 0
    torch.manual_seed(0)
    plain = F.cross_entropy(model(x), y)
    assert float(out.loss) == pytest.approx(float(plain) + 0.1 * kl, rel=1e-6)
