"""The project's set-up files agree with each other (conda cannot be run here, so check it)."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from bcos_lib.core.paths import project_root

ROOT = project_root()


def test_environment_yml_is_generated_from_the_pip_spec():
    r = subprocess.run([sys.executable, "scripts/sync_environment.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = env["dependencies"][-1]["pip"]
    assert any(p.startswith("torch==") for p in pins) and any(p.startswith("torchvision==") for p in pins)


def test_lock_pins_a_matching_torch_pair():
    import torch
    import torchvision
    lock = dict(line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert torch.__version__.split("+")[0] == lock["torch"]
    assert torchvision.__version__.split("+")[0] == lock["torchvision"]
    # torchvision's C++ ops load against this torch (a mismatched pair fails here)
    torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)


def test_lock_pins_the_build_backend_pyproject_needs():
    """`make` installs bcos_lib with --no-build-isolation, so the lock's setuptools must meet
    pyproject's build-system requirement (e.g. the SPDX `license = "MIT"` needs setuptools ≥ 77)."""
    import tomllib

    from packaging.requirements import Requirement

    lock = dict(line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-build-isolation" in makefile
    for req in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        r = Requirement(req)
        assert r.name in lock, f"requirements.lock does not pin the build requirement {r.name}"
        assert r.specifier.contains(lock[r.name]), f"locked {r.name}=={lock[r.name]} does not satisfy {req}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make repro" in readme


def test_dvc_analytics_is_off():
    assert "analytics = false" in (ROOT / ".dvc" / "config").read_text()


def test_notebooks_are_committed_clean_with_the_python3_kernel():
    for nb_path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", nb_path
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{nb_path} has outputs"
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path} needs exactly one cell tagged 'parameters'"
        assert 'profile = "tiny"' in "".join(tagged[0]["source"]), f"{nb_path}: defaults must be the tiny profile"


def test_every_stage_notebook_is_in_dvc_yaml():
    dvc = (ROOT / "dvc.yaml").read_text()
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb_path.name}" in dvc, f"{nb_path.name} is not run by any stage"
