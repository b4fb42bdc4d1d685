"""A training checkpoint is resumed only by the code it was written with.

The everyday pattern: a training is killed (Ctrl-C, SIGKILL), the code is fixed, the stage is
rerun.  The rerun must equal a clean run of the new code, never a mix of the two versions; with
no change in between it must equal an uninterrupted run, as before.  The project is copied to a
temporary folder (bcos_lib, the train notebook, params.yaml and a link to the data), so that its
code can be changed there; the train stage runs in a subprocess that kills itself with SIGKILL
right after a given step (after a checkpoint was written).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bcos_lib.core.config import deep_merge

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "fashion-mnist"
KEY = "bcos_cnn"
SMALL = {"channels": [8, 8, 16, 16], "strides": [1, 2, 1, 2]}
OVER = {"models": {KEY: {"train": {"epochs": 2, "checkpoint_every": 3, "batch_size": 64}}},
        "profiles": {"tiny": {"data": {"train_subset": 600, "test_subset": 200}}}}
KILL_AFTER_STEP = 14   # epoch 2; the last checkpoint before it is at step 12
OUTPUTS = (f"results/train/{KEY}/metrics.json", f"results/train/{KEY}/history.csv", f"models/{KEY}.pt")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte").is_file(),
                                                   reason="Fashion-MNIST is not in data/fashion-mnist (run `make data`)")]

CHILD = r"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from bcos_lib.core import pipeline
from bcos_lib.stages import train as stage

out, die_after = sys.argv[1], int(sys.argv[2])
if die_after:
    real_fit = stage.fit
    def dying_fit(*args, **kw):
        def on_step(step):
            if step == die_after:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_fit(*args, on_step=on_step, **kw)
    stage.fit = dying_fit
stage.run(pipeline.setup("tiny", output_dir=out), sys.argv[3], progress=False)
"""


def make_project(root: Path) -> Path:
    """A copy of the project's code with a small params.yaml (tiny profile, one small model)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "bcos_lib", root / "bcos_lib", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "notebooks").mkdir()
    shutil.copy2(REPO / "notebooks" / "20_train.ipynb", root / "notebooks")
    (root / "data").symlink_to(REPO / "data")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"].update(device="cpu", num_threads=1, profile="tiny")
    raw["models"] = {KEY: {"arch": KEY, "kwargs": dict(SMALL)}}
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(raw, OVER), sort_keys=False))
    return root


def train(project: Path, out: Path, die_after: int = 0) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(project), "BCOS_PROJECT_ROOT": str(project), "PYTHONHASHSEED": "0"}
    env.pop("BCOS_OUTPUT_ROOT", None)
    p = subprocess.run([sys.executable, "-c", CHILD, str(out), str(die_after), KEY], cwd=project, env=env,
                       capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def outputs(out: Path) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in OUTPUTS}


def change_the_schedule(project: Path) -> None:
    """What a user does between the kill and the rerun: change the learning-rate schedule."""
    f = project / "bcos_lib" / "train.py"
    text = f.read_text()
    old = "    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))\n"
    assert old in text
    f.write_text(text.replace(old, "    return cfg.lr * 0.25 * (1 + math.cos(math.pi * min(t, 1.0)))\n"))


def killed_run(project: Path, out: Path) -> None:
    rc, log = train(project, out, die_after=KILL_AFTER_STEP)
    assert rc == -signal.SIGKILL, log[-3000:]
    assert (out / "checkpoints" / f"{KEY}.ckpt").is_file()
    assert not (out / OUTPUTS[2]).exists()


def test_a_checkpoint_of_other_code_is_discarded_and_the_rerun_equals_a_clean_run(tmp_path):
    project = make_project(tmp_path / "project")
    killed_run(project, tmp_path / "out")
    change_the_schedule(project)
    rc, log = train(project, tmp_path / "out")
    assert rc == 0, log[-3000:]
    assert "resuming from" not in log
    lines = [line for line in log.splitlines() if line.startswith("discarding")]
    assert lines == [f"discarding checkpoints/{KEY}.ckpt: it was written with other code (bcos_lib, the stage "
                     f"notebook, the model it starts from or torch changed); training starts afresh"], log[-3000:]
    rc, log = train(project, tmp_path / "clean")
    assert rc == 0, log[-3000:]
    assert outputs(tmp_path / "out") == outputs(tmp_path / "clean")


def test_with_nothing_changed_the_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path):
    project = make_project(tmp_path / "project")
    killed_run(project, tmp_path / "out")
    rc, log = train(project, tmp_path / "out")
    assert rc == 0, log[-3000:]
    assert f"resuming from checkpoints/{KEY}.ckpt: epoch 2, step 2" in log, log[-3000:]
    rc, log = train(project, tmp_path / "clean")
    assert rc == 0, log[-3000:]
    assert outputs(tmp_path / "out") == outputs(tmp_path / "clean")
