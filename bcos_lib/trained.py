"""A trained model for notebooks outside the pipeline (the tutorials).

``load_or_train`` uses what ``dvc repro`` made when it exists and trains the tiny model
otherwise, so a tutorial runs on a fresh clone as well as next to a finished pipeline.  It
only reads the pipeline's files.  It lives outside ``pipeline.py`` because the pipeline's
stages depend on that file, and editing this helper must not make them rerun.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .core.config import load_params
from .core.paths import project_root
from .core.pipeline import ModelFileError, Run, load_model, load_trained, model_path

__all__ = ["load_or_train"]


def load_or_train(run: Run, key: str, log: Callable[[str], None] = print) -> tuple[nn.Module, str]:
    """The trained model of ``models.<key>`` and a sentence saying where it came from.

    In this order: the pipeline's own ``models/<key>.pt`` in the project (made by ``dvc repro``,
    checked against the default profile's params); the model of ``run``'s profile in its output
    root (made earlier by the train stage or by this function); else that model is trained now
    with ``run``'s settings (the tiny profile: about 15 s on a laptop CPU) and saved there, so
    the next call loads it.  A file that does not fit params.yaml is reported and skipped.
    """
    candidates = [(project_root() / "models" / f"{key}.pt", load_params(None, "default").model(key),
                   "the pipeline's model"),
                  (model_path(run, key), run.params.model(key), f"the {run.params.base.profile}-profile model")]
    seen = set()
    for path, entry, what in candidates:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            return load_model(path, entry.arch, dict(entry.kwargs), run.device), f"{what} {path}"
        except ModelFileError as e:
            log(f"not using {path}: {e}")
    from .stages import train as train_stage

    train_stage.run(run, key, log=log)
    profile = run.params.base.profile
    return load_trained(run, key), f"the {profile}-profile model trained just now ({model_path(run, key)})"
