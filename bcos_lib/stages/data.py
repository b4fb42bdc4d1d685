"""Stage data: check the dataset, summarise it, draw a sample of it."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..core.data import ImageDataset
from ..core.pipeline import Run, load_data, save_figure
from ..core.utils import write_json


def data_summary(run: Run, train_ds: ImageDataset, test_ds: ImageDataset) -> dict[str, Any]:
    """Sizes, shapes, class counts and pixel statistics; written to results/data/summary.json."""
    summary = {"dataset": run.params.data.dataset, "n_train": len(train_ds), "n_test": len(test_ds),
               "image_shape": list(train_ds.images.shape[1:]), "classes": list(train_ds.classes),
               "train_class_counts": torch.bincount(train_ds.labels, minlength=train_ds.num_classes).tolist(),
               "pixel_mean": round(float(train_ds.images.mean()), 4), "pixel_std": round(float(train_ds.images.std()), 4)}
    write_json(summary, run.path("results", "data", "summary.json"))
    return summary


def run(run: Run, log: Callable[[str], None] = print) -> tuple[dict[str, Any], Any]:
    """Load (and hash-check) both splits; write results/data/summary.json and samples.png."""
    from .. import figures

    train_ds, test_ds = load_data(run, "train"), load_data(run, "test")
    summary = data_summary(run, train_ds, test_ds)
    fig = figures.plot_samples(test_ds.images, test_ds.labels, test_ds.classes, n=20)
    save_figure(run, fig, "samples", folder="results/data")
    log(f"{summary['dataset']}: {summary['n_train']} training and {summary['n_test']} test images, "
        f"shape {summary['image_shape']}, {len(summary['classes'])} classes")
    return summary, fig
