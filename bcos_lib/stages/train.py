"""Stage train: fit one model of params.yaml `models` and write it with its metrics.

With ``BCOS_NPROC=N`` (N > 1; ``make repro NPROC=N`` sets it) the stage trains data-parallel
on N processes: it runs itself under ``torchrun --standalone --nproc_per_node N`` (one GPU
each, NCCL; gloo on a CPU machine), rank 0 writes the outputs, and the notebook reads them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..core.data import subset
from ..core.contract import EvalContext
from ..core.registry import get_metric, method_of
from ..core.config import method_options, metric_options
from ..core.pipeline import (Run, images_fingerprint, load_data, load_trained, model_path, save_model, write_csv,
                             write_timing)
from ..core.registry import create_model
from ..train import config_fingerprint, fit, is_main_process
from ..core.utils import set_seed, versions, write_json


def initial_model(run: Run, key: str, kwargs: dict[str, Any]) -> Any:
    """The model training starts from: a fresh one, or — for an entry with ``init_from`` — one
    made from that trained model by its method's ``init`` (e.g. B-cosification), or with its
    weights loaded when the method has none."""
    p = run.params
    entry = p.model(key)
    if not entry.init_from:
        return create_model(entry.arch, **kwargs)
    parent = load_trained(run, entry.init_from).cpu()
    method = method_of(entry.arch).load("model")
    if method.init is not None:
        return method.init(parent, method_options(entry, key))
    model = create_model(entry.arch, **kwargs)
    try:
        model.load_state_dict(parent.state_dict())
    except RuntimeError as e:
        raise ValueError(f"models.{key}.init_from: the weights of {entry.init_from} ({parent.model_name}) do not fit "
                         f"{entry.arch}({kwargs}) ({str(e).splitlines()[0]}); its method {method.name!r} has no "
                         "`init` that converts them") from e
    return model


def code_fingerprint(run: Run, key: str) -> str:
    """A hash of the code a training of ``models.<key>`` runs and starts from: every source file
    of bcos_lib (a superset of the stage's code dependencies in dvc.yaml, so no change to the
    code the stage runs can go unnoticed, whether the stage runs under DVC, in Jupyter or in a
    test), the stage notebook, the model file it starts from (``init_from``) or else the data
    summary it starts after, and the torch version.  A checkpoint is resumed only when this is
    what it was written with: a resumed run never mixes two versions of the code."""
    import hashlib

    import torch

    from ..core.paths import project_root
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes() + b"\0")
    entry = run.params.model(key)
    starts = [project_root() / "notebooks" / "20_train.ipynb",
              model_path(run, entry.init_from) if entry.init_from else run.path("results", "data", "summary.json")]
    for f in starts:
        digest.update(f.name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"(none)") + b"\0")
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:16]


def epoch_evaluation(run: Run, key: str, test_ds: Any) -> Callable[[Any], dict[str, float]] | None:
    """The metrics of ``train.epoch_metrics`` as one function for :func:`bcos_lib.train.fit`, run
    after every epoch on the test split with the model's evaluate options; each summary's numbers
    become history columns ``<metric>_<key>`` (None when no metric is asked for)."""
    p = run.params
    names = p.train_config(key).epoch_metrics
    if not names:
        return None
    cfg = p.evaluate_config(key)
    where = f"models.{key}.evaluate" if p.model(key).evaluate else "evaluate"
    metrics = [(get_metric(name), metric_options(name, cfg, where)) for name in names]  # errors before work

    def evaluate(model: Any) -> dict[str, float]:
        row: dict[str, float] = {}
        for metric, options in metrics:
            ctx = EvalContext(key=key, model=model, entry=p.model(key), test_data=test_ds, cfg=cfg, options=options,
                              device=run.device, seed=p.base.seed, log=lambda _: None,
                              load_train_data=lambda: load_data(run, "train"))
            result = metric.fn(ctx)
            if result is not None:
                row.update({f"{metric.name}_{k}": float(v) for k, v in result.summary.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return row
    return evaluate


def run(run: Run, key: str, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``models.<key>``; write the model, metrics.json and history.csv; return the metrics."""
    nproc = int(os.environ.get("BCOS_NPROC") or 1)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        return run_data_parallel(run, key, nproc, log)
    p = run.params
    entry, tcfg = p.model(key), p.train_config(key)
    method = method_of(entry.arch).load("model")
    options = method_options(entry, key)
    train_ds, test_ds = load_data(run, "train"), load_data(run, "test")
    if tcfg.subset:
        train_ds = subset(train_ds, tcfg.subset, seed=p.base.seed)
    kwargs = dict(entry.kwargs)
    kwargs.setdefault("num_classes", train_ds.num_classes)
    kwargs.setdefault("image_channels", train_ds.image_channels)
    seed = tcfg.seed if tcfg.seed >= 0 else p.base.seed   # a replica's training seed (the data subset keeps base.seed)
    set_seed(seed)
    model = initial_model(run, key, kwargs)
    hooks = method.training(model, options, tcfg) if method.training is not None else None
    epoch_eval = epoch_evaluation(run, key, test_ds)
    fingerprint = {"settings": config_fingerprint(entry.arch, kwargs, asdict(tcfg), asdict(p.data), seed,
                                                  *([entry.options] if entry.options else []),
                                                  *([entry.init_from] if entry.init_from else [])),
                   "code": code_fingerprint(run, key)}
    ckpt = run.path("checkpoints", f"{key}.ckpt")
    log(f"training {key}: {entry.arch}({kwargs}) on {len(train_ds)} images, {tcfg.epochs} epoch{'s' if tcfg.epochs != 1 else ''}, device {run.device}")
    t0 = time.time()
    tested: dict[int, Any] = {}   # the logits of the last pass over the test set, kept with the model
    history = fit(model, train_ds, test_ds, tcfg, seed=seed, device=run.device, checkpoint_path=ckpt,
                  fingerprint=fingerprint, checkpoint_name=f"checkpoints/{key}.ckpt", progress=progress, log=log,
                  hooks=hooks, epoch_eval=epoch_eval,
                  on_test=lambda epoch, logits: (tested.clear(), tested.update({epoch: logits})))
    seconds = time.time() - t0
    if not is_main_process():
        return {}   # rank 0 writes the outputs
    final = history[-1]
    metrics = {"model": key, "arch": entry.arch, "method": method.name, "test_accuracy": round(final["test_accuracy"], 4),
               "test_loss": round(final["test_loss"], 6), "train_loss": round(final["train_loss"], 6),
               "train_accuracy": round(final["train_accuracy"], 4), "epochs": tcfg.epochs,
               "n_train": len(train_ds), "n_test": len(test_ds), "seed": seed, "profile": p.base.profile,
               "n_parameters": sum(q.numel() for q in model.parameters()), "versions": versions()}
    model.cpu()
    # the evaluate stage reads these instead of another pass over the test set (absent when a resumed
    # run had already tested its last epoch before it stopped)
    keep = ({"test_logits": tested[tcfg.epochs], "test_images": images_fingerprint(test_ds)}
            if tcfg.epochs in tested else {})
    save_model(model, model_path(run, key), metrics=metrics, **keep)
    out = run.path("results", "train", key)
    write_csv(pd.DataFrame(history), out / "history.csv")
    write_json(metrics, out / "metrics.json")
    write_timing(run, "train", key, seconds)
    if ckpt.exists():
        ckpt.unlink()
    log(f"{key}: test accuracy {metrics['test_accuracy']:.2f} % after {tcfg.epochs} epoch{'s' if tcfg.epochs != 1 else ''}"
        " (the time is in results/timing/)")
    return metrics


def read_result(run: Run, key: str) -> dict[str, Any]:
    """What :func:`run` returned for ``models.<key>``, read back from its metrics.json (a model
    trained in its own process, :mod:`bcos_lib.core.members`)."""
    return json.loads(run.path("results", "train", key, "metrics.json").read_text())


def run_data_parallel(run: Run, key: str, nproc: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``models.<key>`` on ``nproc`` processes (torchrun) with the project's params.yaml and
    ``run``'s profile and output folder; return the metrics rank 0 wrote."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "bcos_lib.stages.train", "--profile", run.params.base.profile, "--output-dir", str(run.out), key]
    log(f"training {key} data-parallel on {nproc} processes: {' '.join(cmd[2:])}")
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in p.stdout.splitlines():
        log(line)
    if p.returncode != 0:
        raise RuntimeError(f"data-parallel training of {key} failed (torchrun exit {p.returncode}):\n{p.stderr[-4000:]}")
    return read_result(run, key)


if __name__ == "__main__":   # what run_data_parallel starts on every rank
    import argparse

    from ..core.pipeline import setup
    parser = argparse.ArgumentParser(description="train one model of params.yaml (a rank of a torchrun)")
    parser.add_argument("--profile")
    parser.add_argument("--output-dir")
    parser.add_argument("key")
    args = parser.parse_args()
    run(setup(args.profile, args.output_dir), args.key, progress=False,
        log=print if is_main_process() else (lambda s: None))
