"""Stage train: fit one model of params.yaml `models` and write it with its metrics."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable

import pandas as pd

from ..data import subset
from ..pipeline import Run, load_data, model_path, save_model, write_csv, write_timing
from ..registry import create_model
from ..train import config_fingerprint, fit
from ..utils import set_seed, versions, write_json


def run(run: Run, key: str, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``models.<key>``; write the model, metrics.json and history.csv; return the metrics."""
    p = run.params
    entry, tcfg = p.model(key), p.train_config(key)
    train_ds, test_ds = load_data(run, "train"), load_data(run, "test")
    if tcfg.subset:
        train_ds = subset(train_ds, tcfg.subset, seed=p.base.seed)
    kwargs = dict(entry.kwargs)
    kwargs.setdefault("num_classes", train_ds.num_classes)
    kwargs.setdefault("image_channels", train_ds.image_channels)
    set_seed(p.base.seed)
    model = create_model(entry.arch, **kwargs)
    fingerprint = config_fingerprint(entry.arch, kwargs, asdict(tcfg), asdict(p.data), p.base.seed)
    ckpt = run.path("checkpoints", f"{key}.ckpt")
    log(f"training {key}: {entry.arch}({kwargs}) on {len(train_ds)} images, {tcfg.epochs} epoch{'s' if tcfg.epochs != 1 else ''}, device {run.device}")
    t0 = time.time()
    history = fit(model, train_ds, test_ds, tcfg, seed=p.base.seed, device=run.device, checkpoint_path=ckpt,
                  fingerprint=fingerprint, progress=progress, log=log)
    seconds = time.time() - t0
    final = history[-1]
    metrics = {"model": key, "arch": entry.arch, "test_accuracy": round(final["test_accuracy"], 4),
               "test_loss": round(final["test_loss"], 6), "train_loss": round(final["train_loss"], 6),
               "train_accuracy": round(final["train_accuracy"], 4), "epochs": tcfg.epochs,
               "n_train": len(train_ds), "n_test": len(test_ds), "seed": p.base.seed, "profile": p.base.profile,
               "n_parameters": sum(q.numel() for q in model.parameters()), "versions": versions()}
    model.cpu()
    save_model(model, model_path(run, key), metrics=metrics)
    out = run.path("results", "train", key)
    write_csv(pd.DataFrame(history), out / "history.csv")
    write_json(metrics, out / "metrics.json")
    write_timing(run, "train", key, seconds)
    if ckpt.exists():
        ckpt.unlink()
    log(f"{key}: test accuracy {metrics['test_accuracy']:.2f} % after {tcfg.epochs} epoch{'s' if tcfg.epochs != 1 else ''}"
        " (the time is in results/timing/)")
    return metrics
