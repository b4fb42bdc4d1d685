"""params.yaml validation: every mistake names its key, profiles merge, the real file is valid."""
from __future__ import annotations

import copy

import pytest
import yaml

from bcos_lib.config import ConfigError, deep_merge, load_params, parse_params
from bcos_lib.paths import project_root


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((project_root() / "params.yaml").read_text())


def test_project_params_are_valid_in_every_profile(raw):
    for profile in ["default", *raw["profiles"]]:
        p = load_params(profile=profile)
        assert p.base.profile == profile
        assert {"std_cnn", "bcos_cnn"} <= set(p.models)


def test_tiny_profile_overrides(raw):
    p = parse_params(raw, "tiny")
    assert p.train.epochs == raw["profiles"]["tiny"]["train"]["epochs"]
    assert p.data.train_subset == raw["profiles"]["tiny"]["data"]["train_subset"]
    assert "weight_decay" not in raw["profiles"]["tiny"]["train"]
    assert p.train.weight_decay == raw["train"]["weight_decay"]  # untouched keys keep the file's value


@pytest.mark.parametrize("path, value, needle", [
    (("train", "epochz"), 3, "train.epochz"),
    (("train", "epochs"), "three", "train.epochs"),
    (("train", "lr"), True, "train.lr"),
    (("evaluate", "methods"), "own", "evaluate.methods"),
    (("base", "device"), "tpu", "base.device"),
    (("bogus_section",), {}, "bogus_section"),
    (("models", "bcos_cnn", "kwargs", "bee"), 2.0, "models.bcos_cnn.kwargs.bee"),
    (("models", "bcos_cnn", "arch"), "bcos_cnnn", "known models"),
    (("models", "bcos_b1", "train", "epoch"), 1, "epoch"),
])
def test_bad_params_name_the_key(raw, path, value, needle):
    bad = copy.deepcopy(raw)
    d = bad
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_params(bad)


def test_unknown_profile_lists_the_defined_ones(raw):
    with pytest.raises(ConfigError, match="tiny"):
        parse_params(raw, "huge")


def test_a_broken_inactive_profile_is_reported(raw):
    bad = copy.deepcopy(raw)
    bad["profiles"]["gpu"]["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match="gpu"):
        parse_params(bad, "default")


def test_model_overrides_merge_over_the_train_section(raw):
    p = parse_params(raw)
    sweep = [k for k, m in p.models.items() if m.group == "b_sweep"]
    assert sweep, "the B sweep must be in params.yaml"
    for k in sweep:
        assert p.train_config(k).epochs == raw["models"][k]["train"]["epochs"]
        assert p.train_config(k).lr == p.train.lr


def test_deep_merge_does_not_touch_its_inputs():
    a, b = {"x": {"y": 1, "z": 2}}, {"x": {"y": 3}}
    out = deep_merge(a, b)
    assert out == {"x": {"y": 3, "z": 2}} and a == {"x": {"y": 1, "z": 2}}


def test_profile_overrides_of_models_not_defined_are_skipped(raw):
    """A profile is generic: a params.yaml whose `models` lost an entry still loads."""
    small = copy.deepcopy(raw)
    small["models"] = {k: v for k, v in raw["models"].items() if k in ("std_cnn", "bcos_cnn")}
    p = parse_params(small, "tiny")
    assert set(p.models) == {"std_cnn", "bcos_cnn"}
