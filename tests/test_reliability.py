"""Reliability of training (issue 4): exact resume, atomic writes, determinism.

* A train stage killed with SIGKILL in the middle of an epoch resumes from its last
  checkpoint and ends with byte-identical metrics.json, history.csv and model file to an
  uninterrupted run (subprocesses, CPU, one thread each).
* A crash while a checkpoint is being written leaves the previous checkpoint intact
  (temporary file + rename), both for a SIGKILL inside ``torch.save`` and for an exception.
* ``fit`` interrupted at any step (mid-epoch, at an epoch's end) resumes exactly, for
  both model families and both optimisers; a checkpoint of another configuration is ignored.
* Two runs of the tiny train stage with the same seed write byte-identical files, and a
  different seed does not; every metrics file (train, explain, evaluate) records the seed,
  the profile and the library versions.

Everything is written under pytest's tmp_path; models are tiny (4 conv layers of 8–16 channels).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bcos_lib import create_model
from bcos_lib.core import pipeline
from bcos_lib.core.config import TrainConfig, deep_merge
from bcos_lib.core.data import load_fashion_mnist, subset
from bcos_lib.stages import evaluate as evaluate_stage
from bcos_lib.stages import explain as explain_stage
from bcos_lib.stages import train as train_stage
from bcos_lib.train import fit, load_train_checkpoint
from bcos_lib.core.utils import atomic_write, set_seed, versions, write_json

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "fashion-mnist"
SMALL = {"channels": [8, 8, 16, 16], "strides": [1, 2, 1, 2]}

pytestmark = pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte").is_file(),
                                reason="Fashion-MNIST is not in data/fashion-mnist (run `make data`)")


def write_params(path: Path, keys: tuple[str, ...] = ("std_cnn",), seed: int = 0, over: dict | None = None) -> Path:
    """The project's params.yaml with the tiny profile, small CPU models ``keys`` and ``over`` merged in."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"].update(seed=seed, device="cpu", num_threads=1, profile="tiny")
    raw["models"] = {k: {"arch": k, "kwargs": dict(SMALL)} for k in keys}
    path.write_text(yaml.safe_dump(deep_merge(raw, over or {}), sort_keys=False))
    return path


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the train stage in a subprocess
CHILD = r"""
import pathlib, sys, time
import torch
torch.set_num_threads(1)
from bcos_lib.core import pipeline
from bcos_lib.stages import train as stage

params, out, key, mode = sys.argv[1:5]
if mode.startswith("slow:"):            # report each step in a file and sleep, so the parent can kill mid-epoch
    marker, real_fit = pathlib.Path(mode[5:]), stage.fit
    def slow_fit(*args, **kw):
        def on_step(step):
            marker.write_text(str(step))
            time.sleep(0.3)
        return real_fit(*args, on_step=on_step, **kw)
    stage.fit = slow_fit
elif mode.startswith("die-in-save:"):   # SIGKILL ourselves half-way through the n-th torch.save
    import io, os, signal
    n, real_save, calls = int(mode.split(":")[1]), torch.save, []
    def dying_save(obj, f, *args, **kw):
        calls.append(1)
        if len(calls) == n:
            buf = io.BytesIO()
            real_save(obj, buf)
            data = buf.getvalue()[: len(buf.getvalue()) // 2]
            if isinstance(f, (str, os.PathLike)):
                pathlib.Path(f).write_bytes(data)
            else:
                f.write(data)
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kw)
    torch.save = dying_save
run = pipeline.setup("tiny", output_dir=out, params_path=params)
stage.run(run, key, progress=False)
"""
KEY = "bcos_cnn"
STEPS_PER_EPOCH = 10    # 600 training images (set here, whatever the tiny profile uses), batch size 64
KILL_AFTER_STEP = 14    # epoch 2, step 4; the last checkpoint before it is at step 12 (every 3 steps)
RESUME_PARAMS = {"models": {KEY: {"train": {"epochs": 2, "checkpoint_every": 3, "batch_size": 64}}},
                 "profiles": {"tiny": {"data": {"train_subset": 600}}}}


def start_child(params: Path, out: Path, mode: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0"}
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(params), str(out), KEY, mode], cwd=out.parent,
                                env=env, stdout=f, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text()
    assert proc.returncode == 0, f"the train stage failed (rc {proc.returncode}):\n{text[-3000:]}"
    return text


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never interrupted (started at once; waited for on first use)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    params = write_params(tmp / "params.yaml", (KEY,), over=RESUME_PARAMS)
    out = tmp / "out"
    out.mkdir()
    proc = start_child(params, out, "-", tmp / "log.txt")
    done: list[Path] = []

    def result() -> Path:
        if not done:
            finish(proc, tmp / "log.txt")
            done.append(out)
        return out
    yield result
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def assert_same_outputs(a: Path, b: Path) -> None:
    for rel in (f"results/train/{KEY}/metrics.json", f"results/train/{KEY}/history.csv", f"models/{KEY}.pt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between {a} and {b}"


@pytest.mark.slow
@pytest.mark.xdist_group("train_subprocess")
def test_sigkill_mid_epoch_resumes_to_identical_outputs(tmp_path, uninterrupted):
    params = write_params(tmp_path / "params.yaml", (KEY,), over=RESUME_PARAMS)
    out, marker = tmp_path / "out", tmp_path / "step.txt"
    out.mkdir()
    ckpt = out / "checkpoints" / f"{KEY}.ckpt"
    proc = start_child(params, out, f"slow:{marker}", tmp_path / "killed.txt")
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed:\n"
                            + (tmp_path / "killed.txt").read_text()[-3000:])
            assert time.monotonic() < deadline, "the run did not reach the step to kill it at in 300 s"
            try:
                step = int(marker.read_text() or 0)
            except (FileNotFoundError, ValueError):
                step = 0
            if step >= KILL_AFTER_STEP and ckpt.is_file():
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results" / "train" / KEY / "metrics.json").exists()
    assert not (out / "models" / f"{KEY}.pt").exists()
    state = load_train_checkpoint(ckpt)["state"]
    # killed in the middle of epoch 2, after the checkpoint: the steps since then are lost and redone
    assert state["epoch"] == 1 and 0 < state["step_in_epoch"] < STEPS_PER_EPOCH, state
    assert state["global_step"] < KILL_AFTER_STEP and len(state["history"]) == 1

    log = finish(start_child(params, out, "-", tmp_path / "resumed.txt"), tmp_path / "resumed.txt")
    assert f"resuming from checkpoints/{KEY}.ckpt: epoch 2, step {state['step_in_epoch']}" in log  # no absolute path
    assert not ckpt.exists(), "the checkpoint is deleted once the model is written"
    assert_same_outputs(out, uninterrupted())


@pytest.mark.slow
@pytest.mark.xdist_group("train_subprocess")
def test_sigkill_inside_torch_save_keeps_previous_checkpoint(tmp_path, uninterrupted):
    params = write_params(tmp_path / "params.yaml", (KEY,), over=RESUME_PARAMS)
    out = tmp_path / "out"
    out.mkdir()
    # the 2nd torch.save is the checkpoint of step 6; the process dies with half of it written
    proc = start_child(params, out, "die-in-save:2", tmp_path / "killed.txt")
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.txt").read_text()[-3000:]
    ckpt_dir = out / "checkpoints"
    leftovers = [p for p in ckpt_dir.iterdir() if p.name != f"{KEY}.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].suffix == ".tmp", leftovers  # the half-written temporary file
    assert load_train_checkpoint(ckpt_dir / f"{KEY}.ckpt")["state"]["global_step"] == 3  # the previous one, whole

    log = finish(start_child(params, out, "-", tmp_path / "resumed.txt"), tmp_path / "resumed.txt")
    assert "resuming from" in log and "epoch 1, step 3" in log
    assert_same_outputs(out, uninterrupted())


# ----------------------------------------------------------------------------- atomic writes, in process
@pytest.fixture(scope="module")
def small_data():
    train = subset(load_fashion_mnist(DATA, "train"), 300, seed=0)
    test = subset(load_fashion_mnist(DATA, "test"), 100, seed=0)
    return train, test


def new_model(arch: str, seed: int = 0) -> torch.nn.Module:
    set_seed(seed)
    return create_model(arch, **SMALL)


def test_exception_inside_torch_save_keeps_previous_checkpoint(tmp_path, small_data, monkeypatch):
    ckpt = tmp_path / "ckpt" / "m.ckpt"
    real_save, calls, before = torch.save, [], {}

    def failing_save(obj, f, *args, **kw):
        calls.append(1)
        if len(calls) == 2:
            before["bytes"] = ckpt.read_bytes()
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[:1000])  # a partial archive, then the "disk is full"
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    cfg = TrainConfig(epochs=1, batch_size=32, checkpoint_every=3)
    with pytest.raises(OSError, match="No space left"):
        fit(new_model("std_cnn"), *small_data, cfg, checkpoint_path=ckpt, fingerprint="f", progress=False,
            log=lambda s: None)
    assert ckpt.read_bytes() == before["bytes"]
    assert [p.name for p in ckpt.parent.iterdir()] == ["m.ckpt"], "the temporary file is removed"
    assert load_train_checkpoint(ckpt)["state"]["global_step"] == 3


@pytest.mark.parametrize("writer", ["save_model", "write_json", "atomic_write"])
def test_failed_write_leaves_previous_file_intact(tmp_path, writer, monkeypatch):
    path = tmp_path / "out" / "file"
    model = new_model("bcos_cnn")
    write = {"save_model": lambda: pipeline.save_model(model, path, metrics={"a": 1}),
             "write_json": lambda: write_json({"a": 1}, path),
             "atomic_write": lambda: atomic_write(path, lambda tmp: Path(tmp).write_text("new"))}[writer]
    write()
    old = path.read_bytes()

    def crash(*args, **kw):
        raise KeyboardInterrupt  # what a Ctrl-C between writing and renaming looks like

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write()
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == ["file"]


# ----------------------------------------------------------------------------- exact resume of fit, in process
class Interrupted(Exception):
    pass


@pytest.mark.parametrize("arch, optimizer, schedule, stop_at, unit", [
    ("std_cnn", "adam", "cosine", 4, None),      # mid-epoch 1, during the warm-up (last checkpoint at step 3)
    ("bcos_cnn", "adam", "cosine", 10, None),    # the last step of epoch 1, before the epoch's row is written
    ("bcos_cnn", "sgd", "constant", 14, None),   # mid-epoch 2: the history and the epoch's running sums come back
    ("std_cnn", "sgd", "cosine", 17, None),      # momentum buffers and the cosine learning rate of step 16
    ("csg_std_cnn", "adam", "cosine", 14, "epoch"),  # mid-epoch 2, a gated (CSG) epoch: the gate, its renormalisation
    ("csg_bcos_cnn", "sgd", "cosine", 10, "epoch"),  # the last standard step before the first gated epoch
    ("csg_std_cnn", "adam", "cosine", 15, "step"),   # epoch 2 alternating by batch: resumed on a standard step
])
def test_fit_interrupted_resumes_exactly(tmp_path, small_data, arch, optimizer, schedule, stop_at, unit):
    """10 steps per epoch, a checkpoint every 3 steps, 5 warm-up steps; for the gated (CSG) models
    the method's hooks: epoch 1 standard, epoch 2 gated (the gate is in the state_dict), every step
    of it or every other one (``unit: step``)."""
    from bcos_lib.methods.csg.model import CSGOptions, training
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, optimizer=optimizer, schedule=schedule, warmup_steps=5,
                      checkpoint_every=3)

    def hooks(model):
        if not arch.startswith("csg_"):
            return None
        return training(model, CSGOptions(warmup_epochs=1, period=1 if unit == "epoch" else 2, unit=unit), cfg)

    model = new_model(arch)
    reference = fit(model, *small_data, cfg, progress=False, log=lambda s: None, hooks=hooks(model))
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    ckpt, logs = tmp_path / "m.ckpt", []

    def interrupt(step: int) -> None:
        if step == stop_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        first = new_model(arch)
        fit(first, *small_data, cfg, checkpoint_path=ckpt, fingerprint="f", progress=False,
            log=logs.append, on_step=interrupt, hooks=hooks(first))
    resumed_model = new_model(arch, seed=123)  # other initial weights and RNG state: all must come from the checkpoint
    history = fit(resumed_model, *small_data, cfg, checkpoint_path=ckpt, fingerprint="f", progress=False,
                  log=logs.append, hooks=hooks(resumed_model))
    assert any(line.startswith("resuming from") for line in logs)
    assert history == reference
    state = resumed_model.state_dict()
    assert state.keys() == expected.keys()
    for k, value in expected.items():  # weights, BN running statistics and counters
        assert torch.equal(state[k], value), k


def test_checkpoint_of_another_configuration_is_ignored(tmp_path, small_data):
    cfg = TrainConfig(epochs=1, batch_size=32, checkpoint_every=2)
    ckpt, logs = tmp_path / "m.ckpt", []

    def interrupt(step: int) -> None:
        if step == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(new_model("std_cnn"), *small_data, cfg, checkpoint_path=ckpt, fingerprint="lr=1e-3", progress=False,
            log=logs.append, on_step=interrupt)
    other = TrainConfig(epochs=1, batch_size=32, checkpoint_every=2, lr=3e-3)
    history = fit(new_model("std_cnn"), *small_data, other, checkpoint_path=ckpt, fingerprint="lr=3e-3",
                  progress=False, log=logs.append)
    assert any(line.startswith("discarding") and "another configuration" in line for line in logs)
    assert history == fit(new_model("std_cnn"), *small_data, other, progress=False, log=lambda s: None)
    assert load_train_checkpoint(ckpt)["fingerprint"] == "lr=3e-3"


# ----------------------------------------------------------------------------- determinism and provenance
def train_once(tmp: Path, seed: int, keys: tuple[str, ...] = ("std_cnn", "bcos_cnn"), over: dict | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    params = write_params(tmp / "params.yaml", keys, seed=seed, over=over)
    run = pipeline.setup("tiny", output_dir=str(tmp / "out"), params_path=str(params))
    for key in keys:
        train_stage.run(run, key, progress=False, log=lambda s: None)
    return tmp / "out"


def test_train_stage_is_deterministic(tmp_path):
    a, b, c = (train_once(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    for key in ("std_cnn", "bcos_cnn"):
        for rel in (f"results/train/{key}/metrics.json", f"results/train/{key}/history.csv", f"models/{key}.pt"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel}: two runs with seed 0 differ"
        # the comparison can fail: another seed gives other numbers
        assert (a / f"results/train/{key}/history.csv").read_bytes() != (c / f"results/train/{key}/history.csv").read_bytes()


@pytest.mark.slow
def test_every_metrics_file_records_seed_profile_and_versions(tmp_path):
    """train, explain and evaluate record the seed, profile and versions; explain and evaluate are deterministic."""
    seed = 3
    # long enough that the models classify some test images of ≥ 4 classes (the 2×2 grids of the tiny profile)
    over = {"profiles": {"tiny": {"train": {"epochs": 3, "lr": 0.01}}}}
    out = train_once(tmp_path / "a", seed, over=over)
    run = pipeline.setup("tiny", output_dir=str(out), params_path=str(tmp_path / "a" / "params.yaml"))
    snapshots = []
    for _ in range(2):
        for key in ("std_cnn", "bcos_cnn"):
            explain_stage.run(run, key, log=lambda s: None)
            evaluate_stage.run(run, key, log=lambda s: None)
        snapshots.append({k: v for k, v in files(out / "results").items()
                          if k.startswith(("explain/", "evaluate/"))})  # the timings live in results/timing/
    assert snapshots[0] == snapshots[1], "explain/evaluate outputs differ between two runs"
    for key in ("std_cnn", "bcos_cnn"):
        for stage in ("train", "explain", "evaluate"):
            m = json.loads((out / "results" / stage / key / "metrics.json").read_text())
            assert m["seed"] == seed, (stage, key)
            assert m["profile"] == "tiny", (stage, key)
            assert m["versions"] == versions(), (stage, key)
        ev = json.loads((out / "results" / "evaluate" / key / "metrics.json").read_text())
        assert ev["localisation"]["grid"]["seed"] == seed and ev["deletion"]["settings"]["seed"] == seed
    shutil.rmtree(tmp_path / "a")


@pytest.mark.parametrize("every, tested", [(0, [3]), (1, [1, 2, 3]), (2, [2, 3])])
def test_test_every_tests_the_chosen_epochs_and_always_the_last(small_data, every, tested):
    """train.test_every: the test columns on every row, measured after every n-th epoch and the
    last (0: the last only), and the same weights whatever the setting (testing draws no randomness)."""
    import math
    import pandas as pd
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.005, test_every=every)
    model = new_model("std_cnn")
    lines: list[str] = []
    history = pd.DataFrame(fit(model, *small_data, cfg, progress=False, log=lines.append))
    assert list(history.columns[:4]) == ["epoch", "train_loss", "train_accuracy", "lr"]
    assert history.dropna(subset=["test_accuracy"])["epoch"].tolist() == tested
    assert history["test_loss"].notna().tolist() == history["test_accuracy"].notna().tolist()
    assert all(("test_accuracy" in line) == (i + 1 in tested) for i, line in enumerate(lines))
    assert not any("nan" in line for line in lines)
    reference = new_model("std_cnn")
    fit(reference, *small_data, TrainConfig(epochs=3, batch_size=50, lr=0.005, test_every=1), progress=False,
        log=lambda s: None)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert not math.isnan(history["test_accuracy"].iloc[-1])
