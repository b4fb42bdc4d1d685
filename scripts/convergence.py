"""The under-training check of the claims ledger: is a model trained long enough to judge a claim?

    python scripts/convergence.py bcos_cnn std_cnn            # or --all-claims: every model a claim rests on

For each model key, trains the same entry of ``params.yaml`` (the active profile) with three times
its epochs, from scratch and with the same seed, into ``runs/convergence/`` (git-ignored), and
records in ``results/convergence.json`` its accuracy after the pipeline's epochs (from
``results/train/<key>/metrics.json``) beside the accuracy after three times as many.  The claims
ledger (``bcos_lib.claims.under_trained``) flags a model whose accuracy is more than 1 point below
the longer run's: a negative verdict that rests on it is then reported as *under-trained*, not as
*not reproduced*.  The check is measured once per model (it costs three trainings' time) and kept
in git; rerun it for a model whose training settings changed.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def claim_models() -> list[str]:
    """Every model key a declared claim rests on (seed replicas are checked through their model)."""
    from bcos_lib.core.config import load_params
    from bcos_lib.stages.claims import all_claims
    params = load_params()
    keys: list[str] = []
    for _, c in all_claims():
        if c.test == "trend":
            keys += [k for k, e in params.models.items() if e.group == c.group and not e.replica_of]
        keys += [a.model for a in c.arms if a.model]
        keys += [a.column for a in c.arms if a.column in params.models]   # e.g. the from-scratch model of a ratio
    return list(dict.fromkeys(keys))


def check(key: str, factor: int, out: Path) -> dict:
    from bcos_lib.core.config import load_params
    from bcos_lib.core.pipeline import Run, resolve_device
    from bcos_lib.settings import FOLDER, training_fingerprint
    from bcos_lib.stages import train

    params = load_params()
    entry = params.model(key)
    short = json.loads((ROOT / "results" / "train" / key / "metrics.json").read_text())
    epochs = params.train_config(key).epochs
    params.models[key] = dataclasses.replace(entry, train={**entry.train, "epochs": epochs * factor})
    if entry.init_from:   # start from the pipeline's trained parent, as the pipeline does
        (out / "models").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "models" / f"{entry.init_from}.pt", out / "models" / f"{entry.init_from}.pt")
    t0 = time.time()
    long = train.run(Run(params, out, resolve_device(params.base.device)), key, progress=False, log=lambda _: None)
    return {"epochs": epochs, "accuracy": float(short["test_accuracy"]), "long_epochs": epochs * factor,
            "long_accuracy": float(long["test_accuracy"]), "seconds": round(time.time() - t0),
            "settings": training_fingerprint(key, ROOT / FOLDER), "measured": dt.date.today().isoformat()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keys", nargs="*", help="model keys of params.yaml")
    ap.add_argument("--all-claims", action="store_true", help="every model a declared claim rests on")
    ap.add_argument("--factor", type=int, default=3, help="how many times the epochs the longer run trains")
    args = ap.parse_args(argv)
    keys = list(dict.fromkeys(args.keys + (claim_models() if args.all_claims else [])))
    if not keys:
        ap.error("name model keys or --all-claims")
    path = ROOT / "results" / "convergence.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    out = ROOT / "runs" / "convergence"
    for key in keys:
        if not (ROOT / "results" / "train" / key / "metrics.json").is_file():
            print(f"{key}: not trained by the pipeline yet (dvc repro first); skipped", file=sys.stderr)
            continue
        data[key] = check(key, args.factor, out)
        r = data[key]
        print(f"{key}: {r['accuracy']:.2f} % after {r['epochs']} epochs, {r['long_accuracy']:.2f} % after "
              f"{r['long_epochs']} ({r['seconds']} s)", flush=True)
        path.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")   # after each model: a long run may stop
    return 0


if __name__ == "__main__":
    sys.exit(main())
