"""A model's seed replicas run side by side on the CPU (bcos_lib.core.members): one process and one
thread each, so what they write does not depend on how many run at once."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from bcos_lib.core import members, pipeline
from bcos_lib.core.config import ConfigError
from bcos_lib.stages import evaluate as evaluate_stage
from bcos_lib.stages import train as train_stage

REPO = Path(__file__).resolve().parents[1]
SMALL = {"channels": [8, 16, 16], "strides": [1, 2, 2]}


def write_params(path: Path, workers: int, over: dict | None = None) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"].update(device="cpu", num_threads=2, profile="tiny", workers=workers)
    raw["models"] = {"std_cnn": {"arch": "std_cnn", "kwargs": dict(SMALL), "seeds": [0, 1]},
                     "lone": {"arch": "std_cnn", "kwargs": dict(SMALL)}}
    raw["profiles"]["tiny"] = {"data": {"train_subset": 2000, "test_subset": 200},
                               "train": {"epochs": 2, "batch_size": 50, "lr": 0.005, "checkpoint_every": 1000},
                               "evaluate": {"n_grids": 2, "grid_size": 2, "attributions": ["ixg"],
                                            "metrics": ["localisation"], "min_confidence": 0.0}}
    for key, value in (over or {}).items():
        raw["models"][key].update(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def setup(tmp: Path, workers: int, over: dict | None = None):
    params = write_params(tmp / "params.yaml", workers, over)
    return pipeline.setup("tiny", output_dir=str(tmp / "out"), params_path=str(params))


def test_who_runs_side_by_side(tmp_path):
    run = setup(tmp_path, workers=0)
    assert members.side_by_side(run, "std_cnn") and members.side_by_side(run, "std_cnn_s1")
    assert not members.side_by_side(run, "lone")   # no seeds: the stage's own process, as before
    assert members.worker_count(run, 3) == min(3, (os.cpu_count() or 1) + 1)
    run.params.base.workers = 1
    assert members.worker_count(run, 2) == 1


@pytest.mark.slow
def test_replicas_write_the_same_bytes_one_or_two_at_a_time(tmp_path, monkeypatch):
    """One at a time in spawned processes, two at a time in forked ones: the same bytes."""
    logs: dict[int, list[str]] = {}
    outs = {}
    for workers in (1, 2):
        monkeypatch.setenv("BCOS_MEMBERS_START", "spawn" if workers == 1 else "fork")
        run = setup(tmp_path / f"w{workers}", workers)
        logs[workers] = []
        got = members.run_members(train_stage, run, ["std_cnn", "std_cnn_s1", "lone"], log=logs[workers].append,
                                  progress=False)
        assert list(got) == ["std_cnn", "std_cnn_s1", "lone"]
        assert got["std_cnn_s1"]["seed"] == 1 and got["std_cnn"]["seed"] == 0
        ev = members.run_members(evaluate_stage, run, ["std_cnn", "std_cnn_s1"], log=logs[workers].append)
        assert ev["std_cnn_s1"] == json.loads((run.out / "results/evaluate/std_cnn_s1/metrics.json").read_text())
        outs[workers] = run.out
    assert any(line.startswith("2 models side by side, 1 at a time") for line in logs[1])
    assert any(line.startswith("2 models side by side, 2 at a time") for line in logs[2]) or (os.cpu_count() or 1) < 2
    # each member's own log reaches the stage's log, marked with its key
    assert any(line.startswith("[std_cnn_s1] ") and "test accuracy" in line for line in logs[2])
    for rel in ("models/std_cnn.pt", "models/std_cnn_s1.pt", "results/train/std_cnn_s1/history.csv",
                "results/evaluate/std_cnn_s1/tables/localisation.csv"):
        assert (outs[1] / rel).read_bytes() == (outs[2] / rel).read_bytes(), rel
    # the comparison can fail: the two seeds differ
    assert (outs[2] / "models/std_cnn.pt").read_bytes() != (outs[2] / "models/std_cnn_s1.pt").read_bytes()


def test_member_logs_follow_the_keys_not_the_finishing_order(tmp_path, monkeypatch):
    """The stage's log is a DVC output (the executed notebook): the first key's lines come first
    even when its process ends last."""
    import time
    import types
    monkeypatch.setenv("BCOS_MEMBERS_START", "fork")
    run = setup(tmp_path, workers=2)
    stage = types.ModuleType("bcos_lib.stages.fake")

    def fake_run(run, key, **kwargs):
        time.sleep(1.5 if key == "std_cnn" else 0.0)   # the first member finishes last
        print(f"done {key}")

    stage.run = fake_run
    stage.read_result = lambda run, key: key
    logs: list[str] = []
    got = members.run_members(stage, run, ["std_cnn", "std_cnn_s1"], log=logs.append)
    assert got == {"std_cnn": "std_cnn", "std_cnn_s1": "std_cnn_s1"}
    assert [line for line in logs if line.startswith("[")] == ["[std_cnn] done std_cnn", "[std_cnn_s1] done std_cnn_s1"]


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_failing_member_names_itself(tmp_path, monkeypatch, start):
    monkeypatch.setenv("BCOS_MEMBERS_START", start)
    run = setup(tmp_path, workers=2)
    # no data summary, no trained model: evaluating the replicas fails in their own processes
    with pytest.raises(members.MemberError, match=r"evaluate of std_cnn \(and std_cnn_s1\) failed in its own process") as err:
        members.run_members(evaluate_stage, run, ["std_cnn", "std_cnn_s1"], log=lambda s: None)
    assert "dvc repro train-std_cnn" in str(err.value)   # the member's own error, with its fix


def test_workers_is_checked_and_reruns_nothing(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        write_params(tmp_path / "p.yaml", workers=-1)
        pipeline.setup("tiny", params_path=str(tmp_path / "p.yaml"))
    from bcos_lib.settings import stage_settings
    a = stage_settings(setup(tmp_path / "a", workers=1).params)
    b = stage_settings(setup(tmp_path / "b", workers=3).params)
    assert a == b   # the number of processes at once changes no result, so no stage's settings
