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
                       evaluate={"localisation": {"grid": {"n": 3, "smooth": smooth}, "attributions": loc, "skipped": {}}},
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


def test_the_readme_gets_a_compact_copy_and_docs_results_the_whole_report(tmp_path):
    from bcos_lib.readme import END, START, compact_report, update_readme

    report = tmp_path / "report.md"
    report.write_text("_Generated (profile: tiny)._\n\n### Accuracy (test set)\n\n| model | acc |\n|---|---|\n"
                      "| `a` | 90.00 |\n\n### Localisation: grid (mean)\n\n| attribution | `a` |\n|---|---|\n"
                      "| own | 0.500 |\n\n"
                      "### B sweep (short)\n\n![B sweep](figures/b_sweep.png)\n")
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(f"# x\n\n{START}\nold\n{END}\n\ntail\n")
    page.write_text(f"# Results\n\n{START}\n{END}\n")
    assert update_readme(readme, report, page)
    short = readme.read_text().split(START)[1].split(END)[0]
    assert "### Accuracy" in short and "90.00" in short
    assert "0.500" not in short and "b_sweep" not in short  # the other tables stay in docs/results.md
    assert "Localisation, B sweep" in short and "(docs/results.md)" in short
    assert readme.read_text().endswith("\n\ntail\n")
    full = page.read_text().split(START)[1].split(END)[0]
    assert "0.500" in full and "](../figures/b_sweep.png)" in full  # figure links relative to docs/
    assert short.strip() == compact_report(report.read_text()).strip()
    assert not update_readme(readme, report, page)  # a second run changes nothing


def test_the_claims_ledger_goes_to_both_its_table_to_the_readme(tmp_path):
    from bcos_lib.readme import CLAIMS_END, CLAIMS_START, END, START, update_readme

    report, claims = tmp_path / "report.md", tmp_path / "claims.md"
    report.write_text("_Generated._\n\n### Accuracy (test set)\n\n| model | acc |\n|---|---|\n| `a` | 90.00 |\n")
    claims.write_text("2 claims: 1 reproduced, 1 inconclusive.\n\n| claim | paper | ours [95 % CI] | seeds | verdict |\n"
                      "|---|---|---|---|---|\n| a | 0.9 | +0.100 [+0.050, +0.150] | 3 | **reproduced** |\n\n"
                      "- **a** (P; paper: 0.9). Ours: difference 0.100 (95 % CI 0.050 to 0.150).\n")
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(f"# x\n\n{START}\n{END}\n\n{CLAIMS_START}\nold\n{CLAIMS_END}\n")
    page.write_text(f"# Results\n\n{START}\n{END}\n\n{CLAIMS_START}\n{CLAIMS_END}\n")
    assert update_readme(readme, report, page, claims)
    short = readme.read_text().split(CLAIMS_START)[1].split(CLAIMS_END)[0]
    assert "2 claims: 1 reproduced" in short and "**reproduced**" in short and "Ours: difference" not in short
    full = page.read_text().split(CLAIMS_START)[1].split(CLAIMS_END)[0]
    assert "**reproduced**" in full and "Ours: difference 0.100" in full
    assert not update_readme(readme, report, page, claims)
