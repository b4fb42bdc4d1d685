"""What each fidelity option changes: a pipeline model trained again with one option set as the
official code does it, beside the pipeline's own model.

    python scripts/fidelity.py                 # every variant below
    python scripts/fidelity.py bcosified_input_norm_layer

Where this companion departs from the official code of a paper, ``params.yaml`` keeps the
companion's choice and the official one is an option.  For each variant this script trains the
model of ``params.yaml`` (the active profile) with that option changed and nothing else — the same
seed, data, epochs and starting model — into ``runs/fidelity/<variant>/`` (git-ignored), runs
the model's own evaluation there, and records in ``results/fidelity.json`` the numbers its
method's claims read, for the variant and for the pipeline's model (``results/train/<key>/``,
``results/evaluate/<key>/``).  It is measured once per variant (it costs a training); rerun it
after the model's training changes.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _get(d: dict[str, Any], path: str) -> float | None:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return float(d) if isinstance(d, (int, float)) else None


@dataclasses.dataclass(frozen=True)
class Variant:
    key: str                              # the model of params.yaml
    options: dict[str, Any]               # what changes in models.<key>.options
    what: str                             # the official code's choice, in a sentence
    read: dict[str, str]                  # name → dotted path in the evaluate metrics.json


VARIANTS: dict[str, Variant] = {
    # B-cosification (NeurIPS 2024) §3.1: the official code normalises [x, 1 − x] in front of the
    # network; the companion folds the normalisation into the first layer's weights
    "bcosified_input_norm_layer": Variant(
        "bcosified_cnn", {"input_norm": "layer"},
        "[x, 1 − x] normalised in front of the network (first layer [W, −W]/2)",
        {"localisation_own": "localisation.attributions.own.mean",
         "fixed_grid_localisation": "fixed_grid_localisation.mean"}),
    # CSG (ECCV 2020): gated training in two of every three epochs after the warm-up
    "csg_two_of_three": Variant(
        "csg_std_cnn_small", {"period": 3, "gated": 2},
        "two of every three epochs gated after the warm-up",
        {"mis": "mis.mis", "filter_localisation_mi": "filter_localisation.mean_mi",
         "auroc_forest": "adversarial_detection.auroc_forest", "gate_density": "gate.density"}),
}


def measure(name: str, variant: Variant, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    from bcos_lib.core.config import load_params, method_options
    from bcos_lib.core.pipeline import Run, resolve_device
    from bcos_lib.stages import evaluate, train

    params = load_params()
    entry = params.model(variant.key)
    ours = method_options(entry, variant.key)   # the pipeline's options, defaults included
    params.models[variant.key] = dataclasses.replace(entry, options={**entry.options, **variant.options})
    if entry.init_from:   # start from the pipeline's trained parent, as the pipeline does
        (out / "models").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "models" / f"{entry.init_from}.pt", out / "models" / f"{entry.init_from}.pt")
    run = Run(params, out, resolve_device(params.base.device))
    t0 = time.time()
    import torch

    from bcos_lib.core.members import side_by_side
    from bcos_lib.settings import FOLDER, training_fingerprint
    threads = torch.get_num_threads()
    if side_by_side(run, variant.key):   # as the pipeline trains and evaluates a seeded model: one thread
        torch.set_num_threads(1)
    try:
        trained = train.run(run, variant.key, progress=False, log=lambda _: None)
        summary = evaluate.run(run, variant.key, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    pipeline_train = json.loads((ROOT / "results" / "train" / variant.key / "metrics.json").read_text())
    pipeline_eval = json.loads((ROOT / "results" / "evaluate" / variant.key / "metrics.json").read_text())
    return {"model": variant.key, "options": variant.options, "official": variant.what,
            "variant": {"test_accuracy": float(trained["test_accuracy"]),
                        **{k: _get(summary, p) for k, p in variant.read.items()}},
            "pipeline": {"options": {k: getattr(ours, k) for k in variant.options},
                         "test_accuracy": float(pipeline_train["test_accuracy"]),
                         **{k: _get(pipeline_eval, p) for k, p in variant.read.items()}},
            # what trained the pipeline's model: the ledger keeps this record for that model trained elsewhere
            "settings": training_fingerprint(variant.key, ROOT / FOLDER),
            "seconds": round(time.time() - t0), "measured": dt.date.today().isoformat()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"variants (default: all of {', '.join(VARIANTS)})")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    path = ROOT / "results" / "fidelity.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.names or list(VARIANTS):
        v = VARIANTS[name]
        if not (ROOT / "results" / "evaluate" / v.key / "metrics.json").is_file():
            print(f"{name}: {v.key} not evaluated by the pipeline yet (dvc repro first); skipped", file=sys.stderr)
            continue
        data[name] = r = measure(name, v, ROOT / "runs" / "fidelity" / name)
        print(f"{name}: {v.key} {r['variant']['test_accuracy']:.2f} % with {v.options} against "
              f"{r['pipeline']['test_accuracy']:.2f} % ({r['seconds']} s)", flush=True)
        path.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
