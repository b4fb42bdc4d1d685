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
