"""The library pieces the tutorials (notebooks/tutorials/) stand on: the 2-D toy problem, the
tutorial figures and ``trained.load_or_train``.  The notebooks themselves run under nbval."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bcos_lib import toy, trained
from bcos_lib.core import pipeline
from bcos_lib import tutorial_figures as figures
from bcos_lib.explain import explain
from bcos_lib.core.registry import create_model


def test_angular_clusters_are_deterministic_and_lie_where_asked():
    x, y = toy.angular_clusters((20.0, 70.0), n_per_class=50, spread_deg=5.0, radius=(0.5, 1.0), seed=3)
    x2, y2 = toy.angular_clusters((20.0, 70.0), n_per_class=50, spread_deg=5.0, radius=(0.5, 1.0), seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (100, 2) and y.bincount().tolist() == [50, 50]
    r = x.norm(dim=1)
    assert r.min() >= 0.5 - 1e-6 and r.max() <= 1.0 + 1e-6
    angles = torch.rad2deg(torch.atan2(x[:, 1], x[:, 0]))
    assert abs(angles[y == 0].mean().item() - 20) < 3 and abs(angles[y == 1].mean().item() - 70) < 3
    with pytest.raises(ValueError, match="radius"):
        toy.angular_clusters(radius=(1.0, 0.5))


def test_alignment_is_the_mean_cosine_with_the_own_class():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    assert toy.alignment(w, x, y).tolist() == pytest.approx([1.0, 1 / math.sqrt(2)])


def test_unit_weights_are_what_the_unit_applies():
    bcos = toy.toy_classifier(2.0, seed=1)
    w = toy.unit_weights(bcos)
    assert torch.allclose(w.norm(dim=1), torch.ones(2))  # ŵ of a B-cos unit
    linear = toy.toy_classifier(None, seed=1)
    assert torch.equal(toy.unit_weights(linear), linear[0].weight.detach())
    # the same seed starts every B from the same directions
    assert torch.allclose(toy.unit_weights(toy.toy_classifier(5.0, seed=1)), w)


def test_alignment_grows_with_b_on_the_toy_problem():
    """The claim tutorial 02 makes (and asserts), at a smaller size."""
    x, y = toy.angular_clusters(n_per_class=60, seed=0)
    cos = {}
    for b in (None, 1.0, 5.0):
        model = toy.toy_classifier(b, seed=0)
        losses = toy.train_toy(model, x, y, steps=200)
        assert losses[-1] < losses[0]
        cos[b] = toy.alignment(toy.unit_weights(model), x, y).mean().item()
    assert cos[1.0] < cos[5.0] and cos[None] < cos[5.0] and cos[5.0] > 0.85, cos


def test_class_probability_grid_matches_the_model():
    model = toy.toy_classifier(2.0, seed=0)
    xx, yy, probs = toy.class_probability_grid(model, lim=1.0, n=5)
    assert xx.shape == yy.shape == (5, 5) and probs.shape == (2, 5, 5)
    point = torch.tensor([[xx[1, 3].item(), yy[1, 3].item()]])
    assert torch.allclose(probs[:, 1, 3], torch.sigmoid(model(point))[0].detach())


def test_tutorial_figures_draw_what_they_are_given():
    theta = torch.linspace(-180, 180, 37)
    fig = figures.plot_bcos_response(theta, {"B = 1": theta.deg2rad().cos(), "B = 2": theta.deg2rad().cos() ** 2})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # two curves and the zero line
    plt.close(fig)

    x, y = toy.angular_clusters(n_per_class=10)
    model = toy.toy_classifier(2.0)
    results = {"B-cos, B = 2": {"weights": toy.unit_weights(model), "alignment": torch.tensor([0.5, 0.6]),
                                "grid": toy.class_probability_grid(model, n=11)},
               "no grid": {"weights": toy.unit_weights(model), "alignment": torch.tensor([0.1, 0.2])}}
    fig = figures.plot_toy_alignment(x, y, results)
    assert len(fig.axes) == 3 and "0.50, 0.60" in fig.axes[0].get_title()
    plt.close(fig)

    net = create_model("bcos_cnn", channels=[4, 4], strides=[1, 2])
    images = torch.rand(1, 1, 12, 12)
    e = explain(net, net.prepare_input(images)).squeeze_targets()
    fig = figures.plot_dynamic_linear(images[0], e.weights[0], e.contributions[0], e.contribution_map[0], e.rgba[0],
                                      ["x", "1 − x"], title="t")
    assert len(fig.axes) == 1 + 2 * 2 + 1 + 1
    plt.close(fig)


def _saved_model(entry, path):
    model = create_model(entry.arch, **entry.kwargs)
    pipeline.save_model(model, path)
    return model


def test_load_or_train_prefers_the_pipeline_model_then_the_profile_one_then_trains(tmp_path, monkeypatch):
    from bcos_lib.stages import train as train_stage

    run = pipeline.setup("tiny", output_dir=str(tmp_path / "tiny-out"))
    project = tmp_path / "project"
    monkeypatch.setattr(trained, "project_root", lambda: project)
    entry = run.params.model("bcos_cnn")
    trained_keys = []

    def fake_train(run_, key, log=print):  # what the train stage leaves behind, without the training
        trained_keys.append(key)
        _saved_model(run_.params.model(key), pipeline.model_path(run_, key))

    monkeypatch.setattr(train_stage, "run", fake_train)
    messages: list[str] = []

    # nothing anywhere: trains with the run's settings and loads the result
    model, source = trained.load_or_train(run, "bcos_cnn", log=messages.append)
    assert trained_keys == ["bcos_cnn"] and "trained just now" in source and model.model_name == "bcos_cnn"
    # now the profile's model exists: loaded, not trained again
    _, source = trained.load_or_train(run, "bcos_cnn", log=messages.append)
    assert trained_keys == ["bcos_cnn"] and source.startswith("the tiny-profile model")
    # the pipeline's own model wins over both
    pipeline_model = _saved_model(entry, project / "models" / "bcos_cnn.pt")
    model, source = trained.load_or_train(run, "bcos_cnn", log=messages.append)
    assert source.startswith("the pipeline's model")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), pipeline_model.state_dict().values()))
    # a pipeline file for other settings is reported and skipped
    pipeline.save_model(create_model("bcos_cnn", channels=[4, 4], strides=[1, 2]), project / "models" / "bcos_cnn.pt")
    _, source = trained.load_or_train(run, "bcos_cnn", log=messages.append)
    assert source.startswith("the tiny-profile model")
    assert any("not using" in m and "params.yaml asks for" in m for m in messages), messages
