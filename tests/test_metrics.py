"""The grid pointing game and pixel deletion (bcos_lib.metrics; CoDA Nets §5.1, B-cos v1 §5.2).

Tiny models trained for a few seconds on "spots" (class c = a bright 3×3 square at
position c on a 12×12 noise image) give confident pools with every class, so the whole
protocol runs as the evaluate stage runs it.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

import torch

from bcos_lib import create_model
from bcos_lib.core.config import EvaluateConfig, ModelEntry
from bcos_lib.core.data import ImageDataset
from bcos_lib.core.contract import EvalContext
from bcos_lib.metrics import (EvaluationError, class_probabilities, confident_pool, deletion_auc, deletion_metric, grid_pointing_game, localisation_metric, localisation_scores, make_grids, pixel_deletion, score_grids)
from bcos_lib.train import loss_fn

torch.set_num_threads(1)
SMALL = dict(channels=(8, 8, 16, 16), strides=(1, 2, 1, 2))


def spots(n: int, seed: int) -> ImageDataset:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = 0.3 * torch.rand(n, 1, 12, 12, generator=gen)
    for i, c in enumerate(labels.tolist()):
        r, col = 4 * (c // 4), 3 * (c % 4)
        images[i, 0, r:r + 3, col:col + 3] = 1.0
    return ImageDataset(images, labels, tuple(f"spot {c}" for c in range(10)))


def trained(arch: str, steps: int = 100) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, **SMALL)
    data = spots(640, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(data), (64,), generator=gen)
        loss = loss_fn(model.default_loss, model(model.prepare_input(data.images[idx])), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def test_ds() -> ImageDataset:
    return spots(200, seed=1)


@pytest.fixture(scope="module")
def bcos_model() -> torch.nn.Module:
    return trained("bcos_cnn")


@pytest.fixture(scope="module")
def std_model() -> torch.nn.Module:
    return trained("std_cnn")


# ----------------------------------------------------------------------------- localisation_scores
@pytest.mark.parametrize("n", [2, 3])
def test_oracle_scores_one_and_uniform_scores_one_over_n_squared(n):
    g, h = 2, 4
    cells = n * n
    oracle = torch.zeros(g, cells, n * h, n * h)
    for t in range(cells):
        r, c = divmod(t, n)
        oracle[:, t, r * h:(r + 1) * h, c * h:(c + 1) * h] = torch.rand(g, h, h) + 0.1
    assert torch.allclose(localisation_scores(oracle, n), torch.ones(g, cells))
    uniform = torch.ones(g, cells, n * h, n * h)
    for smooth in (1, 3):
        assert torch.allclose(localisation_scores(uniform, n, smooth), torch.full((g, cells), 1 / cells))


def test_negative_mass_is_ignored_and_no_positive_mass_scores_zero():
    maps = torch.zeros(1, 4, 8, 8)
    maps[0, 0, :4, :4] = 1.0
    maps[0, 0, 4:, 4:] = -5.0                         # negative evidence elsewhere does not count
    maps[0, 1] = -1.0                                  # no positive mass at all
    scores = localisation_scores(maps, 2)
    assert scores[0, 0] == 1.0 and scores[0, 1] == 0.0 and scores[0, 2] == 0.0


def test_explicit_cells_and_bad_sizes():
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 2:, 2:] = 1.0                           # all mass in cell 3
    assert localisation_scores(maps, 2, cells=torch.tensor([[3]]))[0, 0] == 1.0
    assert localisation_scores(maps, 2)[0, 0] == 0.0   # default: map t belongs to cell t = 0
    with pytest.raises(ValueError, match="cells"):
        localisation_scores(torch.zeros(1, 4, 5, 5), 2)


# ----------------------------------------------------------------------------- pool and grids
def test_class_probabilities_follow_the_training_loss(bcos_model, std_model):
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(class_probabilities(bcos_model, logits), torch.sigmoid(logits))
    assert torch.allclose(class_probabilities(std_model, logits), torch.softmax(logits, 1))


def test_confident_pool_is_correct_confident_and_sorted(bcos_model, test_ds):
    pool = confident_pool(bcos_model, test_ds, min_confidence=0.5, batch_size=37)
    assert sorted(pool) == list(range(10))
    with torch.no_grad():
        probs = torch.sigmoid(bcos_model(bcos_model.prepare_input(test_ds.images)))
    for c, idx in pool.items():
        assert len(idx) > 0
        assert (test_ds.labels[idx] == c).all()
        assert (probs[idx].argmax(1) == c).all()
        conf = probs[idx, c]
        assert (conf > 0.5).all()
        assert (conf[:-1] >= conf[1:]).all()           # most confident first
    stricter = confident_pool(bcos_model, test_ds, min_confidence=0.999999)
    assert sum(map(len, stricter.values())) < sum(map(len, pool.values()))


def test_shared_logits_run_the_model_once_per_image_set(bcos_model, test_ds):
    """Inside shared_logits() the pool and the per-image predictions read one pass over the test
    set, and give what their own passes give; outside it every call runs the model again."""
    from bcos_lib.metrics import shared_logits, test_predictions
    calls = []
    handle = bcos_model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        alone = confident_pool(bcos_model, test_ds)
        alone_preds = test_predictions(bcos_model, test_ds)
        n_alone = sum(calls)
        calls.clear()
        with shared_logits():
            pool = confident_pool(bcos_model, test_ds, batch_size=37)
            preds = test_predictions(bcos_model, test_ds)
            again = confident_pool(bcos_model, test_ds)
        n_shared = sum(calls)
        calls.clear()
        confident_pool(bcos_model, test_ds)
        after = sum(calls)
    finally:
        handle.remove()
    assert n_shared == len(test_ds)                     # images through the model: one pass
    assert n_alone == 2 * len(test_ds) and after == len(test_ds)
    assert (preds["predicted"] == alone_preds["predicted"]).all()
    for c in alone:
        assert torch.equal(pool[c], alone[c]) and torch.equal(again[c], alone[c])


def test_grids_have_distinct_classes_and_tile_pool_images(bcos_model, test_ds):
    pool = confident_pool(bcos_model, test_ds)
    grids, classes = make_grids(test_ds, pool, n=3, n_grids=20, seed=0)
    assert grids.shape == (20, 1, 36, 36) and classes.shape == (20, 9)
    for g in range(20):
        assert len(set(classes[g].tolist())) == 9
        for k in range(9):
            r, c = divmod(k, 3)
            cell = grids[g, :, r * 12:(r + 1) * 12, c * 12:(c + 1) * 12]
            candidates = test_ds.images[pool[int(classes[g, k])]]
            assert (candidates == cell).flatten(1).all(1).any(), "each cell is a pool image of its class"


def test_grids_are_reproducible_per_seed_and_prefix_stable(bcos_model, test_ds):
    pool = confident_pool(bcos_model, test_ds)
    g1, c1 = make_grids(test_ds, pool, n=2, n_grids=10, seed=3)
    g2, c2 = make_grids(test_ds, pool, n=2, n_grids=10, seed=3)
    g3, c3 = make_grids(test_ds, pool, n=2, n_grids=10, seed=4)
    assert torch.equal(g1, g2) and torch.equal(c1, c2)
    assert not torch.equal(c1, c3)
    g4, c4 = make_grids(test_ds, pool, n=2, n_grids=4, seed=3)
    assert torch.equal(g4, g1[:4]) and torch.equal(c4, c1[:4])


def test_empty_pool_and_too_few_classes_raise_errors_that_say_what_to_do(test_ds):
    empty = {c: torch.zeros(0, dtype=torch.long) for c in range(10)}
    with pytest.raises(EvaluationError, match="train the model longer.*min_confidence"):
        make_grids(test_ds, empty, n=3, n_grids=2)
    few = {c: (torch.nonzero(test_ds.labels == c).flatten() if c < 3 else torch.zeros(0, dtype=torch.long))
           for c in range(10)}
    with pytest.raises(EvaluationError, match="only 3 class.*smaller evaluate.grid_size"):
        make_grids(test_ds, few, n=2, n_grids=2)
    with pytest.raises(EvaluationError, match="10"):
        make_grids(test_ds, few, n=4, n_grids=2)


def test_untrained_model_gives_the_clear_error(test_ds):
    torch.manual_seed(0)
    model = create_model("std_cnn", **SMALL).eval()
    with pytest.raises(EvaluationError, match="train the model longer"):
        grid_pointing_game(model, test_ds, "ixg", n=3, n_grids=2, min_confidence=0.99)


# ----------------------------------------------------------------------------- the pointing game
def test_pointing_game_rows_and_reproducibility(bcos_model, test_ds):
    a = grid_pointing_game(bcos_model, test_ds, "own", n=2, n_grids=6, seed=0, batch_size=4)
    b = grid_pointing_game(bcos_model, test_ds, "own", n=2, n_grids=6, seed=0, batch_size=5)
    assert list(a.columns) == ["grid", "cell", "target", "score", "score_unsmoothed", "attribution"]
    assert len(a) == 24 and (a["attribution"] == "own").all()
    assert a["score"].between(0, 1).all()
    pd.testing.assert_frame_equal(a, b, atol=1e-6, rtol=0)        # the batch size does not matter
    c = grid_pointing_game(bcos_model, test_ds, "ixg", n=2, n_grids=6, seed=0)
    assert (c["target"].to_numpy() == a["target"].to_numpy()).all()  # same grids for every attribution
    assert a["score"].mean() > 0.5                                   # a trained B-cos model localises


def test_score_grids_own_matches_explain(bcos_model, test_ds):
    from bcos_lib.explain import explain

    pool = confident_pool(bcos_model, test_ds)
    grids, classes = make_grids(test_ds, pool, n=2, n_grids=3, seed=0)
    df = score_grids(bcos_model, grids, classes, "own", n=2, batch_size=2)
    maps = explain(bcos_model, bcos_model.prepare_input(grids), classes, colour=False).contribution_map
    expected = localisation_scores(maps, 2).reshape(-1)
    assert torch.allclose(torch.tensor(df["score"].to_numpy()).float(), expected, atol=1e-6)
    assert torch.allclose(torch.tensor(df["score_unsmoothed"].to_numpy()).float(), expected, atol=1e-6)
    # with smoothing, `score` is the smoothed map's score and `score_unsmoothed` still the raw one's
    sm = score_grids(bcos_model, grids, classes, "own", n=2, smooth=5, batch_size=2)
    smoothed = localisation_scores(maps, 2, smooth=5).reshape(-1)
    assert torch.allclose(torch.tensor(sm["score"].to_numpy()).float(), smoothed, atol=1e-6)
    assert torch.allclose(torch.tensor(sm["score_unsmoothed"].to_numpy()).float(), expected, atol=1e-6)
    assert not torch.allclose(smoothed, expected, atol=1e-3)


# ----------------------------------------------------------------------------- pixel deletion
@pytest.mark.parametrize("attribution", ["own", "ixg", "random"])
def test_deletion_curve_starts_at_the_unperturbed_score(bcos_model, test_ds, attribution):
    df = pixel_deletion(bcos_model, test_ds, attribution, n_images=12, steps=4, seed=0)
    assert list(df["fraction"]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    idx = torch.randperm(len(test_ds), generator=torch.Generator().manual_seed(0))[:12]
    with torch.no_grad():
        probs = torch.sigmoid(bcos_model(bcos_model.prepare_input(test_ds.images[idx])))
        blank = torch.sigmoid(bcos_model(bcos_model.prepare_input(torch.zeros_like(test_ds.images[idx]))))
    predicted = probs.argmax(1)
    assert df["score"].iloc[0] == pytest.approx(probs.max(1).values.mean().item(), abs=1e-6)
    assert df["score"].iloc[-1] == pytest.approx(blank.gather(1, predicted[:, None]).mean().item(), abs=1e-6)


def test_deleting_the_most_important_pixels_hurts_more(bcos_model, test_ds):
    most = pixel_deletion(bcos_model, test_ds, "own", n_images=20, steps=6, order="most")
    least = pixel_deletion(bcos_model, test_ds, "own", n_images=20, steps=6, order="least")
    assert deletion_auc(most) < deletion_auc(least)


def test_deletion_auc_is_the_trapezoid_area():
    df = pd.DataFrame({"attribution": "x", "order": "most", "fraction": [0.0, 0.5, 1.0], "score": [1.0, 0.5, 0.0]})
    assert deletion_auc(df) == pytest.approx(0.5)
    both = pd.concat([df, df.assign(attribution="y")])
    with pytest.raises(ValueError, match="one curve"):
        deletion_auc(both)


# ----------------------------------------------------------------------------- the evaluate stage
TINY = EvaluateConfig(grid_size=2, n_grids=4, posthoc_n_grids=2, min_confidence=0.5, smooth=1, batch_size=3,
                      ig_steps=3, occlusion_window=4, occlusion_stride=4, deletion_images=6, deletion_steps=3,
                      attributions=["own", "ixg", "ig", "gradcam", "occlusion", "deeplift"],
                      deletion_attributions=["own", "ixg", "random"])


def evaluate_model(model, test_ds, cfg, log=print):
    """The two shared metrics as the evaluate stage runs them: (scores, curves, {metric: summary})."""
    ctx = EvalContext(key="m", model=model, entry=ModelEntry(arch="x"), test_data=test_ds, cfg=cfg, options=None,
                      device="cpu", seed=0, log=log, load_train_data=lambda: test_ds)
    loc, dele = localisation_metric(ctx), deletion_metric(ctx)
    return loc.tables["localisation"], dele.tables["deletion"], {"localisation": loc.summary, "deletion": dele.summary}


@pytest.mark.parametrize("arch", ["bcos", "std"])
def test_evaluate_model_returns_the_documented_structure(arch, bcos_model, std_model, test_ds):
    model = bcos_model if arch == "bcos" else std_model
    lines: list[str] = []
    scores, deletion, summary = evaluate_model(model, test_ds, TINY, log=lines.append)
    expected_attributions = TINY.attributions if arch == "bcos" else [m for m in TINY.attributions if m != "own"]
    assert list(dict.fromkeys(scores["attribution"])) == expected_attributions
    assert list(scores.columns) == ["grid", "cell", "target", "score", "score_unsmoothed", "attribution"]
    per_attribution = scores.groupby("attribution").size()
    for m in expected_attributions:
        assert per_attribution[m] == (4 if m == "own" else 2) * 4  # own: n_grids, post-hoc: posthoc_n_grids
    assert set(summary["localisation"]) == ({"grid", "attributions", "skipped", "margin"} if arch == "bcos"
                                            else {"grid", "attributions", "skipped"})
    assert set(summary["deletion"]) == {"settings", "attributions", "skipped"}
    grid = summary["localisation"]["grid"]
    assert grid["n"] == 2 and grid["uniform_score"] == 0.25
    assert list(summary["localisation"]["attributions"]) == expected_attributions
    for m, s in summary["localisation"]["attributions"].items():
        assert set(s) == {"mean", "median", "std", "n", "n_grids", "mean_unsmoothed", "ci_low", "ci_high"}
        assert s["ci_low"] <= s["mean"] <= s["ci_high"]
        assert s["mean"] == pytest.approx(scores.loc[scores["attribution"] == m, "score"].mean())
    expected_deletion = ["own", "ixg", "random"] if arch == "bcos" else ["ixg", "random"]
    assert list(summary["deletion"]["attributions"]) == expected_deletion
    assert all(set(v) == {"auc_most", "auc_least"} for v in summary["deletion"]["attributions"].values())
    assert set(deletion["attribution"]) == set(expected_deletion)
    assert len(deletion) == sum(2 if m != "random" else 1 for m in expected_deletion) * (TINY.deletion_steps + 1)
    if arch == "std":
        assert "own" in summary["localisation"]["skipped"] and any("skipping 'own'" in line for line in lines)
    else:
        assert summary["localisation"]["skipped"] == {} and summary["deletion"]["skipped"] == {}
    json.dumps(summary, allow_nan=False)                          # JSON-serialisable, finite


def test_evaluate_model_rejects_unknown_attributions(bcos_model, test_ds):
    cfg = EvaluateConfig(attributions=["own", "lime"])
    with pytest.raises(ValueError, match="lime"):
        evaluate_model(bcos_model, test_ds, cfg, log=lambda s: None)
    cfg = EvaluateConfig(attributions=["own"], deletion_attributions=["lime"])
    with pytest.raises(ValueError, match="lime"):
        evaluate_model(bcos_model, test_ds, cfg, log=lambda s: None)


def test_evaluation_plots_return_figures(bcos_model, std_model, test_ds):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bcos_lib.figures import plot_deletion, plot_localisation

    scores, curves = [], []
    for key, model in (("bcos", bcos_model), ("std", std_model)):
        s, d, _ = evaluate_model(model, test_ds, TINY, log=lambda line: None)
        scores.append(s.assign(model=key))
        curves.append(d.assign(model=key))
    fig = plot_localisation(pd.concat(scores, ignore_index=True))
    uniform_lines = [line for line in fig.axes[0].lines if line.get_label() == "uniform"]
    assert len(uniform_lines) == 1 and list(uniform_lines[0].get_xdata()) == [0.25, 0.25]
    fig2 = plot_deletion(pd.concat(curves, ignore_index=True))
    assert len(fig2.axes) == 2
    plt.close("all")
