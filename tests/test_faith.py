"""Issue 19: the renderer equal to the official one, confidence intervals, the faithfulness
metrics (cross-checked against Quantus), the README's prose against the metrics files, and
the margin study."""
from __future__ import annotations

import pytest
import torch

from bcos_lib.explain import colour_explanation


# ----------------------------------------------------------------------------- renderer
def _tiny_map() -> tuple[torch.Tensor, torch.Tensor]:
    """A 3×3 grey map with weights for [x, 1 − x]: (3, 4) at (0, 0), (9, 0) at the centre,
    (−6, 8) at (2, 2) on a white pixel (its contribution −6 < 0), 0 elsewhere."""
    w = torch.zeros(1, 2, 3, 3)
    w[0, :, 0, 0] = torch.tensor([3.0, 4.0])
    w[0, :, 1, 1] = torch.tensor([9.0, 0.0])
    w[0, :, 2, 2] = torch.tensor([-6.0, 8.0])
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 2, 2] = 1.0
    return w, torch.cat([x, 1 - x], 1)


def test_colour_explanation_equals_the_official_renderer_by_hand():
    w, inputs = _tiny_map()
    rgba = colour_explanation(w, inputs, smooth=3)
    # opacity before smoothing: ‖W‖ = 5 at (0, 0), 9 at the centre, 0 at (2, 2) (negative
    # contribution) and elsewhere.  A 3×3 average pool with the zero padding counted divides
    # every window by 9: the four pixels whose window holds both 5 and 9 get 14/9, the five
    # whose window holds only the 9 get 9/9.  The 99.5th percentile of
    # [1, 1, 1, 1, 1, 14/9, 14/9, 14/9, 14/9] (linear interpolation) is 14/9, so the opacity is
    # 1 on the top-left 2×2 block and 9/14 elsewhere.
    a = 9 / 14
    expected_alpha = torch.tensor([[1.0, 1.0, a], [1.0, 1.0, a], [a, a, a]])
    torch.testing.assert_close(rgba[0, ..., 3], expected_alpha)
    # colour: W / max|W| clamped at ≥ 0, then w_x / (w_x + w_inv): 3/7 at (0, 0), 1 at the
    # centre, 0 at (2, 2) (its w_x is negative) and where W = 0
    expected_rgb = torch.zeros(3, 3)
    expected_rgb[0, 0], expected_rgb[1, 1] = 0.75 / 1.75, 1.0
    for ch in range(3):
        torch.testing.assert_close(rgba[0, ..., ch], expected_rgb)


def test_colour_explanation_variant_without_the_padding_counted():
    w, inputs = _tiny_map()
    rgba = colour_explanation(w, inputs, smooth=3, count_include_pad=False)
    # averages over the pixels inside the image: corners /4, edges /6, centre /9
    raw = torch.tensor([[14 / 4, 14 / 6, 9 / 4], [14 / 6, 14 / 9, 9 / 6], [9 / 4, 9 / 6, 9 / 4]])
    q = torch.quantile(raw.flatten(), 0.995)
    torch.testing.assert_close(rgba[0, ..., 3], (raw / q).clamp(0, 1))
    assert (rgba[0, ..., 3] - colour_explanation(w, inputs, smooth=3)[0, ..., 3]).abs().max() > 0.2


# ----------------------------------------------------------------------------- confidence intervals
def _grid_table(grid_means, cells: int = 9, noise: float = 0.0, seed: int = 0):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    g = len(grid_means)
    return pd.DataFrame({"grid": np.repeat(np.arange(g), cells),
                         "score": np.repeat(grid_means, cells) + noise * rng.standard_normal(g * cells)})


def test_bootstrap_resamples_grids_not_cells():
    import numpy as np

    from bcos_lib.metrics import bootstrap_ci
    grid_means = np.linspace(0, 1, 20)       # the 9 cells of a grid share its score
    df = _grid_table(grid_means)
    lo, hi = bootstrap_ci(df, n_boot=4000, seed=0)
    # the standard error of a mean of 20 grids, not of 180 cells (which would be 3× narrower)
    se = grid_means.std() / np.sqrt(len(grid_means))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert lo < df["score"].mean() < hi
    assert bootstrap_ci(df, n_boot=4000, seed=0) == (lo, hi)            # seeded
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(df, level=95)


def test_paired_margin_uses_common_grids_and_pairs_them():
    import numpy as np

    from bcos_lib.metrics import paired_margin
    base = np.linspace(0.2, 0.8, 30)
    a, b = _grid_table(base + 0.1), _grid_table(base[:10])   # b on the first 10 grids only
    m = paired_margin(a, b, n_boot=500, seed=1)
    assert m["n_grids"] == 10 and m["mean"] == pytest.approx(0.1)
    # pairing removes the grid-to-grid spread that both share: the interval collapses on 0.1
    assert m["ci_low"] == pytest.approx(0.1) and m["ci_high"] == pytest.approx(0.1)


def test_the_report_shows_intervals_and_no_unpaired_margin_verdict():
    """The two models' grids differ (each model's own confident pool), so the report states no verdict
    on their difference: the claims ledger compares models on shared grids."""
    from bcos_lib.core.config import ModelEntry
    from bcos_lib.core.contract import ModelResult
    from bcos_lib.report import make_report

    def result(key, attributions):
        return ModelResult(key=key, entry=ModelEntry(arch="bcos_cnn"), method="bcos", label=key, train=None,
                           explain=None, history=None, tables={}, explanations=None,
                           evaluate={"localisation": {"grid": {"n": 3, "smooth": 1}, "attributions": attributions}})

    st = lambda m, lo, hi: {"mean": m, "median": m, "std": 0.1, "n": 90, "n_grids": 10, "ci_low": lo, "ci_high": hi}
    res = {"b": result("b", {"own": st(0.80, 0.78, 0.82), "gradcam": st(0.50, 0.45, 0.55)}),
           "s": result("s", {"gradcam": st(0.60, 0.56, 0.64)})}
    text = make_report(res)
    assert "(n=90; 95 % CI 0.780–0.820)" in text and "(n=90; 95 % CI 0.560–0.640)" in text
    assert "Margin" not in text and "excludes 0" not in text


# ----------------------------------------------------------------------------- faithfulness metrics, Quantus
@pytest.fixture(scope="module")
def spots_setup():
    from test_metrics import spots, trained   # the tiny "spots" models of the metric tests
    return trained("bcos_cnn"), trained("std_cnn"), spots(200, seed=1)


def _quantus_flipping(model, ds, attribution, n_images, steps, insertion):
    """Quantus' PixelFlipping loop on the images pixel_deletion uses (mean curve, first point dropped)."""
    import numpy as np
    import quantus

    from bcos_lib.faithfulness import ImageSpaceProbabilities, explanation_maps, faithfulness_sample
    images = ds.images[faithfulness_sample(ds, n_images, 0)]
    maps, predicted = explanation_maps(model, images, attribution)
    x = images.double().numpy()
    h, w = x.shape[-2:]
    kwargs = {"perturb_baseline": 0.0}
    if insertion:   # start from black and put the original pixels back, in the same order
        flat = x.reshape(len(x), -1)

        def insert(arr, indices, **_):
            out = arr.copy()
            rows = np.arange(len(arr))[:, None]
            out[rows, indices] = flat[rows, indices]
            return out
        kwargs = {"perturb_func": insert}
        x = np.zeros_like(x)
    metric = quantus.PixelFlipping(features_in_step=h * w // steps, normalise=False, disable_warnings=True, **kwargs)
    model.eval()
    curves = metric(model=ImageSpaceProbabilities(model).eval(), x_batch=x, y_batch=predicted, a_batch=maps,
                    channel_first=True, softmax=False, device="cpu")
    return np.asarray(curves).mean(0)


@pytest.mark.parametrize("insertion", [False, True])
@pytest.mark.parametrize("arch,attribution", [("bcos", "own"), ("std", "ixg")])
def test_quantus_pixel_flipping_agrees_with_the_deletion_and_insertion_curves(spots_setup, arch, attribution, insertion):
    import numpy as np

    from bcos_lib.metrics import pixel_deletion
    bcos, std, ds = spots_setup
    model = bcos if arch == "bcos" else std
    ours = pixel_deletion(model, ds, attribution, n_images=8, steps=12, seed=0, order="most", insertion=insertion)
    theirs = _quantus_flipping(model, ds, attribution, 8, 12, insertion)
    # Quantus leaves out the first point (nothing removed / nothing inserted)
    np.testing.assert_allclose(ours["score"].to_numpy()[1:], theirs, atol=1e-6)
    # not trivially equal: the curve moves (the spot goes, or comes, in the first step), and
    # the curve shifted by one step does not match
    assert np.ptp(ours["score"]) > 0.5
    assert not np.allclose(ours["score"].to_numpy()[:-1], theirs, atol=1e-4)


def _ctx(model, ds, metric, options, attributions=("own", "ixg", "gradcam")):
    from bcos_lib.core.config import EvaluateConfig, ModelEntry
    from bcos_lib.core.contract import EvalContext
    cfg = EvaluateConfig(grid_size=2, batch_size=4, ig_steps=3, attributions=list(attributions))
    return EvalContext(key="m", model=model, entry=ModelEntry(arch="x"), test_data=ds, cfg=cfg, options=options,
                       device="cpu", seed=0, log=lambda s: None, load_train_data=lambda: ds)


def test_insertion_road_and_faithfulness_correlation_rank_the_explanations(spots_setup):
    import json

    from bcos_lib.faithfulness import FaithfulnessCorrelationOptions, InsertionOptions, RoadOptions
    from bcos_lib.core.registry import get_metric
    bcos, std, ds = spots_setup
    ins = get_metric("insertion").fn(_ctx(bcos, ds, "insertion", InsertionOptions(n_images=16, steps=6)))
    road = get_metric("road").fn(_ctx(bcos, ds, "road", RoadOptions(n_images=16, percentages=[10.0, 40.0])))
    fc = get_metric("faithfulness_correlation").fn(
        _ctx(bcos, ds, "faithfulness_correlation", FaithfulnessCorrelationOptions(n_images=16, nr_runs=20)))
    for r in (ins, road, fc):
        assert list(r.summary["attributions"]) == ["own", "ixg", "gradcam", "random"]
        json.dumps(r.summary, allow_nan=False)
    i, o, f = ins.summary["attributions"], road.summary["attributions"], fc.summary["attributions"]
    # on spots the class is the bright square: the own explanation finds it, a random ranking does not
    assert i["own"]["auc"] > i["random"]["auc"] + 0.2
    assert o["own"]["morf"] < o["random"]["morf"] and o["own"]["lerf"] > o["own"]["morf"]
    assert f["own"]["mean"] > f["random"]["mean"] + 0.2 and abs(f["random"]["mean"]) < 0.3
    assert set(road.tables["road"]["percentage"]) == {10.0, 40.0} and len(fc.tables["faithfulness_correlation"]) == 64
    # seeded: the same numbers again
    again = get_metric("road").fn(_ctx(bcos, ds, "road", RoadOptions(n_images=16, percentages=[10.0, 40.0])))
    assert again.summary == road.summary
    # a model without its own explanation is scored on the post-hoc attributions and says why not on "own"
    std_ins = get_metric("insertion").fn(_ctx(std, ds, "insertion", InsertionOptions(n_images=4, steps=2)))
    assert "own" not in std_ins.summary["attributions"] and "own" in std_ins.summary["skipped"]


def test_faithfulness_options_are_checked_when_params_are_read():
    from bcos_lib.core.config import ConfigError, EvaluateConfig
    from bcos_lib.core.config import metric_options
    with pytest.raises(ConfigError, match=r"evaluate.options.road.*percentages"):
        metric_options("road", EvaluateConfig(options={"road": {"percentages": [0, 50]}}))
    with pytest.raises(ConfigError, match=r"insertion.*unknown attribution.*lime"):
        metric_options("insertion", EvaluateConfig(options={"insertion": {"attributions": ["lime"]}}))
    with pytest.raises(ConfigError, match=r"unknown key evaluate.options.faithfulness_correlation.runs"):
        metric_options("faithfulness_correlation", EvaluateConfig(options={"faithfulness_correlation": {"runs": 3}}))


def test_the_report_has_a_faithfulness_table():
    from bcos_lib.core.config import ModelEntry
    from bcos_lib.core.contract import ModelResult
    from bcos_lib.report import make_report
    ev = {"insertion": {"settings": {"n_images": 32}, "attributions": {"own": {"auc": 0.612}, "random": {"auc": 0.301}}},
          "road": {"settings": {"n_images": 32}, "attributions": {"own": {"morf": 0.25, "lerf": 0.875}}},
          "faithfulness_correlation": {"settings": {"n_images": 32},
                                       "attributions": {"own": {"mean": 0.4, "std": 0.1, "n": 31}}}}
    r = ModelResult(key="b", entry=ModelEntry(arch="bcos_cnn"), method="bcos", label="b", train=None, explain=None,
                    evaluate=ev, history=None, tables={}, explanations=None)
    text = make_report({"b": r})
    assert "| own explanation (W(x)⊙x) | 0.612 | 0.250 / 0.875 | 0.400 ± 0.100 (n=31) |" in text
    assert "| random order | 0.301 | – | – |" in text


# ----------------------------------------------------------------------------- the results page's prose
#: numbers the prose may quote that no results file holds, and why
PROSE_ALLOWED = {"3.11.5": "the Python version the project needs, not a measurement",
                 "3.11": "the Python version the project needs, not a measurement"}


@pytest.mark.parametrize("page", ["README.md", "docs/results.md"])
def test_every_decimal_of_the_hand_written_prose_comes_from_a_results_file(page):
    """The README and the results page state no number by hand: each decimal in their prose (the
    generated blocks aside) is in a results file, a paper's numbers or params.yaml."""
    from bcos_lib.core.paths import project_root
    from bcos_lib.prose import prose_of, source_numbers, unsupported_numbers
    measured, fixed = source_numbers(project_root())
    bad = unsupported_numbers(prose_of(project_root() / page), measured, fixed, PROSE_ALLOWED)
    assert not bad, (f"{page} quotes numbers that no results file (results/*/…/metrics.json, results/claims.json, "
                     "results/runs.json), PAPER_NUMBERS or params.yaml holds:\n" + "\n".join(bad))


def test_the_prose_check_catches_a_changed_number():
    from bcos_lib.prose import unsupported_numbers
    measured, fixed = [0.6751, 0.6442, 90.75, 91.40, 0.3871], [0.912]
    text = ("- own 0.675 against Grad-CAM 0.644, a margin of 0.03 (paper 0.912, 0.91).\n"
            "- accuracy 90.75 % vs 91.40 %: 0.65 points; occlusion 0.387, i.e. 0.39 `[0.5]`")
    assert unsupported_numbers(text, measured, fixed) == []
    assert [b.split()[0] for b in unsupported_numbers(text.replace("0.675", "0.695"), measured, fixed)] \
        == ["0.695", "0.03"]                                 # the number, and the margin derived from it
    assert [b.split()[0] for b in unsupported_numbers(text + " (0.55)", measured, fixed)] == ["0.55"]
    assert unsupported_numbers(text + " (0.55)", measured, fixed, {"0.55": "why"}) == []
    # a two-digit number is not matched against arbitrary results (it would almost always match)
    assert [b.split()[0] for b in unsupported_numbers("- 0.64", measured, fixed)] == ["0.64"]


# ----------------------------------------------------------------------------- the margin study
def test_tracked_localisation_scores_fixed_grids(spots_setup):
    from bcos_lib.core.config import ConfigError, EvaluateConfig
    from bcos_lib.core.config import metric_options
    from bcos_lib.methods.margin.metrics import TrackedLocalisationOptions, tracked_localisation
    from bcos_lib.metrics import make_grids, score_grids
    bcos, std, ds = spots_setup
    cfg = EvaluateConfig(grid_size=2, smooth=1, batch_size=4)
    ctx = _ctx(bcos, ds, "tracked_localisation", TrackedLocalisationOptions(n_grids=5))
    ctx.cfg = cfg
    r = tracked_localisation(ctx)
    assert set(r.summary) == {"own", "gradcam"} and tracked_localisation(ctx).summary == r.summary
    # the grids: every test image of each class (no confidence filter), drawn with the seed
    pool = {c: (ds.labels == c).nonzero().flatten() for c in range(10)}
    grids, classes = make_grids(ds, pool, 2, 5, 0)
    assert r.summary["own"] == pytest.approx(score_grids(bcos, grids, classes, "own", 2)["score"].mean())
    ctx.model = std
    assert set(tracked_localisation(ctx).summary) == {"gradcam"}
    with pytest.raises(ConfigError, match="tracked_localisation.attributions.*lime"):
        metric_options("tracked_localisation", EvaluateConfig(options={"tracked_localisation": {"attributions": ["lime"]}}))


def test_the_margin_study_draws_and_reports_the_margin_per_epoch():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd

    from bcos_lib.core.config import ModelEntry
    from bcos_lib.core.contract import ModelResult
    from bcos_lib.core.registry import get_method

    def result(key, arch, kwargs, hist):
        return ModelResult(key=key, entry=ModelEntry(arch=arch, kwargs=kwargs, group="margin"), method="x", label=key,
                           train=None, explain=None, evaluate=None, history=pd.DataFrame(hist), tables={},
                           explanations=None)
    res = {"m_std": result("m_std", "std_cnn", {}, {"epoch": [1, 2], "tracked_localisation_gradcam": [0.5, 0.6],
                                                     "tracked_localisation_occlusion": [0.3, 0.4]}),
           "m_b": result("m_b", "bcos_cnn", {"b": 2.5, "logit_temperature": 1.0, "max_out": 2, "encoding": "none"},
                         {"epoch": [1, 2], "tracked_localisation_own": [0.6, 0.75],
                          "tracked_localisation_gradcam": [0.2, 0.3]})}
    m = get_method("margin")
    text = m.report(res)
    assert "| `m_b` | 2.5 | 1.0 | 2 | none | 2 | 0.750 | +0.150 |" in text
    assert "Grad-CAM on `m_std`, 0.600" in text
    figs = m.figures(res, None)
    ax2 = figs["margin"].axes[1]
    assert [list(line.get_ydata()) for line in ax2.lines if line.get_label() == "m_b"] == [pytest.approx([0.1, 0.15])]
