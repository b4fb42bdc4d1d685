"""`make smoke` runs every kind of stage and writes below runs/ only (git status stays clean)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bcos_lib.smoke import STAGES, main, smoke_commands

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "fashion-mnist"


def test_every_stage_kind_runs_and_writes_below_the_output_folder():
    cmds = smoke_commands("runs/smoke", ["std_cnn", "bcos_cnn"])
    notebooks, claims = cmds[:-1], cmds[-1]
    assert [c[3] for c in notebooks] == [f"notebooks/{nb}.ipynb" for nb, _ in STAGES]
    assert {nb[3:] for nb, _ in STAGES} == {"data", "train", "explain", "evaluate", "figures"}
    for c in notebooks:
        assert c[4].startswith("runs/smoke/"), c
        assert c[c.index("output_dir") + 1] == "runs/smoke", c
    assert claims[1:3] == ["-m", "bcos_lib.stages.claims"] and claims[claims.index("--out") + 1] == "runs/smoke"


@pytest.mark.parametrize("out", ["results", "/tmp/x", "runs/../results", "."])
def test_an_output_folder_outside_runs_is_refused(out, capsys):
    assert main(["--out", out]) == 2
    assert "a smoke run writes below runs/ only" in capsys.readouterr().err


def _status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte").is_file(), reason="no data/fashion-mnist (`make data`)")
def test_a_smoke_run_leaves_git_status_as_it_was():
    out = REPO / "runs" / "smoke_test"
    shutil.rmtree(out, ignore_errors=True)
    before = _status()
    env = {k: v for k, v in os.environ.items() if k not in ("BCOS_OUTPUT_ROOT", "BCOS_PROJECT_ROOT")}
    env["PYTHONPATH"] = str(REPO)
    try:
        p = subprocess.run([sys.executable, "-m", "bcos_lib.smoke", "--models", "std_cnn", "--out", "runs/smoke_test"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
        assert "every stage ran on std_cnn" in p.stdout
        for rel in ("models/std_cnn.pt", "results/report.md", "figures/training_curves.png", "README.md",
                    "results/notebooks/50_figures.ipynb", "results/claims.json", "results/claims.md"):
            assert (out / rel).is_file(), rel
        assert _status() == before
    finally:
        shutil.rmtree(out, ignore_errors=True)
