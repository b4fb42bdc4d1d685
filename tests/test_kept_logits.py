"""The train stage keeps its last pass over the test set with the model; the evaluate stage reads
those logits instead of computing them again, and only when they belong to its test images."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import yaml

from bcos_lib.core import pipeline
from bcos_lib.core.pipeline import images_fingerprint, kept_test_logits, load_data, load_trained, model_path
from bcos_lib.core.data import subset
from bcos_lib.core.utils import atomic_torch_save, safe_torch_load
from bcos_lib.stages import evaluate as evaluate_stage
from bcos_lib.stages import train as train_stage
from bcos_lib.train import evaluate_accuracy

REPO = Path(__file__).resolve().parents[1]


def setup(tmp: Path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"].update(device="cpu", num_threads=2, profile="tiny")
    raw["models"] = {"std_cnn": {"arch": "std_cnn", "kwargs": {"channels": [8, 16, 16], "strides": [1, 2, 2]}}}
    raw["profiles"]["tiny"] = {"data": {"train_subset": 1000, "test_subset": 300},
                               "train": {"epochs": 2, "batch_size": 50, "lr": 0.005, "checkpoint_every": 1000},
                               "evaluate": {"n_grids": 3, "grid_size": 2, "attributions": ["ixg"],
                                            "metrics": ["localisation"], "min_confidence": 0.0}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return pipeline.setup("tiny", output_dir=str(tmp / "out"), params_path=str(tmp / "params.yaml"))


def test_evaluate_reads_the_logits_training_kept(tmp_path):
    run = setup(tmp_path)
    train_stage.run(run, "std_cnn", progress=False, log=lambda s: None)
    model, test = load_trained(run, "std_cnn"), load_data(run, "test")
    kept = kept_test_logits(model, test)
    assert kept is not None and kept.shape == (300, 10)
    # they are the model's logits on these images (the pass that gave the reported accuracy)
    fresh = evaluate_accuracy(model, test, "ce", 1000, keep_logits=True)
    assert torch.allclose(kept, fresh["logits"], atol=1e-5)
    # ... and not on other images
    assert kept_test_logits(model, subset(test, 200, seed=1)) is None

    lines: list[str] = []
    with_kept = evaluate_stage.run(run, "std_cnn", log=lines.append)
    assert any("logits from the model file" in line for line in lines)
    tables = run.out / "results/evaluate/std_cnn/tables"
    first = {p.name: pd.read_csv(p) for p in tables.glob("*.csv")}

    # the same model file without them: the evaluate stage computes them, and scores the same
    path = model_path(run, "std_cnn")
    ck = safe_torch_load(path)
    for k in ("test_logits", "test_images"):
        ck.pop(k)
    atomic_torch_save(ck, path)
    lines.clear()
    without = evaluate_stage.run(run, "std_cnn", log=lines.append)
    assert not any("logits from the model file" in line for line in lines)
    assert without["localisation"]["attributions"] == with_kept["localisation"]["attributions"]
    for name, df in first.items():
        pd.testing.assert_frame_equal(df, pd.read_csv(tables / name), check_exact=False, rtol=1e-5)


def test_a_fingerprint_names_the_images_and_labels():
    images = torch.rand(4, 1, 28, 28)
    from bcos_lib.core.data import ImageDataset
    a = ImageDataset(images, torch.tensor([0, 1, 2, 3]), tuple(str(i) for i in range(10)))
    b = ImageDataset(images, torch.tensor([0, 1, 2, 4]), tuple(str(i) for i in range(10)))
    c = ImageDataset(images.clone(), torch.tensor([0, 1, 2, 3]), tuple(str(i) for i in range(10)))
    assert images_fingerprint(a) != images_fingerprint(b)
    assert images_fingerprint(a) == images_fingerprint(c)
