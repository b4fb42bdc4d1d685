"""Speed and scale (issue 21): safe loading of shared files, data-parallel training, the bench.

Files that arrive from a DVC remote are untrusted: every ``.pt`` file the pipeline reads is
opened with ``weights_only=True``.  The tests below check that everything the stages write
(model files, training checkpoints, explanations) loads that way, and that a crafted pickle
whose ``__reduce__`` would run code is refused with an error naming the file, before the
code runs.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from bcos_lib import create_model
from bcos_lib.core.pipeline import ModelFileError, load_model, save_model
from bcos_lib.train import TrainingError, fit, load_train_checkpoint
from bcos_lib.core.config import TrainConfig
from bcos_lib.core.data import ImageDataset
from bcos_lib.core.utils import UnsafeFileError, safe_torch_load

from test_errors import have_data, params_dict, run_stage, write_params

SMALL = {"channels": [8, 8, 16, 16], "strides": [1, 2, 1, 2]}


class _RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: what an attacker's model file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _tiny_data(n: int = 64) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10, tuple("abcdefghij"))


@pytest.mark.parametrize("container", ["torch_save", "plain_pickle"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_naming_the_file(tmp_path, container):
    marker = tmp_path / "pwned"
    model = create_model("std_cnn", **SMALL)
    path = tmp_path / "std_cnn.pt"
    if container == "torch_save":  # a model file in our format with a payload next to the weights
        torch.save({"format": "bcos-companion/model-v1", "model_name": "std_cnn", "model_kwargs": SMALL,
                    "state_dict": model.state_dict(), "payload": _RunsCode(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": _RunsCode(marker)}, protocol=2))
    for load, error in ((safe_torch_load, UnsafeFileError), (load_model, UnsafeFileError),
                        (load_train_checkpoint, UnsafeFileError)):
        with pytest.raises(error) as e:
            load(path)
        assert str(path) in str(e.value) and "weights_only=True" in str(e.value), str(e.value)
        assert not marker.exists(), f"{load.__name__} ran the code in the file"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_newer_pickle_protocols_are_refused_too(tmp_path):
    """A protocol-4 pickle fails earlier (an opcode torch's safe unpickler does not know): it is
    still refused without running anything, as a damaged file named in the error."""
    marker = tmp_path / "pwned"
    path = tmp_path / "m.pt"
    path.write_bytes(pickle.dumps({"payload": _RunsCode(marker)}, protocol=4))
    for load, error in ((load_model, ModelFileError), (load_train_checkpoint, TrainingError)):
        with pytest.raises(error, match="is corrupted or truncated") as e:
            load(path)
        assert str(path) in str(e.value) and not marker.exists()


def test_saving_anything_but_plain_data_is_refused_before_writing(tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(TypeError, match=r"m.pt\['metrics'\]\['when'\] is a pathlib.*PosixPath"):
        save_model(create_model("std_cnn", **SMALL), path, metrics={"when": Path("x")})
    assert not path.exists()


def test_model_and_checkpoint_files_hold_plain_data(tmp_path):
    model = create_model("bcos_cnn", **SMALL)
    cfg = TrainConfig(epochs=1, batch_size=16, checkpoint_every=2)
    ckpt = tmp_path / "m.ckpt"
    fit(model, _tiny_data(), None, cfg, checkpoint_path=ckpt, fingerprint="f", progress=False, log=lambda s: None)
    ck = load_train_checkpoint(ckpt)   # weights_only=True
    assert ck["state"]["epoch"] == 1 and isinstance(ck["rng"], torch.Tensor)
    save_model(model, tmp_path / "bcos_cnn.pt", history=ck["state"]["history"])
    again = load_model(tmp_path / "bcos_cnn.pt")
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


@have_data
def test_stage_outputs_load_with_weights_only(tmp_path):
    """The train and explain stages' files (model, explanations) load with weights_only=True."""
    params = write_params(tmp_path / "params.yaml", params_dict(("bcos_cnn",)))
    out = tmp_path / "out"
    for stage in ("train", "explain"):
        run_stage(stage, params, out, "bcos_cnn")
    model = load_model(out / "models" / "bcos_cnn.pt")
    assert model.model_name == "bcos_cnn"
    saved = safe_torch_load(out / "results" / "explain" / "bcos_cnn" / "explanations.pt")
    assert saved["contribution_map"].ndim == 3 and saved["explainable"] is True


# ----------------------------------------------------------------------------- data-parallel training
def ddp_case():
    """A model without batch norm (each shard would normalise by its own statistics), a data set
    whose last batch splits unevenly (37 = 18 + 19 images over two processes), two epochs."""
    from bcos_lib.core.utils import set_seed
    set_seed(0)
    model = create_model("bcos_cnn", channels=[8, 8, 16], strides=[1, 2, 2], variant="v1", max_out=2)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, checkpoint_every=1000)
    return model, _tiny_data(101), cfg


def test_data_parallel_fit_equals_single_process(tmp_path):
    """Two gloo processes under torchrun end with the weights and history of one process."""
    import subprocess
    import sys
    model, data, cfg = ddp_case()
    single = fit(model, data, None, cfg, seed=0, progress=False, log=lambda s: None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])]),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert (tmp_path / "ddp.ckpt").is_file()   # written by rank 0
    for name, w in model.state_dict().items():
        torch.testing.assert_close(ddp["state_dict"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    moved = sum(float((w - create_model("bcos_cnn", channels=[8, 8, 16], strides=[1, 2, 2], variant="v1",
                                        max_out=2).state_dict()[n]).abs().sum()) for n, w in model.state_dict().items())
    assert moved > 0
    for a, b in zip(single, ddp["history"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4), k


# ----------------------------------------------------------------------------- hardware options
def test_channels_last_trains_the_same_weights_and_bf16_trains(tmp_path):
    from bcos_lib.core.utils import set_seed
    results = {}
    for name, opts in (("default", {}), ("channels_last", {"channels_last": True}), ("bf16", {"precision": "bf16"})):
        set_seed(0)
        model = create_model("bcos_cnn", **SMALL)
        hist = fit(model, _tiny_data(48), None, TrainConfig(epochs=1, batch_size=16, lr=3e-3, **opts), seed=0,
                   progress=False, log=lambda s: None)
        results[name] = (model.state_dict(), hist[-1]["train_loss"])
        convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == (name == "channels_last")
                             for p in convs), name
    ref = results["default"][0]
    for n, w in results["channels_last"][0].items():
        torch.testing.assert_close(w, ref[n], rtol=1e-4, atol=1e-5, msg=n)
    # bf16 rounds the forward pass: the weights move like fp32's, not identically
    bf16 = results["bf16"][0]
    assert any(not torch.equal(bf16[n], ref[n]) for n in ref if ref[n].is_floating_point())
    assert abs(results["bf16"][1] - results["default"][1]) < 0.05
    assert all(w.dtype == ref[n].dtype for n, w in bf16.items())   # the weights stay float32


def test_compiled_training_trains_the_same_weights_and_caches_under_the_project(tmp_path, monkeypatch):
    """train.compile: Inductor's kernels compute the same step in another order of floating-point
    operations: the weights after an epoch agree with eager training to float tolerance, the saved
    state has the plain model's keys (no ``_orig_mod.``), and the kernel cache is where it is asked."""
    import bcos_lib.train as T
    from bcos_lib.core.utils import set_seed
    if T.compile_unavailable():
        pytest.skip(T.compile_unavailable())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    small = {"channels": [4, 8], "strides": [1, 2]}
    results = {}
    for compile_ in (False, True):
        set_seed(0)
        model = create_model("bcos_cnn", **small)
        fit(model, _tiny_data(32), None, TrainConfig(epochs=1, batch_size=16, lr=3e-3, compile=compile_), seed=0,
            progress=False, log=lambda s: None)
        results[compile_] = model.state_dict()
    assert results[True].keys() == results[False].keys()
    for n, w in results[True].items():
        torch.testing.assert_close(w, results[False][n], rtol=1e-3, atol=1e-4, msg=n)
    assert any((tmp_path / "inductor").iterdir())


def test_compile_unavailable_trains_eagerly_and_says_so_once(monkeypatch):
    import bcos_lib.train as T
    monkeypatch.setattr(T, "compile_unavailable", lambda: "no C++ compiler (g++, c++ or clang++) on PATH")
    monkeypatch.setattr(T, "_COMPILE_WARNED", set())
    lines = []
    model = torch.nn.Linear(3, 2)
    assert T.compiled(model, lines.append) is model
    assert T.compiled(model, lines.append) is model
    assert lines == ["train.compile: no C++ compiler (g++, c++ or clang++) on PATH; training runs eagerly "
                     "(same numbers up to float rounding, slower)"]


def test_compile_is_unavailable_without_a_cxx_compiler(monkeypatch):
    import shutil

    import bcos_lib.train as T
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no C++ compiler" in T.compile_unavailable() or T.compile_unavailable().startswith("TorchInductor")


def test_unknown_precision_is_refused_naming_the_key(tmp_path):
    from bcos_lib.core.config import ConfigError, load_params
    params = write_params(tmp_path / "params.yaml", params_dict(over={"train": {"precision": "fp16"}}))
    with pytest.raises(ConfigError, match="train.precision: 'fp16' is not allowed"):
        load_params(params)


@pytest.mark.slow
@have_data
def test_train_stage_runs_data_parallel_with_nproc(tmp_path, monkeypatch):
    """`make repro NPROC=2`: the train stage runs itself under torchrun; rank 0 writes the outputs."""
    from bcos_lib.core import pipeline
    from bcos_lib.stages import train as train_stage
    monkeypatch.setenv("BCOS_NPROC", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))
    run = pipeline.setup("tiny", output_dir=str(tmp_path / "out"))
    lines = []
    metrics = train_stage.run(run, "std_cnn", log=lines.append)
    assert any("data-parallel on 2 processes" in ln for ln in lines), lines
    assert metrics["model"] == "std_cnn" and metrics["test_accuracy"] > 30, metrics
    assert load_model(tmp_path / "out" / "models" / "std_cnn.pt").model_name == "std_cnn"
    assert not (tmp_path / "out" / "checkpoints" / "std_cnn.ckpt").exists()
