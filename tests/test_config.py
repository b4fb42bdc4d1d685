"""params.yaml validation: every mistake names its key, profiles merge, the real file is valid."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bcos_lib.core.config import ConfigError, deep_merge, load_params, parse_params, set_profile
from bcos_lib.core.paths import project_root
from _make import make


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
    (("evaluate", "attributions"), "own", "evaluate.attributions"),
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
    for k in sweep:   # (a seed replica takes its model's entry)
        own = raw["models"][p.models[k].replica_of or k]["train"]
        assert p.train_config(k).epochs == own["epochs"] and p.train_config(k).batch_size == own["batch_size"]
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
    assert {k for k, e in p.models.items() if not e.replica_of} == {"std_cnn", "bcos_cnn"}


# ----------------------------------------------------------------------------- `make repro PROFILE=…`
def test_set_profile_changes_that_line_only(tmp_path):
    """`make repro PROFILE=x` runs `python -m bcos_lib.core.config --set-profile x`: the profile line
    changes, every comment and every other byte of params.yaml stay."""
    path = tmp_path / "params.yaml"
    text = (project_root() / "params.yaml").read_text()
    path.write_text(text)
    assert set_profile(path, "tiny") is True
    new = path.read_text()
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert len(text.splitlines()) == len(new.splitlines())
    assert len(changed) == 1 and changed[0][1].strip().startswith("profile: tiny"), changed
    assert changed[0][1].split("profile:")[0] == changed[0][0].split("profile:")[0]  # same indent
    assert load_params(path).base.profile == "tiny"
    assert set_profile(path, "tiny") is False and path.read_text() == new
    assert set_profile(path, "default") is True and path.read_text() == text


def test_set_profile_checks_before_it_writes(tmp_path):
    path = tmp_path / "params.yaml"
    text = (project_root() / "params.yaml").read_text()
    path.write_text(text)
    with pytest.raises(ConfigError, match="unknown profile 'gpuu'; defined in `profiles`: default, tiny, gpu"):
        set_profile(path, "gpuu")
    assert path.read_text() == text
    path.write_text(text.replace("  epochs: 4\n", "  epoch: 4\n", 1))
    with pytest.raises(ConfigError, match=r"unknown key train\.epoch"):
        set_profile(path, "tiny")
    assert "profile: default" in path.read_text()


def test_config_command_prints_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((project_root() / "params.yaml").read_text())
    ok = subprocess.run([sys.executable, "-m", "bcos_lib.core.config", "--params", str(path), "--set-profile", "gpu"],
                        capture_output=True, text=True, cwd=project_root())
    assert ok.returncode == 0 and ok.stdout.strip() == f"{path}: base.profile is gpu", ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, "-m", "bcos_lib.core.config", "--params", str(path), "--set-profile", "huge"],
                         capture_output=True, text=True, cwd=project_root())
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"error: {path}: unknown profile 'huge'; defined in `profiles`: default, tiny, gpu, smoke "
        "(nothing was changed: fix it and run again)"]


def test_make_repro_profile_sets_the_profile_before_dvc_repro():
    """What `make repro PROFILE=tiny` runs (make -n: nothing runs; -o data -o setup: not the set-up):
    dvc.yaml regenerated, the profile set, dvc.yaml written again for it (a profile may train more seed
    replicas), then dvc repro."""
    def commands(*args: str) -> list[str]:
        p = make(["-n", "-o", "data", "-o", "setup", "repro", *args], project_root(), check=True)
        return p.stdout.strip().splitlines()

    with_profile = commands("PROFILE=tiny")
    assert len(with_profile) == 5, with_profile
    assert with_profile[0].endswith("/python -m bcos_lib.dvcgen"), with_profile
    assert with_profile[1].endswith('/python scripts/repro_notice.py tiny --confirm ""'), with_profile
    assert with_profile[2].endswith("/python -m bcos_lib.core.config --set-profile tiny"), with_profile
    assert with_profile[3].endswith("/python -m bcos_lib.dvcgen"), with_profile
    assert with_profile[4].endswith("/dvc repro"), with_profile
    without = commands()
    assert len(without) == 2 and without[1].endswith("/dvc repro"), without


def test_make_repro_with_another_profile_says_what_it_overwrites_and_stops_unless_confirmed(tmp_path):
    """Without CONFIRM=1 and without a terminal, `make repro PROFILE=tiny` prints what it would
    overwrite and how long it takes, and stops before params.yaml or anything else changes."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("Makefile", "params.yaml", "dvc.yaml"):
        shutil.copy2(project_root() / name, root / name)
    for name in ("bcos_lib", "scripts", "notebooks"):
        (root / name).symlink_to(project_root() / name)
    before = (root / "params.yaml").read_bytes()
    venv = Path(sys.executable).parent.parent
    p = make(["-o", "data", "-o", "setup", "repro", "PROFILE=tiny", f"VENV={venv}"], root, stdin=subprocess.DEVNULL,
             timeout=300)
    assert p.returncode != 0
    import yaml
    n = len(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    assert f"reruns all {n} stages, about 39 minutes" in p.stdout, p.stdout + p.stderr
    assert "It overwrites the committed results: models/, results/, figures/" in p.stdout
    assert "To go on: make repro PROFILE=tiny CONFIRM=1" in p.stderr
    assert "Running stage" not in p.stdout + p.stderr
    assert (root / "params.yaml").read_bytes() == before
    assert sorted(q.name for q in root.iterdir()) == ["Makefile", "bcos_lib", "dvc.yaml", "notebooks", "params.yaml",
                                                      "scripts"]


# ----------------------------------------------------------------------------- seed replicas
def test_replicas_take_replica_evaluate_and_the_model_keeps_its_own(raw):
    """`replica_evaluate` overrides `evaluate` for the seed replicas only (the claims ledger reads
    a few metrics of them); the model itself and its training are untouched, and the profile's
    overrides still apply underneath."""
    r = copy.deepcopy(raw)
    r["models"]["std_cnn"]["seeds"] = [0, 1]
    r["models"]["std_cnn"]["replica_evaluate"] = {"metrics": ["paired_localisation"], "n_grids": 7}
    p = parse_params(r)
    assert p.evaluate_config("std_cnn_s1").metrics == ["paired_localisation"]
    assert p.evaluate_config("std_cnn_s1").n_grids == 7
    assert p.evaluate_config("std_cnn").metrics == parse_params(raw).evaluate_config("std_cnn").metrics
    assert p.train_config("std_cnn_s1").seed == 1 and p.train_config("std_cnn_s1").subset == p.train_config("std_cnn").subset
    tiny = parse_params(r, "tiny")
    assert tiny.evaluate_config("std_cnn_s1").metrics == ["paired_localisation"]
    assert tiny.evaluate_config("std_cnn_s1").grid_size == tiny.evaluate_config("std_cnn").grid_size == 2


def test_replica_evaluate_without_seeds_is_refused(raw):
    r = copy.deepcopy(raw)
    r["models"]["coda_hybrid"]["replica_evaluate"] = {"metrics": ["localisation"]}
    with pytest.raises(ConfigError, match=r"models\.coda_hybrid\.replica_evaluate: the entry has no `seeds`"):
        parse_params(r)
