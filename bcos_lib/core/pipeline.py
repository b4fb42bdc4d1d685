"""The thin edge between params.yaml, files and the pure library functions.

Each pipeline stage (a notebook run by papermill, see dvc.yaml) calls the ``run``
function of its module in ``bcos_lib.stages``; this module holds what they share.  They read params and data, call the library, and write their outputs
atomically (temporary file + rename) only after everything succeeded, so a failed
stage never leaves a previous result half-overwritten.  Layout under the output root::

    models/<key>.pt                          trained model (arch, kwargs, weights, metrics, test logits)
    checkpoints/<key>.ckpt                   resumable training state (deleted when done)
    results/train/<key>/{metrics.json, history.csv}
    results/explain/<key>/{explanations.pt, metrics.json}
    results/evaluate/<key>/{metrics.json, tables/*.csv}  one summary per metric, long tables
    figures/*.png, results/report.md
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .config import Params, load_params
from .data import ImageDataset, load_dataset, subset
from .paths import output_root, project_root, resolve
from .registry import create_model
from .utils import (UnsafeFileError, atomic_torch_save, atomic_write, keep_freed_memory, resolve_device, safe_torch_load, set_seed)

__all__ = ["Run", "setup", "load_data", "save_model", "load_model", "load_trained", "ModelFileError", "model_path",
           "images_fingerprint", "kept_test_logits",
           "model_keys", "write_csv", "save_figure"]

MODEL_FORMAT = "bcos-companion/model-v1"


class ModelFileError(RuntimeError):
    """A model file is missing, damaged, or for another architecture."""


class Run:
    """What every stage needs: validated params, the output root and the device."""

    def __init__(self, params: Params, out: Path, device: torch.device):
        self.params, self.out, self.device = params, out, device

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def __repr__(self) -> str:
        # relative to the project: the executed notebooks show this, and must not differ between clones
        try:
            out = self.out.resolve().relative_to(project_root()).as_posix() or "."
        except (ValueError, FileNotFoundError):
            out = str(self.out)
        return f"Run(profile={self.params.base.profile!r}, out={out!r}, device={self.device})"


def setup(profile: str | None = None, output_dir: str | None = None, params_path: str | None = None,
          models: str | list[str] | None = None) -> Run:
    """Load and validate params.yaml (with ``profile``), seed everything, pick the device.

    ``models`` (``"all"``, a comma-separated string or a list of keys): the entries the stage will
    run, checked against the registries (which imports their methods and no other); without it,
    every entry is.

    ``output_dir`` (relative to the project root) overrides where outputs go; by default the
    ``default`` profile writes into the project root and any other into runs/<profile>/.
    """
    keys = None if models in (None, "", "all") else (
        [s.strip() for s in models.split(",")] if isinstance(models, str) else list(models))
    params = load_params(params_path, profile, keys)
    out = resolve(output_dir) if output_dir else output_root(params.base.profile)
    if params.base.num_threads > 0:
        torch.set_num_threads(params.base.num_threads)
    set_seed(params.base.seed)
    keep_freed_memory()  # no page fault per step for every large tensor (see its docstring)
    run = Run(params, out, resolve_device(params.base.device))
    run.params_path = Path(params_path).resolve() if params_path else None   # for the processes of bcos_lib.core.members
    return run


def load_data(run: Run, split: str) -> ImageDataset:
    """The configured dataset split (hash-checked for Fashion-MNIST), cut to the profile's subset."""
    d = run.params.data
    kw = {"image_size": d.image_size} if d.dataset == "image_folder" else {}
    ds = load_dataset(d.dataset, resolve(d.root), split, **kw)
    n = d.train_subset if split == "train" else d.test_subset
    return subset(ds, n, seed=run.params.base.seed)


def model_path(run: Run, key: str) -> Path:
    return run.path("models", f"{key}.pt")


def save_model(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Save a registered model with what rebuilds it (atomically)."""
    if not hasattr(model, "model_name"):
        raise ValueError("only models made by bcos_lib.create_model can be saved (they record their name)")
    return atomic_torch_save({"format": MODEL_FORMAT, "model_name": model.model_name,
                              "model_kwargs": model.model_kwargs, "state_dict": model.state_dict(), **extra}, path)


def load_model(path: str | os.PathLike, expect_arch: str | None = None, expect_kwargs: dict | None = None,
               device: torch.device | str = "cpu", stage: str | None = None) -> nn.Module:
    """Rebuild a saved model, with errors that say what is wrong and which stage makes the file
    (``stage``; default ``train-<file name>``)."""
    path = Path(path)
    hint = f"re-run its training stage (`dvc repro {stage or 'train-' + path.stem}`)"
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist: {hint}")
    try:
        ck = safe_torch_load(path)
    except UnsafeFileError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged files raise many kinds
        raise ModelFileError(f"model file {path} is corrupted or truncated ({type(e).__name__}: {e}); {hint}") from e
    if not isinstance(ck, dict) or ck.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a bcos-companion model file; {hint}")
    saved = ck.get("model_kwargs", {})
    if expect_arch is not None and (ck.get("model_name") != expect_arch or any(
            saved.get(k) != v for k, v in (expect_kwargs or {}).items())):
        raise ModelFileError(f"{path} holds a {ck['model_name']}({ck['model_kwargs']}) but params.yaml asks for "
                             f"{expect_arch}({expect_kwargs}); {hint}")
    model = create_model(ck["model_name"], **ck["model_kwargs"])
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise ModelFileError(f"the weights in {path} do not fit the architecture {ck['model_name']} "
                             f"({str(e).splitlines()[0]}); {hint}") from e
    model.checkpoint_info = {k: v for k, v in ck.items() if k != "state_dict"}
    return model.to(device).eval()


def images_fingerprint(ds: ImageDataset) -> str:
    """A hash of a dataset's images and labels, which tells whether logits kept with a model were
    computed on these very images."""
    import hashlib
    h = hashlib.sha256()
    h.update(str(tuple(ds.images.shape)).encode())
    h.update(ds.images.detach().cpu().contiguous().numpy().tobytes())
    h.update(ds.labels.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def kept_test_logits(model: nn.Module, ds: ImageDataset) -> torch.Tensor | None:
    """The logits on ``ds`` that the train stage kept in the model file (its last pass over the
    test set, :func:`bcos_lib.train.fit`'s ``on_test``), or None when the file has none or they were
    computed on other images (another test subset or profile)."""
    info = getattr(model, "checkpoint_info", None) or {}
    logits = info.get("test_logits")
    if not isinstance(logits, torch.Tensor) or logits.shape[:1] != (len(ds),):
        return None
    if info.get("test_images") != images_fingerprint(ds):
        return None
    return logits


def load_trained(run: Run, key: str) -> nn.Module:
    """The trained model of ``models.<key>``, checked against params.yaml."""
    entry = run.params.model(key)
    # a seed replica is trained in the stage of the model it replicates
    return load_model(model_path(run, key), entry.arch, dict(entry.kwargs), run.device,
                      stage=f"train-{entry.replica_of or key}")


def write_timing(run: Run, stage: str, key: str, seconds: float, **parts: float) -> Path:
    """``results/timing/<stage>_<key>.json``: how long a stage's work took, and its ``parts``
    (e.g. each metric), in seconds (not a dependency of any stage and not tracked by git, so a
    rerun that reproduces the same results leaves the later stages and the checkout alone)."""
    from .utils import write_json
    return write_json({f"{stage}_seconds": round(seconds, 1), "device": str(run.device),
                       **({"parts_seconds": {k: round(v, 1) for k, v in parts.items()}} if parts else {})},
                      run.path("results", "timing", f"{stage}_{key}.json"))


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    text = df.to_csv(index=False, float_format="%.6g")
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def model_keys(run: Run, selection: str | list[str] = "all") -> list[str]:
    """``"all"`` (every model but the seed replicas, which only the train and evaluate stages run),
    a comma-separated string or a list of keys of params.yaml's `models`."""
    keys = [k for k, e in run.params.models.items() if not e.replica_of] if selection in ("all", "", None) else (
        [s.strip() for s in selection.split(",")] if isinstance(selection, str) else list(selection))
    for k in keys:
        run.params.model(k)  # raises naming the known keys
    return keys


def save_figure(run: Run, fig: Any, name: str, folder: str = "figures") -> Path:
    """Write ``fig`` to <folder>/<name>.png (atomically) and keep it open for display."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=run.params.figures.dpi, bbox_inches="tight")
    data = buf.getvalue()
    return atomic_write(run.path(*folder.split("/"), f"{name}.png"), lambda tmp: Path(tmp).write_bytes(data))
