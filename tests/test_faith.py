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


def test_the_report_shows_intervals_and_the_margin_verdict():
    from bcos_lib.config import ModelEntry
    from bcos_lib.methods import ModelResult
    from bcos_lib.report import localisation_margin, make_report

    def result(key, methods):
        return ModelResult(key=key, entry=ModelEntry(arch="bcos_cnn"), method="bcos", label=key, train=None,
                           explain=None, history=None, tables={}, explanations=None,
                           evaluate={"localisation": {"grid": {"n": 3, "smooth": 1}, "methods": methods}})

    st = lambda m, lo, hi: {"mean": m, "median": m, "std": 0.1, "n": 90, "n_grids": 10, "ci_low": lo, "ci_high": hi}
    res = {"b": result("b", {"own": st(0.80, 0.78, 0.82), "gradcam": st(0.50, 0.45, 0.55)}),
           "s": result("s", {"gradcam": st(0.60, 0.56, 0.64)})}
    text = make_report(res)
    assert "(n=90; 95 % CI 0.780–0.820)" in text and "(n=90; 95 % CI 0.560–0.640)" in text
    m = localisation_margin({k: r.evaluate["localisation"] for k, r in res.items()})
    assert m["posthoc_model"] == "s" and m["margin"] == pytest.approx(0.2)
    se = ((0.04 / 3.92) ** 2 + (0.08 / 3.92) ** 2) ** 0.5
    assert m["ci_low"] == pytest.approx(0.2 - 1.96 * se)
    assert "**+0.200**" in text and "excludes 0" in text
    res["s"] = result("s", {"gradcam": st(0.79, 0.70, 0.88)})
    assert "includes 0" in make_report(res)
