"""What ``make repro PROFILE=<name>`` says before it switches the pipeline to another profile.

``python scripts/repro_notice.py NAME [--confirm 1]``: when NAME is the profile params.yaml
already has, there is nothing to say (``dvc repro`` reruns only what changed) and it exits 0.
Otherwise it prints what the run will overwrite (every committed result, figure, the README's
results section and dvc.lock) and about how long it takes, then goes on only when confirmed:
``--confirm 1`` (``make repro PROFILE=NAME CONFIRM=1``), or a ``y`` typed at the prompt when
stdin is a terminal; anything else (no terminal: a script, CI) stops with exit status 1 and
nothing changed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: measured whole-pipeline times (2-core development machine, fresh clone) and what is known otherwise
DURATION = {
    "default": "about 39 minutes on 2 CPU cores, longer on a slower machine (docs/speed.md)",
    "tiny": "about 39 minutes on 2 CPU cores, measured with 52 stages before the sweeps had seed replicas (most of it their start-up)",
    "gpu": ("many hours on a CPU (30 epochs per model, three training seeds of every model a claim rests on, as in the default); "
            "not measured on a GPU here"),
    "smoke": "as long as the tiny profile's pipeline; for the short check use `make smoke` instead",
}
OVERWRITTEN = ("models/", "results/", "figures/", "the results section of README.md", "dvc.lock",
               "base.profile in params.yaml")


def notice(name: str, current: str, n_stages: int) -> str:
    return (f"make repro PROFILE={name}: switches the pipeline from profile {current!r} to {name!r} and reruns all "
            f"{n_stages} stages, {DURATION.get(name, 'for a time not measured here (run `make smoke` first)')}.\n"
            f"It overwrites the committed results: {', '.join(OVERWRITTEN)}.\n"
            f"Going back (`make repro PROFILE={current} CONFIRM=1`) reruns them again unless DVC's cache still "
            f"holds them (a fresh clone has none).\n"
            "To check that every stage works without touching the results: `make smoke` (about 4 minutes, "
            "written under runs/smoke/).")


def main(argv: list[str] | None = None) -> int:
    import yaml

    from bcos_lib.dvcgen import stage_names
    from bcos_lib.core.paths import project_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--confirm", default="", help="1: go on without asking")
    args = ap.parse_args(argv)
    root = project_root()
    raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
    current = (raw.get("base") or {}).get("profile", "default")
    if args.profile == current:
        return 0
    dvc_yaml = root / "dvc.yaml"
    n = len(stage_names(dvc_yaml.read_text())) if dvc_yaml.is_file() else 0
    print(notice(args.profile, current, n), flush=True)
    if args.confirm.strip() == "1":
        return 0
    if sys.stdin.isatty():
        answer = input(f"Switch to {args.profile!r} and overwrite the results? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return 0
    print(f"stopped: nothing was changed. To go on: make repro PROFILE={args.profile} CONFIRM=1", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
