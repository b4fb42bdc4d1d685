"""The stage commands dvcgen writes quote every word, also once DVC has filled in ``${…}``.

DVC interpolates ``${base.profile}`` from params.yaml (and ``${key}`` from the stage's mapping)
before the shell sees the command, and before the runner can check the value: a value with a
space or a ``$(…)`` must reach the runner as one argument and run nothing.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bcos_lib.dvcgen import _cmd

HOSTILE = "my prof$(touch PWNED)`touch PWNED2`;touch PWNED3"


def expected_argv(stage: str, nb: str, out: str, profile: str, models: str | None) -> list[str]:
    argv = ["-m", "bcos_lib.runner", f"notebooks/{nb}.ipynb", out, "-p", "profile", profile, "-p", "output_dir", "."]
    return argv + (["-p", "models", models] if models else [])


@pytest.mark.parametrize("stage, kw", [("train", {"key": "key"}), ("explain", {"models": "all"}), ("data", {})])
def test_each_word_stays_one_argument(stage, kw):
    cmd = _cmd(stage, **kw).replace("${base.profile}", HOSTILE)
    words = shlex.split(cmd)
    assert words[0] == "python"
    assert HOSTILE in words
    if "key" in kw:
        assert words[-3:] == ["-p", "models", kw["key"]]


@pytest.mark.slow
def test_dvc_runs_a_generated_command_without_running_what_a_value_holds(tmp_path):
    """A real `dvc repro` of a stage whose command is _cmd's, with a stand-in `python` that
    records its arguments: the hostile profile name arrives as one argument and nothing ran."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    fake = repo / "bin" / "python"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > argv.txt\n")
    fake.chmod(0o755)
    (repo / "params.yaml").write_text(yaml.safe_dump({"base": {"profile": HOSTILE}}))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train-m_1": {
        "cmd": _cmd("train", "m_1"), "params": ["base"], "outs": [{"argv.txt": {"cache": False}}]}}}))
    env = {**os.environ, "PATH": f"{repo / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True, env=env)
    p = subprocess.run([dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not list(repo.glob("PWNED*")), "a value from params.yaml ran as a shell command"
    argv = (repo / "argv.txt").read_text().splitlines()
    assert argv == expected_argv("train", "20_train", "results/notebooks/20_train_m_1.ipynb", HOSTILE, "m_1")
