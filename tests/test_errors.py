"""Bad input gets a clear error, and nothing already produced is lost (issue 4).

Each kind of bad input is tested twice where it can reach a pipeline stage: the library
function raises an error whose message names what is wrong and what to do, and the stage,
run over the outputs of an earlier good run, fails the same way and leaves every earlier
file byte-identical (no model, metrics file or table is half-overwritten).

Kinds of bad input: params (unknown keys, wrong types, unknown model names), dataset
files (missing, truncated, another file of the same size, malformed IDX), model files
(truncated, not a model, another architecture), training checkpoints (damaged, from other
code), images a B-cos model cannot take (raw or normalised images instead of [x, 1 − x]),
NaN/Inf during training, and an empty pool of images for the grid pointing game.
"""
from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bcos_lib import ImageClassifier, create_model, list_models
from bcos_lib.core import pipeline
from bcos_lib.core.config import ConfigError, TrainConfig, deep_merge, load_params
from bcos_lib.core.data import (FASHION_MNIST_FILES, DataError, ImageDataset, fetch_fashion_mnist, load_fashion_mnist, read_idx, subset, verify_fashion_mnist)
from bcos_lib.layers.encoding import add_inverse
from bcos_lib.core.pipeline import ModelFileError, load_model, save_model
from bcos_lib.stages import evaluate as evaluate_stage
from bcos_lib.stages import explain as explain_stage
from bcos_lib.stages import train as train_stage
from bcos_lib.train import TrainingError, fit, load_train_checkpoint
from bcos_lib.core.utils import set_seed

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "fashion-mnist"
SMALL = {"channels": [8, 8, 16, 16], "strides": [1, 2, 1, 2]}
HOW_TO_GET = "make data"   # every DataError about Fashion-MNIST says how to get it
have_data = pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte").is_file(),
                               reason="Fashion-MNIST is not in data/fashion-mnist (run `make data`)")


def params_dict(keys: tuple[str, ...] = ("std_cnn", "bcos_cnn"), over: dict | None = None) -> dict:
    """The project's params.yaml with the tiny profile, small CPU models ``keys`` and ``over`` merged in."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"].update(device="cpu", num_threads=1, profile="tiny")
    raw["models"] = {k: {"arch": k, "kwargs": dict(SMALL)} for k in keys}
    # long enough that the models classify test images of ≥ 4 classes (the tiny profile's 2×2 grids)
    raw = deep_merge(raw, {"profiles": {"tiny": {"train": {"epochs": 3, "lr": 0.01}}}})
    return deep_merge(raw, over or {})


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_nothing_lost(before: dict[str, bytes], root: Path) -> None:
    """Every earlier file is byte-identical, and no new model or result file appeared."""
    after = files(root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    new = sorted(k for k in after if k not in before and not k.startswith("checkpoints/"))
    assert not changed, f"changed or deleted by the failed stage: {changed}"
    assert not new, f"written by the failed stage: {new}"


def run_stage(stage: str, params: Path, out: Path, key: str = "std_cnn") -> None:
    """What a stage notebook does: setup (validates params.yaml), then the stage's run."""
    run = pipeline.setup("tiny", output_dir=str(out), params_path=str(params))
    module = {"train": train_stage, "explain": explain_stage, "evaluate": evaluate_stage}[stage]
    if stage == "train":
        module.run(run, key, progress=False, log=lambda s: None)
    else:
        module.run(run, key, log=lambda s: None)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """Outputs of a good tiny run of every stage but figures (read-only: tests copy it)."""
    tmp = tmp_path_factory.mktemp("good_run")
    params = write_params(tmp / "params.yaml", params_dict())
    for key in ("std_cnn", "bcos_cnn"):
        for stage in ("train", "explain", "evaluate"):
            run_stage(stage, params, tmp / "out", key)
    return tmp / "out"


@pytest.fixture
def previous(tmp_path, good_run) -> Path:
    """A copy of the good run's outputs to run a failing stage over."""
    out = tmp_path / "out"
    shutil.copytree(good_run, out)
    return out


# ----------------------------------------------------------------------------- params.yaml
@pytest.mark.parametrize("over, message", [
    ({"trian": {"epochs": 1}}, "unknown key trian; allowed here: base, data"),
    ({"train": {"epoch": 1}}, "unknown key train.epoch; allowed here: epochs"),
    ({"train": {"epochs": "three"}}, "train.epochs: expected an integer, got 'three'"),
    ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer, got 2.5"),
    ({"train": {"epochs": True}}, "train.epochs: expected an integer, got True"),
    ({"profiles": {"tiny": {"train": {"epochs": 0}}}}, "train.epochs must be ≥ 1 (got 0)"),
    ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
    ({"train": {"optimizer": "adamw"}}, "train.optimizer: 'adamw' is not allowed"),
    ({"data": {"train_subset": "all"}}, "data.train_subset: expected an integer"),
    ({"evaluate": {"attributions": "own"}}, "evaluate.attributions: expected a list"),
    ({"models": {"std_cnn": {"kwargs": {"chanels": [8]}}}}, "models.std_cnn.kwargs.chanels: std_cnn has no argument"),
    ({"models": {"std_cnn": {"train": {"epoch": 2}}}}, "unknown key models.std_cnn.train.epoch"),
    ({"models": {"std_cnn": {"evaluate": {"n_grid": 2}}}}, "unknown key models.std_cnn.evaluate.n_grid"),
    ({"models": {"std_cnn": {"lable": "x"}}}, "unknown key models.std_cnn.lable"),
    ({"profiles": {"tiny": {"train": {"epochs": "2"}}}},
     "in profile 'tiny' (profiles.tiny): train.epochs: expected an integer, got '2'"),
    ({"profiles": {"gpu": {"train": {"epoch": 2}}}}, "in profile 'gpu' (profiles.gpu): unknown key train.epoch"),
    ({"base": {"profile": "huge"}}, "unknown profile 'huge'; defined in `profiles`: default, tiny, gpu"),
])
def test_bad_params_name_the_key(tmp_path, over, message):
    path = write_params(tmp_path / "params.yaml", params_dict(over=over))
    profile = None if "profile" in over.get("base", {}) else "tiny"
    with pytest.raises(ConfigError) as e:
        load_params(path, profile)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert str(e.value).count("params.yaml") == 1, "the file is named once, at the start"


def test_unknown_model_lists_known_models(tmp_path):
    path = write_params(tmp_path / "params.yaml", params_dict(over={"models": {"std_cnn": {"arch": "std_cnnn"}}}))
    with pytest.raises(ConfigError, match=r"models\.std_cnn\.arch: unknown model 'std_cnnn'; known models: ") as e:
        load_params(path)
    assert all(name in str(e.value) for name in list_models())
    with pytest.raises(KeyError) as e:
        create_model("resnet9000")
    assert "unknown model 'resnet9000'; known models: " + ", ".join(list_models()) in str(e.value)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['chanels'\]; it accepts: "):
        create_model("bcos_cnn", chanels=[8])
    path = write_params(tmp_path / "ok.yaml", params_dict())
    run = pipeline.setup("tiny", output_dir=str(tmp_path / "out"), params_path=str(path))
    with pytest.raises(ConfigError, match="no model 'bcos' in params.yaml `models`; defined: std_cnn, bcos_cnn"):
        pipeline.model_keys(run, "std_cnn,bcos")


def test_params_file_missing_or_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_params(bad)


def test_exponent_floats_are_numbers(tmp_path):
    """PyYAML reads `lr: 1e-3` as a string (YAML 1.1); DVC and the user mean a number."""
    path = tmp_path / "params.yaml"
    text = yaml.safe_dump(params_dict(), sort_keys=False)
    path.write_text(re.sub(r"\n  lr: .*\n", "\n  lr: 1e-3\n", text, count=1))
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-3"
    assert load_params(path, "default").train.lr == 1e-3


@have_data
@pytest.mark.parametrize("over, message", [
    ({"train": {"epoch": 1}}, "unknown key train.epoch"),
    ({"train": {"batch_size": "64"}}, "train.batch_size: expected an integer"),
    ({"models": {"std_cnn": {"arch": "std_cnnn"}}}, "known models: "),
])
def test_train_stage_with_bad_params_loses_nothing(tmp_path, previous, over, message):
    params = write_params(tmp_path / "params.yaml", params_dict(over=over))
    before = files(previous)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_stage("train", params, previous)
    assert_nothing_lost(before, previous)


@have_data
def test_train_stage_with_a_model_that_cannot_be_built_loses_nothing(tmp_path, previous):
    params = write_params(tmp_path / "params.yaml", params_dict(over={"models": {"std_cnn": {"kwargs": {
        "strides": [1, 2]}}}}))
    before = files(previous)
    with pytest.raises(ValueError, match=r"channels \(4\) and strides \(2\) must have the same length"):
        run_stage("train", params, previous)
    assert_nothing_lost(before, previous)


# ----------------------------------------------------------------------------- dataset files
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (the MNIST format) of unsigned bytes."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def fake_fashion_mnist(root: Path, n: int = 20) -> Path:
    """Four well-formed IDX files with the right names, but not the Fashion-MNIST release."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (n, 28, 28), np.uint8)))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(rng.integers(0, 10, n, np.uint8)))
    return root


def real_copy(root: Path, damage: str, name: str = "train-labels-idx1-ubyte") -> Path:
    """Fashion-MNIST in ``root``: ``name`` copied and damaged, the other files linked to the real ones."""
    root.mkdir(parents=True)
    for f in FASHION_MNIST_FILES:
        if f != name:
            (root / f).symlink_to(DATA / f)
    data = bytearray((DATA / name).read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "changed":       # same size, one label changed: only the hash can tell
        data[-1] = (data[-1] + 1) % 10
    if damage != "missing":
        (root / name).write_bytes(bytes(data))
    return root


@have_data
@pytest.mark.parametrize("damage, problem", [
    ("missing", "train-labels-idx1-ubyte is missing"),
    ("truncated", "train-labels-idx1-ubyte has 30004 bytes, expected 60008 (truncated or a different file)"),
    ("changed", "train-labels-idx1-ubyte has md5 "),
])
def test_damaged_dataset_says_what_and_how_to_get_it(tmp_path, damage, problem):
    root = real_copy(tmp_path / "fmnist", damage)
    for call in (lambda: verify_fashion_mnist(root), lambda: load_fashion_mnist(root, "train"),
                 lambda: load_fashion_mnist(root, "test")):  # the test split is checked too: all four files
        with pytest.raises(DataError) as e:
            call()
        assert problem in str(e.value) and HOW_TO_GET in str(e.value) and str(root) in str(e.value)
    if damage == "changed":
        assert f"expected {FASHION_MNIST_FILES['train-labels-idx1-ubyte'][0]} (not the Fashion-MNIST release)" \
            in str(e.value)


def test_fake_idx_files_are_rejected(tmp_path):
    root = fake_fashion_mnist(tmp_path / "fake")
    with pytest.raises(DataError) as e:
        load_fashion_mnist(root)
    for name, (_, size) in FASHION_MNIST_FILES.items():  # every wrong file is listed, not only the first
        assert f"{root / name} has " in str(e.value) and f"expected {size}" in str(e.value)
    assert HOW_TO_GET in str(e.value)
    # the IDX reader itself: a good file reads, a truncated one or another format does not
    assert read_idx(root / "t10k-images-idx3-ubyte").shape == (20, 28, 28)
    cut = tmp_path / "cut"
    cut.write_bytes((root / "t10k-images-idx3-ubyte").read_bytes()[:-100])
    with pytest.raises(DataError, match=r"is truncated: header says \(20, 28, 28\), found 15580 values"):
        read_idx(cut)
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="is not an unsigned-byte IDX file"):
        read_idx(png)


@have_data
def test_fetch_repairs_a_damaged_file_and_says_how_to_get_missing_ones(tmp_path):
    root = real_copy(tmp_path / "fmnist", "changed")
    fetch_fashion_mnist(root, source=DATA, allow_download=False)  # replaces the wrong file from the source
    verify_fashion_mnist(root)
    assert not [p for p in root.iterdir() if p.name.endswith(".part")]
    with pytest.raises(DataError, match="is in none of") as e:
        fetch_fashion_mnist(tmp_path / "new", source=tmp_path / "empty", allow_download=False)
    assert HOW_TO_GET in str(e.value)


@have_data
@pytest.mark.parametrize("damage", ["missing", "truncated", "changed", "fake"])
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_stage_with_damaged_dataset_loses_nothing(tmp_path, previous, stage, damage):
    root = fake_fashion_mnist(tmp_path / "fmnist") if damage == "fake" else real_copy(
        tmp_path / "fmnist", damage, "t10k-images-idx3-ubyte")
    params = write_params(tmp_path / "params.yaml", params_dict(over={"data": {"root": str(root)}}))
    before = files(previous)
    with pytest.raises(DataError, match=re.escape(HOW_TO_GET)):
        run_stage(stage, params, previous)
    assert_nothing_lost(before, previous)


# ----------------------------------------------------------------------------- model files
def tiny_model(arch: str = "bcos_cnn", **kw) -> torch.nn.Module:
    set_seed(0)
    return create_model(arch, **{**SMALL, **kw})


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist: re-run its training stage (`dvc repro train-m`)"),
    ("empty", "is corrupted or truncated"),
    ("truncated", "is corrupted or truncated"),
    ("garbage", "is corrupted or truncated"),
    ("not_a_model", "is not a bcos-companion model file"),
    ("other_arch", "holds a std_cnn("),
    ("other_kwargs", "but params.yaml asks for bcos_cnn({'channels': [8, 8, 16, 32]"),
    ("other_weights", "do not fit the architecture bcos_cnn"),
])
def test_damaged_model_file_raises_model_file_error(tmp_path, damage, message):
    path = tmp_path / "m.pt"
    expect = {"expect_arch": "bcos_cnn", "expect_kwargs": dict(SMALL)}
    if damage in ("empty", "truncated", "garbage", "other_weights"):
        save_model(tiny_model(), path)
        load_model(path, **expect)  # the intact file loads
    data = path.read_bytes() if path.exists() else b""
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 10)
    elif damage == "not_a_model":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "other_arch":
        save_model(tiny_model("std_cnn"), path)
    elif damage == "other_kwargs":
        save_model(tiny_model(), path)
        expect["expect_kwargs"] = {**SMALL, "channels": [8, 8, 16, 32]}
    elif damage == "other_weights":  # a file that claims bcos_cnn but holds the weights of another shape
        ck = torch.load(path, weights_only=True)
        ck["state_dict"] = tiny_model(channels=[8, 8, 16, 32]).state_dict()
        torch.save(ck, path)
    with pytest.raises(ModelFileError) as e:
        load_model(path, **expect)
    assert message in str(e.value) and str(path) in str(e.value)
    assert "re-run its training stage" in str(e.value)


@have_data
@pytest.mark.parametrize("damage", ["truncated", "other_arch"])
@pytest.mark.parametrize("stage", ["explain", "evaluate"])
def test_stage_with_damaged_model_file_loses_nothing(tmp_path, previous, stage, damage):
    params = write_params(tmp_path / "params.yaml", params_dict())
    model = previous / "models" / "std_cnn.pt"
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[:5000])
    else:
        shutil.copy(previous / "models" / "bcos_cnn.pt", model)
    before = files(previous)
    with pytest.raises(ModelFileError, match=str(model)):
        run_stage(stage, params, previous)
    assert_nothing_lost(before, previous)


# ----------------------------------------------------------------------------- training checkpoints
@pytest.fixture(scope="module")
def train_data() -> ImageDataset:
    if not (DATA / "train-images-idx3-ubyte").is_file():
        g = torch.Generator().manual_seed(0)  # the checks below do not need real images
        return ImageDataset(torch.rand(128, 1, 28, 28, generator=g), torch.arange(128) % 10, tuple("abcdefghij"))
    return subset(load_fashion_mnist(DATA, "train"), 128, seed=0)


@pytest.mark.parametrize("damage, message", [
    ("truncated", "is corrupted or truncated"),
    ("garbage", "is corrupted or truncated"),
    ("not_a_checkpoint", "is not a bcos-companion training checkpoint"),
    ("incomplete", "is incomplete (no optimizer)"),
    ("other_model", "does not fit this model or optimiser"),
])
def test_damaged_training_checkpoint_raises_training_error(tmp_path, train_data, damage, message):
    ckpt = tmp_path / "m.ckpt"
    cfg = TrainConfig(epochs=1, batch_size=32, checkpoint_every=2)
    fit(tiny_model("std_cnn"), train_data, None, cfg, checkpoint_path=ckpt, fingerprint="f", progress=False,
        log=lambda s: None)
    load_train_checkpoint(ckpt)  # the intact file loads
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        ckpt.write_bytes(b"\x00" * 1000)
    elif damage == "not_a_checkpoint":
        save_model(tiny_model("std_cnn"), ckpt)
    elif damage == "incomplete":
        ck = torch.load(ckpt, weights_only=True)
        del ck["optimizer"]
        torch.save(ck, ckpt)
    elif damage == "other_model":  # the same fingerprint, but the code of the model changed since
        ck = torch.load(ckpt, weights_only=True)
        ck["model"] = tiny_model("std_cnn", channels=[8, 8, 16, 32]).state_dict()
        torch.save(ck, ckpt)
    damaged = ckpt.read_bytes()
    with pytest.raises(TrainingError) as e:
        fit(tiny_model("std_cnn"), train_data, None, cfg, checkpoint_path=ckpt, fingerprint="f", progress=False,
            log=lambda s: None)
    assert message in str(e.value) and str(ckpt) in str(e.value)
    assert "delete it to start" in str(e.value)
    assert ckpt.read_bytes() == damaged  # left for the user to look at


@have_data
def test_train_stage_with_damaged_checkpoint_loses_nothing(tmp_path, previous):
    params = write_params(tmp_path / "params.yaml", params_dict())
    ckpt = previous / "checkpoints" / "std_cnn.ckpt"
    ckpt.parent.mkdir(exist_ok=True)
    ckpt.write_bytes(b"PK\x03\x04" + bytes(500))  # the start of a zip archive, then nothing
    before = files(previous)
    with pytest.raises(TrainingError, match="is corrupted or truncated"):
        run_stage("train", params, previous)
    assert_nothing_lost(before, previous)


# ----------------------------------------------------------------------------- images a B-cos model cannot take
BCOS_MODELS = [name for name in list_models() if getattr(create_model(name), "encoding", "") == "add_inverse"]


def _size(model: torch.nn.Module) -> int:
    return getattr(model, "fixed_input_size", None) or 28


@pytest.mark.parametrize("name", BCOS_MODELS)
@pytest.mark.parametrize("bad", ["raw_grey", "three_channels", "normalised", "bytes_0_255"])
def test_bcos_model_rejects_images_it_cannot_take(name, bad):
    model = create_model(name).eval()
    assert isinstance(model, ImageClassifier)
    size, c = _size(model), model.image_channels
    x = torch.rand(2, c, size, size, generator=torch.Generator().manual_seed(0))
    bad_input = {"raw_grey": x,                                         # the images without [x, 1 − x]
                 "three_channels": torch.rand(2, 3, size, size),       # RGB to a grey model (not 2·3 either)
                 "normalised": add_inverse((x - 0.286) / 0.353),       # mean/std-normalised, then encoded
                 "bytes_0_255": add_inverse(x) * 255}[bad]
    with pytest.raises(ValueError) as e:
        model(bad_input)
    assert "[x, 1 − x]" in str(e.value)
    if bad == "raw_grey":
        assert "add_inverse" in str(e.value), "the message says how to encode raw images"
    if bad in ("normalised", "bytes_0_255"):
        assert "[0, 1]" in str(e.value) and "got values in" in str(e.value)


def test_bcos_model_takes_encoded_images():
    """The control: the same images, encoded, go through."""
    model = tiny_model().eval()
    x = torch.rand(2, 1, 28, 28)
    assert model(add_inverse(x)).shape == (2, 10)
    assert model(model.prepare_input(x)).shape == (2, 10)


# ----------------------------------------------------------------------------- NaN/Inf in training
def test_huge_learning_rate_stops_training_naming_step_and_cause(train_data):
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e30)
    with pytest.raises(TrainingError) as e:
        fit(tiny_model("std_cnn"), train_data, None, cfg, progress=False, log=lambda s: None)
    msg = str(e.value)
    assert re.search(r"loss became (nan|inf) at epoch 1, step \d+ \(global step \d+\)", msg), msg
    assert "learning rate (1e+30)" in msg


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("arch", ["std_cnn", "bcos_cnn"])
def test_nonfinite_images_stop_training_naming_the_data(train_data, arch, value):
    images = train_data.images.clone()
    images[37, 0, 5, 5] = value
    bad = ImageDataset(images, train_data.labels, train_data.classes)
    with pytest.raises(TrainingError) as e:  # checked before the model sees the batch, for every model
        fit(tiny_model(arch), bad, None, TrainConfig(epochs=1, batch_size=32), progress=False, log=lambda s: None)
    assert re.search(r"at epoch 1, step \d+ contains NaN/Inf: the input batch itself is damaged", str(e.value))
    assert "check the dataset files" in str(e.value)


@have_data
def test_train_stage_that_diverges_loses_nothing(tmp_path, previous):
    params = write_params(tmp_path / "params.yaml", params_dict(over={"models": {"std_cnn": {"train": {"lr": 1e30}}}}))
    before = files(previous)
    with pytest.raises(TrainingError, match=r"at epoch 1, step \d+ .*learning rate \(1e\+30\)"):
        run_stage("train", params, previous)
    assert_nothing_lost(before, previous)


# ----------------------------------------------------------------------------- empty grid pool (localisation metric)
@pytest.fixture
def metrics():
    return pytest.importorskip("bcos_lib.metrics")  # being written at the time of issue 4


def test_empty_grid_pool_says_what_to_change(metrics):
    ds = ImageDataset(torch.rand(40, 1, 28, 28), torch.arange(40) % 10, tuple("abcdefghij"))
    empty = {c: torch.zeros(0, dtype=torch.long) for c in range(10)}
    with pytest.raises(metrics.EvaluationError, match="no test image is classified correctly with enough "
                                                      "confidence.*lower evaluate.min_confidence"):
        metrics.make_grids(ds, empty, n=3, n_grids=5)
    two = {**empty, 0: torch.tensor([0, 10]), 1: torch.tensor([1])}
    with pytest.raises(metrics.EvaluationError, match=r"needs 9 distinct classes .* only 2 class\(es\) have any "
                                                      r"\(\[0, 1\]\).*smaller evaluate.grid_size"):
        metrics.make_grids(ds, two, n=3, n_grids=5)
    with pytest.raises(metrics.EvaluationError, match=r"grid_size ≤ 3"):
        metrics.make_grids(ds, empty, n=4, n_grids=5)
    # a pool that nothing can pass: probabilities never exceed 1
    pool = metrics.confident_pool(tiny_model().eval(), ds, min_confidence=1.0)
    assert set(pool) == set(range(10)) and all(len(v) == 0 for v in pool.values())
    with pytest.raises(metrics.EvaluationError, match="no test image"):
        metrics.make_grids(ds, pool, n=2, n_grids=1)


@have_data
def test_evaluate_stage_with_empty_pool_loses_nothing(tmp_path, previous, metrics):
    params = write_params(tmp_path / "params.yaml",
                          params_dict(over={"models": {"std_cnn": {"evaluate": {"min_confidence": 1.0}}}}))
    before = files(previous)
    with pytest.raises(metrics.EvaluationError, match="lower evaluate.min_confidence"):
        run_stage("evaluate", params, previous)
    assert_nothing_lost(before, previous)
