"""Running ``make`` from a test that may itself run under ``make test`` (as CI does).

A make started from inside another make inherits ``MAKELEVEL`` and ``MAKEFLAGS`` and then
prints "Entering directory" lines (and takes the parent's flags), so tests that read what
make prints start it as a user would from a shell: a top-level make, no directory lines.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

_INHERITED = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "GNUMAKEFLAGS")


def top_level_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) without what a parent make passes down."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k not in _INHERITED}


def make(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """``make --no-print-directory *args`` in ``cwd`` as a top-level make; output captured as text."""
    env = top_level_env(kwargs.pop("env", None))
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, **kwargs)
