"""A smoke run: ``python -m bcos_lib.smoke`` (``make smoke``).

Every kind of stage of the pipeline — data, train, explain, evaluate, figures, the claims ledger and
the README's results sections — runs once, through the same runner and notebooks as ``dvc repro``, on a handful
of models with the ``smoke`` profile (params.yaml: the tiny one on 1 000 images for 1 epoch), and writes under ``runs/smoke/`` (git-ignored).  The
committed results, figures, README and ``dvc.lock`` are not touched and DVC is not involved, so
``git status`` stays clean; the README step updates a copy, ``runs/smoke/README.md``.

The models: the standard and the B-cos CNN (the main comparison) and the B-cosified standard CNN
(a model that starts from another trained one); each stage takes all of them in one notebook run,
since starting a stage (a kernel that imports torch) is most of the cost on a small machine.
It took 3 min 55 s on the 2-core development machine, shared with other work (``--models`` takes other keys of
params.yaml, comma-separated).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["SMOKE_MODELS", "smoke_commands", "main"]

SMOKE_MODELS = ("std_cnn", "bcos_cnn", "bcosified_cnn")
STAGES = (("10_data", False), ("20_train", True), ("30_explain", True), ("40_evaluate", True), ("50_figures", False))


def smoke_commands(out: str, models: Sequence[str], profile: str = "smoke") -> list[list[str]]:
    """The runner commands of a smoke run into ``out`` (relative to the project root)."""
    cmds = []
    for nb, per_model in STAGES:
        cmd = [sys.executable, "-m", "bcos_lib.runner", f"notebooks/{nb}.ipynb", f"{out}/results/notebooks/{nb}.ipynb",
               "-p", "profile", profile, "-p", "output_dir", out]
        if per_model:
            cmd += ["-p", "models", ",".join(models)]
        cmds.append(cmd)
    cmds.append([sys.executable, "-m", "bcos_lib.stages.claims", "--profile", profile, "--out", out])
    return cmds


def main(argv: Sequence[str] | None = None) -> int:
    from .core.paths import project_root
    from .readme import update_readme

    ap = argparse.ArgumentParser(prog="python -m bcos_lib.smoke", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SMOKE_MODELS), help="model keys of params.yaml, comma-separated")
    ap.add_argument("--out", default="runs/smoke", help="the output folder, relative to the project root")
    ap.add_argument("--profile", default="smoke")
    args = ap.parse_args(argv)
    root = project_root()
    out = Path(args.out)
    if out.is_absolute() or ".." in out.parts or not out.parts or out.parts[0] != "runs":
        print(f"error: --out {args.out}: a smoke run writes below runs/ only (git-ignored), e.g. runs/smoke",
              file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    t_all = time.monotonic()
    for cmd in smoke_commands(out.as_posix(), models, args.profile):
        name = cmd[3] if cmd[2] == "bcos_lib.runner" else cmd[2]
        t0 = time.monotonic()
        print(f"smoke: {' '.join(cmd[1:4])} {' '.join(cmd[4:])}", flush=True)
        p = subprocess.run(cmd, cwd=root, check=False)
        if p.returncode != 0:
            print(f"smoke: FAILED at {name} (exit {p.returncode}); nothing outside {out} was written",
                  file=sys.stderr)
            return p.returncode
        print(f"smoke: {name} done in {time.monotonic() - t0:.0f} s", flush=True)
    readme = root / out / "README.md"
    shutil.copyfile(root / "README.md", readme)
    update_readme(readme, root / out / "results" / "report.md", claims=root / out / "results" / "claims.md")
    print(f"smoke: every stage ran on {', '.join(models)} in {time.monotonic() - t_all:.0f} s; "
          f"outputs in {out}/ (the committed results are untouched)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
