"""What a new user meets in a fresh clone (issue 20), with DVC and make, in scratch copies.

* ``make repro PROFILE=tiny`` runs the tiny profile (it sets ``base.profile``, that line
  only), and a fresh ``git clone`` of the committed result, at another path and without
  DVC's cache, reproduces it with ``dvc repro`` and is left with a clean ``git status``
  (defects 3 and 6);
* a typo in params.yaml fails the stage with one line and changes no output, so that once
  it is fixed ``dvc status`` is clean and nothing reruns (defects 2 and 4);
* the README's fix for a damaged model, ``dvc checkout --force models/<key>.pt``, restores
  it (defect 5).

The copies hold the working tree (as tests/test_dvc_pipeline.py makes them) with one small
model, ``std_cnn``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_dvc_pipeline import BIN, DATA, copy_project
from _make import top_level_env

REPO = Path(__file__).resolve().parents[1]
VENV = BIN.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte").is_file(), reason="no data/fashion-mnist (`make data`)"),
    pytest.mark.skipif(not (BIN / "dvc").is_file() or not (BIN / "papermill").is_file(),
                       reason=f"dvc and papermill are not installed next to {sys.executable}"),
    pytest.mark.skipif(shutil.which("make") is None, reason="no make"),
]

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def one_model(path: Path, profile: str = "default") -> None:
    """params.yaml with std_cnn only, one thread, and a tiny profile long enough for 2×2 grids."""
    raw = yaml.safe_load(path.read_text())
    raw["base"].update(profile=profile, num_threads=1)
    raw["models"] = {"std_cnn": raw["models"]["std_cnn"]}
    raw["profiles"]["tiny"]["train"].update(epochs=3, lr=0.003)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def environment() -> dict[str, str]:
    env = {k: v for k, v in top_level_env().items()
           if k not in ("BCOS_OUTPUT_ROOT", "BCOS_PROJECT_ROOT", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def sh(cmd: list[str], cwd: Path, timeout: float = 600, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout, check=False)
    if ok:
        assert p.returncode == 0, f"{' '.join(cmd)} failed (rc {p.returncode}):\n{(p.stdout + p.stderr)[-6000:]}"
    return p


def new_project(root: Path, profile: str = "default") -> Path:
    copy_project(root)
    one_model(root / "params.yaml", profile)
    sh(GIT + ["init", "-q"], root)
    sh(GIT + ["add", "-A"], root)
    sh(GIT + ["commit", "-q", "-m", "copy"], root)
    return root


def test_make_repro_profile_then_a_fresh_clone_reproduces_with_a_clean_git_status(tmp_path):
    root = new_project(tmp_path / "project")
    before = (root / "params.yaml").read_text()
    # what `make repro PROFILE=tiny` runs after the set-up (-o data: the set-up is this test's own venv and data)
    made = sh(["make", "-o", "data", "-o", "setup", "repro", "PROFILE=tiny", "CONFIRM=1", f"VENV={VENV}"], root,
              timeout=1500)
    after = (root / "params.yaml").read_text()
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert diff == [("  profile: default", "  profile: tiny")], diff
    metrics = yaml.safe_load((root / "results" / "train" / "std_cnn" / "metrics.json").read_text())
    assert metrics["profile"] == "tiny" and metrics["n_train"] == 3000, metrics
    assert "Running stage 'figures'" in made.stdout
    assert "without encryption" not in made.stdout + made.stderr
    assert "up to date" in sh(["dvc", "status"], root).stdout

    # the maintainers commit the result; a user clones it elsewhere (no DVC cache) and reruns
    sh(GIT + ["add", "-A"], root)
    sh(GIT + ["commit", "-q", "-m", "results of the tiny profile"], root)
    assert sh(["git", "status", "--porcelain"], root).stdout == ""
    clone = tmp_path / "elsewhere" / "clone"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    shutil.copytree(DATA, clone / "data" / "fashion-mnist")
    rerun = sh(["dvc", "repro"], clone, timeout=1500)
    assert "Running stage 'train-std_cnn'" in rerun.stdout  # it did rerun: the clone has no models
    status = sh(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout
    assert status == "", f"the rerun left the clone modified:\n{status}\n" + sh(["git", "diff"], clone).stdout
    sh(["dvc", "plots", "show"], clone)  # writes dvc_plots/: ignored
    assert sh(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout == ""


def test_params_typo_fails_in_one_line_and_once_fixed_nothing_reruns(tmp_path):
    root = new_project(tmp_path / "project", profile="tiny")
    sh(["dvc", "repro", "train-std_cnn"], root, timeout=900)
    notebook = root / "results" / "notebooks" / "20_train_std_cnn.ipynb"
    model = root / "models" / "std_cnn.pt"
    kept = {p: p.read_bytes() for p in (notebook, model)}
    good = (root / "params.yaml").read_text()
    for typo, line in (("  epoch: 5\n", "error: params.yaml: unknown key train.epoch; allowed here: epochs"),
                       ('  epochs: "four"\n', "error: params.yaml: train.epochs: expected an integer, got 'four' (str)")):
        assert "\n  epochs: 4\n" in good
        (root / "params.yaml").write_text(good.replace("  epochs: 4\n", typo, 1))
        failed = sh(["dvc", "repro", "train-std_cnn"], root, ok=False)
        assert failed.returncode != 0
        out = failed.stdout + failed.stderr
        errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(line), out
        assert "Traceback" not in out and "without encryption" not in out, out
        assert {p: p.read_bytes() for p in kept} == kept, "the failed stage changed an output"
        assert not list(notebook.parent.glob("*.failed.ipynb")), "nothing ran, so no notebook failed"
        (root / "params.yaml").write_text(good)
        status = sh(["dvc", "status", "train-std_cnn"], root).stdout
        assert "up to date" in status, status

    # a damaged model: the README's command restores it from DVC's cache
    model.write_bytes(kept[model][: len(kept[model]) // 3])
    assert "modified" in sh(["dvc", "status", "train-std_cnn"], root).stdout
    sh(["dvc", "checkout", "--force", "models/std_cnn.pt"], root)
    assert model.read_bytes() == kept[model]
    assert "up to date" in sh(["dvc", "status", "train-std_cnn"], root).stdout
