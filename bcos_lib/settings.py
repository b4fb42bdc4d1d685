"""Each stage's resolved settings, one small file per stage and model: ``python -m bcos_lib.settings``.

A stage of the pipeline depends on the settings it runs with, not on whole sections of
params.yaml: the train stage of ``bcos_cnn`` on the train section *with that model's overrides and
the active profile merged in*, its model entry, the data and the seed — and on nothing else.  This
module writes exactly that, as JSON, under ``results/settings/`` (the ``settings`` stage of
``dvc.yaml``, which checks the whole of params.yaml first), and every other stage lists its file as
a dependency.  An edit of params.yaml then reruns the stages whose resolved settings changed: a
model's label only the figures, one model's epochs only that model's training (and what uses
the model), a setting that a profile or a model overrides nothing at all.

Files (keys sorted, so that equal settings are equal bytes):

``data.json``                 base and data
``train/<key>.json``          base, data, the merged train settings, the model's arch, kwargs, options, init_from
``evaluate/<key>.json``       base, data, the merged evaluate settings, the model's arch, kwargs, options, init_from
``explain.json``              base, data, explain, every model's key and label
``figures.json``              base, data, figures, every model entry without its train/evaluate overrides
                              (the figures and the report read the results those stages wrote); seed
                              replicas left out
``claims.json``               base, data, and of every model entry (seed replicas included) what the
                              claims ledger reads: arch, kwargs, group, replica_of, seeds
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .core.config import ConfigError, Params, load_params
from .core.paths import display_path, project_root

__all__ = ["stage_settings", "write_settings", "settings_path", "training_fingerprint", "main", "FOLDER"]

FOLDER = "results/settings"


#: base settings that change how fast a stage runs, never its results (bcos_lib.core.members: a seed
#: replica has one thread however many run at once), so changing them reruns nothing
SPEED_ONLY = ("workers",)


def _common(p: Params) -> dict[str, Any]:
    base = {k: v for k, v in dataclasses.asdict(p.base).items() if k not in SPEED_ONLY}
    return {"base": base, "data": dataclasses.asdict(p.data)}


#: the fields of a model entry that its train and evaluate stages read (label, group and twin are for
#: the figures and the report; the train/evaluate overrides are merged into those sections)
MODEL_FIELDS = ("arch", "kwargs", "options", "init_from")
#: the fields of a model entry the claims ledger reads (a trend orders a group by a keyword; replicas are seeds)
CLAIMS_FIELDS = ("arch", "kwargs", "group", "replica_of", "seeds")


def _entry(p: Params, key: str) -> dict[str, Any]:
    e = dataclasses.asdict(p.model(key))
    return {f: e[f] for f in MODEL_FIELDS}


def stage_settings(p: Params) -> dict[str, dict[str, Any]]:
    """{path relative to results/settings: settings} for every stage of ``p``."""
    out: dict[str, dict[str, Any]] = {"data.json": _common(p)}
    for key in p.models:
        out[f"train/{key}.json"] = {**_common(p), "train": dataclasses.asdict(p.train_config(key)),
                                    "model": _entry(p, key)}
        out[f"evaluate/{key}.json"] = {**_common(p), "evaluate": dataclasses.asdict(p.evaluate_config(key)),
                                       "model": _entry(p, key)}
    out["explain.json"] = {**_common(p), "explain": dataclasses.asdict(p.explain),
                           "models": {k: {"label": e.label} for k, e in p.models.items() if not e.replica_of}}
    entries = {k: {f: v for f, v in dataclasses.asdict(e).items() if f not in ("train", "evaluate")}
               for k, e in p.models.items()}
    out["figures.json"] = {**_common(p), "figures": dataclasses.asdict(p.figures),
                           "models": {k: v for k, v in entries.items() if not v["replica_of"]}}
    out["claims.json"] = {**_common(p), "models": {k: {f: v[f] for f in CLAIMS_FIELDS} for k, v in entries.items()}}
    return out


def settings_path(stage: str, key: str | None = None) -> str:
    """The settings file of ``stage`` (and model ``key``), relative to the project root."""
    return f"{FOLDER}/{stage}/{key}.json" if key else f"{FOLDER}/{stage}.json"


#: train settings that decide how often and in what batches the test set is scored, not the weights
#: (testing draws no random numbers and changes no parameter): left out of the training fingerprint
NOT_WEIGHTS = ("eval_batch_size", "test_every", "checkpoint_every")


def training_fingerprint(key: str, folder: Path) -> str | None:
    """A short hash of what trains model ``key``: its ``train/<key>.json`` under ``folder`` (the
    settings folder of a run) and those of the models it starts from (``init_from``, in turn),
    without the settings of :data:`NOT_WEIGHTS`.
    Two trainings with the same fingerprint differ only by the machine (floating-point order) or by
    code; a measurement of a model (the under-training check, a fidelity option) records it, so that
    the claims ledger can tell a model retrained with other settings from the same one trained
    elsewhere.  None when a settings file is missing."""
    import hashlib
    chain, seen = [], set()
    while key and key not in seen:
        path = folder / "train" / f"{key}.json"
        if not path.is_file():
            return None
        settings = json.loads(path.read_text())
        settings["train"] = {k: v for k, v in (settings.get("train") or {}).items() if k not in NOT_WEIGHTS}
        chain.append(settings)
        seen.add(key)
        key = (settings.get("model") or {}).get("init_from") or ""
    return hashlib.sha256(json.dumps(chain, sort_keys=True).encode()).hexdigest()[:16]


def _text(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_settings(p: Params, folder: Path) -> list[str]:
    """Write the settings files of ``p`` into ``folder`` (a file only where its content changed;
    files of models no longer in params.yaml are removed).  Returns the files written."""
    from .core.utils import atomic_write
    wanted = {folder / rel: _text(s) for rel, s in stage_settings(p).items()}
    written = []
    for path, text in wanted.items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
            written.append(str(path))
    for old in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        if old not in wanted:
            old.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=None, help="params.yaml to read (default: the project's)")
    ap.add_argument("--out", default=None, help=f"folder to write (default: {FOLDER} under the project root)")
    args = ap.parse_args(argv)
    path = Path(args.params) if args.params else project_root() / "params.yaml"
    try:
        p = load_params(path)   # the whole file, every model against the registries
    except (ConfigError, FileNotFoundError) as e:
        message = " ".join(str(e).split()).replace(str(path), display_path(path))
        print(f"error: {message} (nothing was run or written: fix it and run again)", file=sys.stderr)
        return 2
    data = Path(p.data.root) if Path(p.data.root).is_absolute() else project_root() / p.data.root
    if not data.is_dir():   # the data stage, next, would stop on DVC's bare "missing dependency"
        print(f"error: the data folder {display_path(data)} (data.root) does not exist: run `make data` "
              f"(it installs or downloads Fashion-MNIST and checks it), or set data.root to your data", file=sys.stderr)
        return 2
    folder = Path(args.out) if args.out else project_root() / FOLDER
    written = write_settings(p, folder)
    print(f"settings of {len(p.models)} models (profile {p.base.profile}) in {display_path(folder)}: "
          f"{len(written)} file(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
