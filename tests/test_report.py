"""The results tables: every number in them comes from what the stages wrote."""
from __future__ import annotations

from bcos_lib.core.config import ModelEntry
from bcos_lib.core.contract import ModelResult
from bcos_lib.report import make_report


def _result(key: str, acc: float, own: float | None, gradcam: float, smooth: int) -> ModelResult:
    loc = {"gradcam": {"mean": gradcam, "median": gradcam, "std": 0.1, "n": 450, "n_grids": 50,
                       "mean_unsmoothed": gradcam - 0.01}}
    if own is not None:
        loc = {"own": {"mean": own, "median": own, "std": 0.2, "n": 4500, "n_grids": 500,
                       "mean_unsmoothed": own - 0.05}, **loc}
    return ModelResult(key=key, entry=ModelEntry(arch="bcos_cnn"), method="bcos", label=key,
                       train={"profile": "default", "n_parameters": 1234, "epochs": 5, "n_train": 60000,
                              "test_accuracy": acc},
                       explain=None,
                       evaluate={"localisation": {"grid": {"n": 3, "smooth": smooth}, "methods": loc, "skipped": {}}},
                       history=None, tables={}, explanations=None)


def test_the_localisation_table_names_the_smoothing_and_shows_both_scores():
    res = {"a": _result("a", 91.0, 0.742, 0.665, smooth=3), "b": _result("b", 92.0, None, 0.700, smooth=3)}
    text = make_report(res)
    assert "3×3 average pool" in text and "unsmoothed" in text
    assert "0.742 ± 0.200 [0.692] (n=4500)" in text            # smoothed, then unsmoothed in brackets
    assert "0.700 ± 0.100 [0.690] (n=450)" in text
    assert "| 91.00 |" in text and "| 92.00 |" in text


def test_without_smoothing_the_table_shows_one_score():
    text = make_report({"a": _result("a", 91.0, 0.742, 0.665, smooth=1)})
    assert "unsmoothed maps" in text
    assert "0.742 ± 0.200 (n=4500)" in text and "[" not in text.split("### Localisation")[1]


def test_method_sections_follow_the_shared_tables():
    text = make_report({"a": _result("a", 91.0, 0.742, 0.665, smooth=1)}, sections=["### A method's own section"])
    assert text.index("### Localisation") < text.index("### A method's own section")
