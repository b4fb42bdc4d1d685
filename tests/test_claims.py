"""The claims ledger: verdicts, intervals across seeds, pairing, trends, and the declared claims."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bcos_lib.claims import (Arm, Claim, ClaimError, Estimate, Samples, claims_table, combine_seeds, evaluate_claim,
                             ledger, seed_estimate, verdict)
from bcos_lib.core.contract import ModelResult


def _entry(group: str = "", replica_of: str = "", **kwargs):
    return SimpleNamespace(group=group, replica_of=replica_of, kwargs=kwargs, arch="x")


def _result(key: str, scores: dict[str, np.ndarray] | None = None, acc: float = 90.0, n_test: int = 1000,
            group: str = "", replica_of: str = "", table: str = "paired_localisation", **kwargs) -> ModelResult:
    tables = {}
    if scores:
        rows = [{"grid": g, "cell": c, "score": s, "score_unsmoothed": s / 2, "attribution": a}
                for a, per_grid in scores.items() for g, s in enumerate(per_grid) for c in range(2)]
        tables[table] = pd.DataFrame(rows)
    return ModelResult(key=key, entry=_entry(group, replica_of, **kwargs), method="m", label=key,
                       train={"test_accuracy": acc, "n_test": n_test}, explain=None, evaluate={}, history=None,
                       tables=tables, explanations=None)


LOC = Claim("t.loc", "a beats b", paper="P", paper_value="0.9 vs 0.7", metric="paired_localisation",
            arms=(Arm("a", "own"), Arm("b", "gradcam")))


# ----------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("ci, direction, expected", [
    ((0.01, 0.05), "greater", "reproduced"),
    ((-0.05, -0.01), "greater", "not reproduced"),
    ((-0.01, 0.05), "greater", "inconclusive"),
    ((-0.05, -0.01), "less", "reproduced"),
    ((0.01, 0.05), "less", "not reproduced"),
    (None, "greater", "inconclusive"),
])
def test_verdict_reads_the_interval_against_the_papers_side(ci, direction, expected):
    c = Claim("x", "x", "p", "v", "accuracy", arms=(Arm("a"), Arm("b")), direction=direction)
    assert verdict(c, ci, starved=False) == expected


def test_a_threshold_moves_the_line():
    c = Claim("x", "x", "p", "v", "accuracy", arms=(Arm("a"), Arm("b")), threshold=-1.0)
    assert verdict(c, (-0.8, -0.2), False) == "reproduced"      # within one point
    assert verdict(c, (-2.0, -1.5), False) == "not reproduced"


def test_under_training_replaces_a_negative_verdict_but_not_a_positive_one():
    c = Claim("x", "x", "p", "v", "accuracy", arms=(Arm("a"), Arm("b")))
    assert verdict(c, (-0.5, -0.1), starved=True) == "under-trained"
    assert verdict(c, (-0.5, 0.1), starved=True) == "under-trained"
    assert verdict(c, (0.1, 0.5), starved=True) == "reproduced"


def test_a_malformed_claim_is_refused():
    with pytest.raises(ClaimError, match="direction"):
        Claim("x", "x", "p", "v", "accuracy", arms=(Arm("a"), Arm("b")), direction="up")
    with pytest.raises(ClaimError, match="2 arm"):
        Claim("x", "x", "p", "v", "accuracy", arms=(Arm("a"),))
    with pytest.raises(ClaimError, match="group"):
        Claim("x", "x", "p", "v", "accuracy", test="trend")


# ----------------------------------------------------------------------------- one seed
def test_paired_samples_are_compared_on_their_common_ids():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)          # a large grid-to-grid spread shared by both sides
    a = Samples(base + 0.02, np.arange(60))
    b = Samples(base, np.arange(60))
    paired = seed_estimate(LOC, [a, b])
    assert paired.paired and paired.value == pytest.approx(0.02)
    assert paired.ci[0] == pytest.approx(0.02) and paired.ci[1] == pytest.approx(0.02)  # the difference is constant
    unpaired = seed_estimate(LOC, [Samples(a.values, None), Samples(b.values, None)])
    assert not unpaired.paired and unpaired.ci[0] < 0 < unpaired.ci[1]   # the spread hides it without pairing


def test_pairing_uses_only_the_shared_ids():
    a = Samples(np.array([1.0, 2.0, 3.0, 10.0]), np.array([0, 1, 2, 9]))
    b = Samples(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 2]))
    e = seed_estimate(LOC, [a, b])
    assert e.paired and e.n == 3 and e.value == pytest.approx(1.0)


def test_a_trend_is_the_slope_of_the_means():
    c = Claim("t", "rises", "p", "v", "paired_localisation", test="trend", group="g", by="b")
    rng = np.random.default_rng(1)
    x = np.array([1.0, 2.0, 3.0])
    samples = [Samples(0.1 * xi + rng.normal(0, 0.01, 200)) for xi in x]
    e = seed_estimate(c, samples, x)
    assert e.value == pytest.approx(0.1, abs=0.005) and e.ci[0] > 0.09 and e.ci[1] < 0.11


# ----------------------------------------------------------------------------- across seeds
def test_one_seed_keeps_the_bootstrap_interval():
    e = Estimate(0.1, (0.05, 0.15), 0.025, 100, True)
    assert combine_seeds([e]) == (0.1, (0.05, 0.15))


def test_seeds_that_disagree_widen_the_interval():
    tight = [Estimate(v, (v - 0.01, v + 0.01), 0.005, 100, True) for v in (0.10, 0.11, 0.09)]
    spread = [Estimate(v, (v - 0.01, v + 0.01), 0.005, 100, True) for v in (0.30, -0.05, 0.05)]
    m1, (lo1, hi1) = combine_seeds(tight)
    m2, (lo2, hi2) = combine_seeds(spread)
    assert m1 == pytest.approx(0.10) and lo1 > 0
    assert lo2 < 0 < hi2 and (hi2 - lo2) > 5 * (hi1 - lo1)


def test_seeds_that_agree_by_chance_keep_the_evaluation_noise():
    """Three identical seed estimates: the interval is not zero wide (the bootstrap error stays)."""
    same = [Estimate(0.1, (0.0, 0.2), 0.05, 100, True)] * 3
    _, (lo, hi) = combine_seeds(same)
    assert lo < 0.05 and hi > 0.15


# ----------------------------------------------------------------------------- a claim on results
def _paired_results(delta: float, seeds: int = 1, spread: float = 0.0) -> dict[str, ModelResult]:
    rng = np.random.default_rng(2)
    res = {}
    for s in range(seeds):
        base = rng.uniform(0.3, 0.7, 40)
        shift = delta + (spread * (s - (seeds - 1) / 2))
        for key, att, add in (("a", "own", shift), ("b", "gradcam", 0.0)):
            k = key if s == 0 else f"{key}_s{s}"
            res[k] = _result(k, {att: np.clip(base + add + rng.normal(0, 0.01, 40), 0, 1)},
                             replica_of="" if s == 0 else key)
    return res


def test_a_clear_lead_is_reproduced_and_a_clear_deficit_is_not():
    row = evaluate_claim(LOC, _paired_results(0.1))
    assert row["verdict"] == "reproduced" and row["paired"] and row["seeds"] == 1 and row["n"] == 40
    row = evaluate_claim(LOC, _paired_results(-0.1))
    assert row["verdict"] == "not reproduced"


def test_replicas_are_combined_as_seeds():
    row = evaluate_claim(LOC, _paired_results(0.1, seeds=3))
    assert row["seeds"] == 3 and len(row["seed_estimates"]) == 3 and row["verdict"] == "reproduced"
    row = evaluate_claim(LOC, _paired_results(0.02, seeds=3, spread=0.3))
    assert row["verdict"] == "inconclusive"


def test_a_missing_model_is_not_run_and_says_which():
    res = _paired_results(0.1)
    del res["b"]
    row = evaluate_claim(LOC, res)
    assert row["verdict"] == "not run" and "b" in row["reason"]


def test_the_under_training_check_flags_models_and_says_why():
    res = _paired_results(-0.1)
    conv = {"a": {"accuracy": 80.0, "long_accuracy": 85.0, "long_epochs": 12}, "b": {
        "accuracy": 90.0, "long_accuracy": 90.5, "long_epochs": 12}}
    row = evaluate_claim(LOC, res, conv)
    assert row["verdict"] == "under-trained" and set(row["under_trained"]) == {"a"}
    assert "5.0 points" in row["under_trained"]["a"]
    assert "under-trained" in claims_table({"claims": [{**row, "short": "x"}]})
    lead = evaluate_claim(LOC, _paired_results(0.1), conv)
    assert lead["verdict"] == "reproduced" and "**reproduced** on under-trained models" in claims_table({"claims": [lead]})
    row = evaluate_claim(LOC, res, {})
    assert row["under_trained"] == {} and row["unchecked"] == ["a", "b"] and row["verdict"] == "not reproduced"
    assert "not checked: a, b" in row["reason"]


def test_a_check_of_an_earlier_training_is_not_used_and_is_named():
    """A convergence entry records the accuracy its model had; a model retrained since (another
    accuracy now) is treated as not checked, and the training-length text says it must be measured again."""
    from bcos_lib.claims import current_checks
    from bcos_lib.stages.claims import ledger_text
    res = _paired_results(-0.1)                        # both models at 90.0 %
    conv = {"a": {"epochs": 4, "accuracy": 80.0, "long_epochs": 12, "long_accuracy": 85.0},
            "b": {"epochs": 4, "accuracy": 90.0, "long_epochs": 12, "long_accuracy": 92.0},
            "gone": {"epochs": 1, "accuracy": 50.0, "long_epochs": 3, "long_accuracy": 60.0}}
    kept, stale = current_checks(conv, res)
    assert stale == ["a"] and set(kept) == {"b", "gone"}
    row = evaluate_claim(LOC, res, kept)
    assert set(row["under_trained"]) == {"b"} and row["unchecked"] == ["a"]
    text = ledger_text({"claims": [row], "under_trained": 1}, kept, stale)
    assert "measures it again: `a`." in text and "| `b` | 4 | 90.00 |" in text and "| `a` |" not in text


def test_a_check_follows_the_settings_it_was_measured_for_not_the_last_digit_of_the_accuracy():
    """A check that recorded its model's settings fingerprint carries over to the same settings trained
    on another machine (the accuracy a few tenths away: another order of floating-point sums), and
    not to other settings, nor to the same settings more than a point away (the training code changed)."""
    from bcos_lib.claims import SAME_SETTINGS_POINTS, current_checks
    res = _paired_results(-0.1)                        # both models at 90.0 %
    check = {"epochs": 4, "long_epochs": 12, "long_accuracy": 95.0, "settings": "f1"}
    conv = {"a": {**check, "accuracy": 89.6}, "b": {**check, "accuracy": 90.0 + SAME_SETTINGS_POINTS + 0.1}}
    kept, stale = current_checks(conv, res, {"a": "f1", "b": "f1"})
    assert set(kept) == {"a"} and stale == ["b"]
    kept, stale = current_checks(conv, res, {"a": "f2", "b": "f1"})     # a's settings changed since
    assert kept == {} and stale == ["a", "b"]
    kept, stale = current_checks(conv, res)                              # no fingerprint now: the accuracy alone
    assert stale == ["a", "b"]
    old = {"a": {k: v for k, v in conv["a"].items() if k != "settings"}}  # an older check: the accuracy alone
    assert current_checks(old, res, {"a": "f1"})[1] == ["a"]
    row = evaluate_claim(LOC, res, current_checks(conv, res, {"a": "f1", "b": "f1"})[0])
    assert set(row["under_trained"]) == {"a"} and row["verdict"] == "under-trained"


def test_the_training_fingerprint_covers_the_model_and_what_it_starts_from(tmp_path):
    import json
    from bcos_lib.settings import training_fingerprint

    def write(key: str, epochs: int, init_from: str = "") -> None:
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / "train" / f"{key}.json").write_text(json.dumps(
            {"train": {"epochs": epochs}, "model": {"arch": "x", "init_from": init_from}}, indent=1))

    write("parent", 4)
    write("child", 2, init_from="parent")
    first = training_fingerprint("child", tmp_path)
    assert first and first == training_fingerprint("child", tmp_path)
    (tmp_path / "train" / "child.json").write_text(json.dumps(   # the same settings, other formatting
        {"model": {"init_from": "parent", "arch": "x"}, "train": {"epochs": 2}}))
    assert training_fingerprint("child", tmp_path) == first
    settings = json.loads((tmp_path / "train" / "child.json").read_text())
    settings["train"].update(eval_batch_size=64, test_every=1)    # how the test set is scored, not the weights
    (tmp_path / "train" / "child.json").write_text(json.dumps(settings))
    assert training_fingerprint("child", tmp_path) == first
    write("parent", 5)                                               # the model it starts from changed
    assert training_fingerprint("child", tmp_path) not in (None, first)
    assert training_fingerprint("nobody", tmp_path) is None


def test_accuracy_claims_pair_the_test_images_when_predictions_were_kept():
    c = Claim("t.acc", "close", "p", "v", "accuracy", arms=(Arm("a"), Arm("b")), threshold=-1.0, unit="points")
    res = {"a": _result("a", acc=90.0, n_test=10000), "b": _result("b", acc=90.3, n_test=10000)}
    row = evaluate_claim(c, res)             # outcomes rebuilt from the accuracies: unpaired, too wide to judge
    assert row["estimate"] == pytest.approx(-0.3) and not row["paired"] and row["ci_low"] < -1.0
    assert row["verdict"] == "inconclusive"
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 10, 10000)
    pred_b = np.where(rng.random(10000) < 0.903, labels, (labels + 1) % 10)
    pred_a = np.where(rng.random(10000) < 0.997, pred_b, (pred_b + 3) % 10)   # the models agree on most images
    for key, pred in (("a", pred_a), ("b", pred_b)):
        res[key].tables["predictions"] = pd.DataFrame({"image": np.arange(10000), "label": labels, "predicted": pred})
    row = evaluate_claim(c, res)
    assert row["paired"] and row["n"] == 10000 and row["ci_low"] > -1.0 and row["verdict"] == "reproduced"


def test_a_trend_claim_orders_its_group_by_the_keyword():
    c = Claim("t.b", "rises with b", "p", "v", "paired_localisation", test="trend", group="g", by="b",
              arms=(Arm("", "own"),))
    rng = np.random.default_rng(3)
    res = {f"m{b}": _result(f"m{b}", {"own": 0.2 + 0.1 * b + rng.normal(0, 0.02, 50)}, group="g", b=b)
           for b in (2.5, 1.0, 2.0, 1.5)}
    row = evaluate_claim(c, res)
    assert row["verdict"] == "reproduced" and row["estimate"] == pytest.approx(0.1, abs=0.01)
    assert row["models"] == ["m2.5", "m1.0", "m2.0", "m1.5"]


def test_a_trend_over_seeded_models_is_one_slope_per_seed_combined():
    """The gpu profile trains three seeds of the B sweep: the trend is fitted within each seed (the
    replicas of every B), and the seeds' slopes are combined."""
    c = Claim("t.b", "rises with b", "p", "v", "paired_localisation", test="trend", group="g", by="b",
              arms=(Arm("", "own"),))
    rng = np.random.default_rng(5)
    res = {}
    for s, slope in enumerate((0.08, 0.10, 0.12)):
        for b in (1.0, 1.5, 2.0, 2.5):
            key = f"m{b}" if s == 0 else f"m{b}_s{s}"
            res[key] = _result(key, {"own": 0.2 + slope * b + rng.normal(0, 0.01, 50)}, group="g",
                               replica_of="" if s == 0 else f"m{b}", b=b)
    row = evaluate_claim(c, res)
    assert row["models"] == ["m1.0", "m1.5", "m2.0", "m2.5"] and row["seeds"] == 3
    assert row["seed_estimates"] == pytest.approx([0.08, 0.10, 0.12], abs=0.01)
    assert row["estimate"] == pytest.approx(0.10, abs=0.005) and row["verdict"] == "reproduced"
    one = evaluate_claim(c, {k: r for k, r in res.items() if not r.entry.replica_of})
    assert one["seeds"] == 1 and one["ci_high"] - one["ci_low"] < row["ci_high"] - row["ci_low"]


def test_the_epochs_ratio_pairs_each_seed_with_its_from_scratch_partner():
    """The B-cosification cost (epochs to the from-scratch accuracy, scratch ÷ converted) over three
    seeds (the gpu profile): each seed's converted model against the from-scratch model of its seed,
    and with three ratios an interval, which one seed cannot give."""
    import dataclasses
    import bcos_lib.methods.bcosification.claims as bc
    claim = next(c for c in bc.CLAIMS if c.id == "bcosification.cost")
    res = {}
    for s, (scratch_final, fast) in enumerate(((88.0, 86.0), (88.5, 86.5), (87.5, 85.0))):
        sfx = "" if s == 0 else f"_s{s}"
        scratch = pd.DataFrame({"epoch": range(1, 9), "test_accuracy": np.linspace(60.0, scratch_final, 8)})
        conv = pd.DataFrame({"epoch": range(1, 5), "test_accuracy": [fast, scratch_final + 0.5, 89.0, 89.5]})
        for key, hist in (("bcosified_cnn", conv), ("bcos_cnn_scratch", scratch)):
            r = _result(key + sfx, replica_of="" if s == 0 else key)
            res[key + sfx] = dataclasses.replace(r, history=hist)
    row = evaluate_claim(claim, res)
    assert row["seeds"] == 3 and row["ci_low"] is not None and row["ci_low"] < row["estimate"] < row["ci_high"]
    # seed 0: the scratch model reaches 88.0 after 8 epochs; the converted one between epoch 1 (86.0) and 2 (88.5)
    assert row["seed_estimates"][0] == pytest.approx(8 / (1 + 2.0 / 2.5))
    one = evaluate_claim(claim, {k: r for k, r in res.items() if not r.entry.replica_of})
    assert one["seeds"] == 1 and one["ci_low"] is None and one["verdict"] == "inconclusive"
    # the from-scratch model sets the target: the claim rests on it too, so its under-training is reported
    assert row["models"] == ["bcosified_cnn", "bcos_cnn_scratch"] and row["verdict"] == "reproduced"
    conv = {"bcos_cnn_scratch": {"epochs": 8, "accuracy": 88.0, "long_epochs": 24, "long_accuracy": 90.0}}
    starved = evaluate_claim(claim, res, conv)
    assert set(starved["under_trained"]) == {"bcos_cnn_scratch", "bcos_cnn_scratch_s1", "bcos_cnn_scratch_s2"}
    assert starved["verdict"] == "reproduced" and "under-trained: bcos_cnn_scratch" in starved["reason"]
    without_partner = evaluate_claim(claim, {k: r for k, r in res.items() if not k.startswith("bcos_cnn_scratch")})
    assert without_partner["verdict"] == "not run"


def test_the_ledger_counts_verdicts_and_the_table_has_one_row_per_claim():
    res = _paired_results(0.1)
    other = Claim("t.neg", "b beats a", "P", "x", "paired_localisation", arms=(Arm("b", "gradcam"), Arm("a", "own")))
    data = ledger([("m", LOC), ("m", other)], res)
    assert data["reproduced"] == 1 and data["not_reproduced"] == 1 and len(data["claims"]) == 2
    table = claims_table(data)
    assert table.count("\n| ") == 2 and "**reproduced**" in table and "**not reproduced**" in table


# ----------------------------------------------------------------------------- the declared claims
def test_every_declared_claim_names_models_of_params_and_a_known_source():
    from bcos_lib.claims import _SOURCES
    from bcos_lib.core.config import load_params
    from bcos_lib.stages.claims import all_claims

    claims = all_claims()
    assert len(claims) >= 12 and {m for m, _ in claims} >= {"bcos", "B-cosification", "CoDA", "DISCOVER", "csg"}
    params = load_params(None, "default")
    groups = {e.group for e in params.models.values()}
    for _, c in claims:
        assert c.metric in _SOURCES, c.id
        for a in c.arms:
            assert not a.model or a.model in params.models, (c.id, a.model)
        if c.test == "trend":
            assert c.group in groups, c.id


def test_the_papers_numbers_of_the_claims_are_the_methods_paper_numbers():
    """No typed number: each decimal in a claim's paper value is one of its method's PAPER_NUMBERS."""
    from bcos_lib.core.registry import list_methods
    from bcos_lib.prose import numbers_of
    from bcos_lib.stages.claims import all_claims

    fixed = {round(v, 4) for m in list_methods() for v in numbers_of(m.load("present").paper_numbers)}
    for _, c in all_claims():
        for n in re.findall(r"\d+\.\d+", c.paper_value):
            assert round(float(n), 4) in fixed, (c.id, n)


def _claim_models() -> list[str]:
    """Every model a declared claim rests on, as ``scripts/convergence.py`` lists them."""
    import importlib.util
    from bcos_lib.core.paths import project_root
    spec = importlib.util.spec_from_file_location("convergence", project_root() / "scripts" / "convergence.py")
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    return conv.claim_models()


def test_the_convergence_check_covers_every_model_a_claim_rests_on():
    from bcos_lib.core.config import load_params
    keys = _claim_models()
    params = load_params()
    assert set(keys) <= set(params.models) and not any(params.models[k].replica_of for k in keys)
    assert {"bcos_cnn", "std_cnn", "bcos_b1", "bcos_b2_5", "bcosified_cnn", "bcos_cnn_scratch", "coda_t10",
            "lwta_cnn", "csg_std_cnn_small"} <= set(keys)


def test_the_stage_writes_the_ledger_and_its_markdown(tmp_path, monkeypatch):
    import json
    from bcos_lib.stages import claims as stage
    monkeypatch.setattr(stage, "all_claims", lambda: [("m", LOC)])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "convergence.json").write_text(json.dumps(
        {"a": {"accuracy": 90.0, "long_accuracy": 90.2, "long_epochs": 9}}))   # a's accuracy now: 90.0
    stage.run(tmp_path, _paired_results(0.1), log=lambda s: None)
    data = json.loads((tmp_path / "results" / "claims.json").read_text())
    assert data["reproduced"] == 1 and data["claims"][0]["unchecked"] == ["b"]
    text = (tmp_path / "results" / "claims.md").read_text()
    assert text.startswith("1 claim: 1 reproduced.") and "| a beats b | 0.9 vs 0.7 |" in text
    assert "Verdict: **reproduced**" in text and "Training length not checked for `b`" in text
    assert "1 of them rest on one training seed" in text


def test_the_ledger_says_how_many_claims_rest_on_one_training_seed():
    from bcos_lib.stages.claims import ledger_text
    three = ledger([("m", LOC)], _paired_results(0.1, seeds=3))
    assert three["claims"][0]["seeds"] == 3 and "one training seed" not in ledger_text(three)
    one = ledger([("m", LOC), ("m", Claim("t.two", "a beats b again", paper="P", paper_value="0.9 vs 0.7",
                                          metric="paired_localisation", arms=(Arm("a", "own"), Arm("b", "gradcam"))))],
                 _paired_results(0.1))
    assert ledger_text(one).startswith("2 claims: 2 reproduced. Intervals are 95 % (bootstrap over the evaluation "
                                       "samples within a training seed, combined across seeds; docs/claims.md says "
                                       "how). 2 of them rest on one training seed (1 in the seeds column)")


def test_every_model_a_claim_rests_on_trains_three_seeds_in_the_default_and_gpu_profiles():
    """Every comparison of the ledger rests on three training seeds, on the CPU default and on the
    gpu profile; the committed dvc.yaml lists each replica as an output of its model's train and
    evaluate stages, and a dvc.yaml written for the gpu profile does too."""
    import yaml
    from bcos_lib.core.config import load_params
    from bcos_lib.core.paths import project_root
    keys = _claim_models()
    assert {"bcos_b1", "coda_t100", "bcosified_cnn", "bcos_cnn_scratch", "std_cnn", "lwta_cnn"} <= set(keys)
    committed = yaml.safe_load((project_root() / "dvc.yaml").read_text())["stages"]
    def outs(stage: dict) -> list[str]:
        return [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]

    for profile in ("default", "gpu"):
        p = load_params(None, profile)
        for key in keys:
            seeds = p.models[key].seeds
            assert len(seeds) >= 3 and all(f"{key}_s{s}" in p.models for s in seeds if s != p.base.seed), (profile, key)
    for key in keys:
        assert {f"models/{key}_s1.pt", f"models/{key}_s2.pt"} <= set(outs(committed[f"train-{key}"])), key


def test_a_dvc_yaml_written_for_the_gpu_profile_lists_the_replicas(tmp_path):
    import yaml
    from bcos_lib.core.config import set_profile
    from bcos_lib.core.paths import project_root
    from bcos_lib.dvcgen import render
    path = tmp_path / "params.yaml"
    path.write_text((project_root() / "params.yaml").read_text())
    set_profile(path, "gpu")
    stages = yaml.safe_load(render(project_root(), path))["stages"]
    for key in _claim_models():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages[f"train-{key}"]["outs"]]
        assert f"models/{key}_s1.pt" in outs and f"models/{key}_s2.pt" in outs, (key, outs)

def test_the_summary_is_the_headline_claims_estimate_and_lower_bound(tmp_path, monkeypatch):
    """results/summary.json (dvc exp show's `margin`, `margin_low`) is the ledger's central claim,
    both sides scored on the same samples: not a comparison of two means from different pools."""
    import dataclasses
    import json
    from bcos_lib.stages import claims as stage
    head = dataclasses.replace(LOC, headline=True)
    monkeypatch.setattr(stage, "all_claims", lambda: [("m", head)])
    (tmp_path / "results").mkdir()
    stage.run(tmp_path, _paired_results(0.1), log=lambda s: None)
    row = json.loads((tmp_path / "results" / "claims.json").read_text())["claims"][0]
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary == {"margin": round(row["estimate"], 4), "margin_low": round(row["ci_low"], 4)}
    assert summary["margin"] == pytest.approx(0.1, abs=0.02)
    # no headline claim, or two of them
    assert stage.summary({"claims": [{**row, "headline": False}]}) == {}
    with pytest.raises(ValueError, match="more than one"):
        stage.summary({"claims": [row, row]})


def test_exactly_one_declared_claim_is_the_headline():
    from bcos_lib.stages.claims import all_claims
    assert [c.id for _, c in all_claims() if c.headline] == ["bcos.localisation"]


def test_the_ledger_ends_with_the_training_length_of_its_models_and_the_readme_copies_it():
    from bcos_lib.readme import claims_table_of
    from bcos_lib.readme import TRAINING_LENGTH
    from bcos_lib.stages.claims import ledger_text
    row = evaluate_claim(LOC, _paired_results(0.1))
    data = {"claims": [row], "reproduced": 1}
    conv = {"a": {"epochs": 4, "accuracy": 85.0, "long_epochs": 12, "long_accuracy": 87.5}}
    text = ledger_text(data, conv)
    assert "| `a` | 4 | 85.00 | 12 | 87.50 | +2.50 (under-trained) |" in text
    assert "Not measured: `b`." in text
    readme = claims_table_of(text)
    claims_rows = [line for line in readme.split(TRAINING_LENGTH)[0].splitlines() if line.startswith("|")]
    assert len(claims_rows) == 3 and "a beats b" in claims_rows[2]   # header, rule, the claim: no paragraph lines
    assert readme.split(TRAINING_LENGTH)[1].strip().splitlines()[-1].startswith("| `a` | 4 |")
    assert TRAINING_LENGTH not in claims_table_of(ledger_text(data))   # no check measured: no block


def test_the_fidelity_block_sets_the_official_choice_beside_ours_and_flags_an_earlier_training():
    from bcos_lib.stages.claims import FIDELITY, fidelity_text
    fid = {"v1": {"model": "a", "options": {"input_norm": "layer"}, "official": "normalised in front",
                  "pipeline": {"options": {"input_norm": "fold"}, "test_accuracy": 90.0, "loc": 0.7},
                  "variant": {"test_accuracy": 88.5, "loc": 0.65}},
           "v2": {"model": "b", "options": {"period": 3}, "official": "two of three",
                  "pipeline": {"options": {"period": 2}, "test_accuracy": 70.0},
                  "variant": {"test_accuracy": 71.0}}}
    res = _paired_results(0.1)                          # a and b at 90.0 % now: b was retrained since
    text = fidelity_text(fid, res)
    assert text.startswith(FIDELITY)
    assert "| `a` | `input_norm` fold → layer (normalised in front) | 90.00 → 88.50 | loc 0.700 → 0.650 |" in text
    assert "to be measured again: `b` (v2)." in text and "| `b` |" not in text
    assert fidelity_text({}, res) == ""
    # the same settings trained on another machine: kept, with the pipeline model's accuracy now
    fid["v1"]["pipeline"]["test_accuracy"] = 89.7
    fid["v1"]["settings"] = fid["v2"]["settings"] = "f"
    text = fidelity_text(fid, res, {"a": "f", "b": "f"})
    assert "| `a` | `input_norm` fold → layer (normalised in front) | 89.70 → 88.50 |" in text
    assert "trained with the same settings on another, now has: `a` 89.70 → 90.00 %." in text
    assert "`b` (v2)." in text    # 20 points away with the same settings: the training code changed


def test_the_training_length_names_the_checks_made_on_another_machine():
    from bcos_lib.stages.claims import training_length_text
    conv = {"a": {"epochs": 4, "accuracy": 89.8, "long_epochs": 12, "long_accuracy": 92.0},
            "b": {"epochs": 4, "accuracy": 90.0, "long_epochs": 12, "long_accuracy": 90.5}}
    text = training_length_text(conv, ["a", "b"], [], {"a": 90.0, "b": 90.0})
    assert "whose accuracy the pipeline's model now differs from: `a` 89.80 → 90.00 %." in text
    assert "| `a` | 4 | 89.80 | 12 | 92.00 | +2.20 (under-trained) |" in text
    assert "another machine" not in training_length_text(conv, ["a", "b"], [], {"a": 89.8, "b": 90.0})
