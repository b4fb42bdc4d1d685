"""The models of one stage, the seed replicas of a model side by side on the CPU.

A train or evaluate stage runs several models when a model has training ``seeds`` (the model
and its replicas ``<key>_s<seed>`` share the stage).  On a CPU of a few cores, these small
networks gain little from a second thread of one process and more from a second process: on
the 2-core machine this project is measured on, images per second of a training step, three
(two) one-thread processes at once ÷ one process with two threads: the B-cos CNN 1.23× (1.18×),
the standard CNN 1.45× (1.46×), the LWTA CNN 1.32× (1.25×) (``python scripts/bench.py --only
side_by_side``, docs/speed.md).  So :func:`run_members` runs every member of a
seeded family in its own process with **one thread**, ``base.workers`` of them at a time
(0: one more than the CPU cores), and any other model in the stage's own process, one after another, as
before.  Because such a member always has exactly one thread, its numbers do not depend on how
many run at once, nor on whether the stage runs under DVC, in Jupyter or in a test: the model's
weights are the same bytes with ``workers: 1`` and ``workers: 3``.  On a GPU, under ``torchrun``
or with ``BCOS_NPROC`` > 1, every model runs in the stage's process.

A member's process is a fork of the stage's process where the platform has fork (Linux), else
``python -m bcos_lib.core.members <stage module> <key>``, which sets up the same run (profile,
output folder, params file); either sets one thread and calls the stage's ``run(run, key)``.
Its output is handed on to the stage's log once it and every member before it have ended (in
the order of the keys, so the log, an executed notebook that DVC tracks, does not depend on
which process finished first), and what it wrote is read back with the stage's
``read_result(run, key)``.  A member that fails stops the stage with its own error message after
the others have finished (each writes its files atomically, so what they wrote is complete).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

__all__ = ["side_by_side", "run_members", "worker_count", "MemberError"]


class MemberError(RuntimeError):
    """A model of the stage failed in its own process."""


def side_by_side(run: Any, key: str) -> bool:
    """Whether ``models.<key>`` runs in its own one-thread process: a member of a seeded family
    (a model with ``seeds`` or one of its replicas) on the CPU, outside torchrun."""
    entry = run.params.model(key)
    if not (entry.seeds or entry.replica_of):
        return False
    if run.device.type != "cpu" or "WORLD_SIZE" in os.environ or int(os.environ.get("BCOS_NPROC") or 1) > 1:
        return False
    return True


def worker_count(run: Any, n_members: int) -> int:
    """How many member processes run at once: ``base.workers``, 0 meaning one more than the CPU
    cores (a model and two replicas at once on two cores: with two at a time the third would run
    alone on one core while the other idles, slower than one after another on both)."""
    want = run.params.base.workers or (os.cpu_count() or 1) + 1
    return max(1, min(want, n_members))


def _command(stage: ModuleType, run: Any, key: str) -> list[str]:
    cmd = [sys.executable, "-m", __name__, stage.__name__, key, "--profile", run.params.base.profile,
           "--output-dir", str(run.out)]
    if getattr(run, "params_path", None):
        cmd += ["--params", str(run.params_path)]
    return cmd


def _member_options(stage: ModuleType) -> dict[str, Any]:
    """What a member's ``stage.run`` is called with besides (run, key): no progress bar (its output
    reaches the stage's log only when it ends), in a forked and a spawned member alike."""
    return {"progress": False} if "progress" in stage.run.__code__.co_varnames else {}


def _start_method() -> str:
    """``fork`` where the platform has it (Linux: the member inherits the stage's imports and data,
    ~0.1 s to start), else ``spawn`` (a fresh ``python -m bcos_lib.core.members``, ~3.5 s to import
    torch and the library); ``BCOS_MEMBERS_START=spawn`` picks the latter everywhere."""
    import multiprocessing as mp
    want = os.environ.get("BCOS_MEMBERS_START", "")
    if want in ("fork", "spawn"):
        return want
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def _forked_member(stage: ModuleType, run: Any, key: str, log_path: str) -> None:
    """The body of a forked member: its output into ``log_path``, one thread, the stage's run()."""
    import traceback

    import torch
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
    torch.set_num_threads(1)
    try:
        stage.run(run, key, **_member_options(stage))
    except BaseException:   # noqa: BLE001 - the parent reports it with the member's key
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


class _Member:
    """One running member: a forked process or a spawned command, its log file."""

    def __init__(self, stage: ModuleType, run: Any, key: str, log_path: Path, method: str, env: dict[str, str],
                 root: Path):
        self.key, self.log_path = key, log_path
        if method == "fork":
            import multiprocessing as mp
            self.proc = mp.get_context("fork").Process(target=_forked_member,
                                                       args=(stage, run, key, str(log_path)), daemon=False)
            self.proc.start()
            self.popen = None
        else:
            self.out = open(log_path, "w")
            self.popen = subprocess.Popen(_command(stage, run, key), cwd=root, env=env, stdout=self.out,
                                          stderr=subprocess.STDOUT, text=True)

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        return None if self.proc.is_alive() else self.proc.exitcode

    def finish(self) -> str:
        if self.popen is not None:
            self.out.close()
        else:
            self.proc.join()
        return self.log_path.read_text(errors="replace")


def run_members(stage: ModuleType, run: Any, keys: list[str], log: Callable[[str], None] = print,
                **kwargs: Any) -> dict[str, Any]:
    """``stage.run(run, key, **kwargs)`` for every key, the seeded families side by side (module
    docstring; their members take :func:`_member_options` instead of ``kwargs``); returns
    ``{key: result}`` in the order of ``keys``."""
    from .paths import project_root
    together = [k for k in keys if side_by_side(run, k)]
    results: dict[str, Any] = {}
    if together:
        root = project_root()
        env = {**os.environ, "BCOS_PROJECT_ROOT": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        n = worker_count(run, len(together))
        method = _start_method()
        log(f"{len(together)} models side by side, {n} at a time, one thread each: {', '.join(together)}")
        waiting, running, failed = list(together), [], []
        done: dict[str, str] = {}
        shown = 0
        sys.stdout.flush()
        sys.stderr.flush()
        with tempfile.TemporaryDirectory(prefix="bcos-members-") as tmp:
            while waiting or running:
                while waiting and len(running) < n:
                    key = waiting.pop(0)
                    running.append(_Member(stage, run, key, Path(tmp) / f"{key}.log", method, env, root))
                for member in list(running):
                    code = member.poll()
                    if code is None:
                        continue
                    running.remove(member)
                    text = member.finish()
                    done[member.key] = text
                    if code != 0:
                        failed.append((member.key, code, text))
                # handed on in the order of the keys, not of finishing: the stage's log (the executed
                # notebook, a DVC output) is then the same bytes however the processes were scheduled
                while shown < len(together) and together[shown] in done:
                    for line in done[together[shown]].splitlines():
                        if line.strip():
                            log(f"[{together[shown]}] {line}")
                    shown += 1
                if running:
                    time.sleep(0.1)
        if failed:
            failed.sort(key=lambda f: together.index(f[0]))
            key, code, text = failed[0]
            tail = "\n".join(text.strip().splitlines()[-25:])
            others = f" (and {', '.join(k for k, _, _ in failed[1:])})" if len(failed) > 1 else ""
            raise MemberError(f"{stage.__name__.rsplit('.', 1)[-1]} of {key}{others} failed in its own process "
                              f"(exit {code}); its last lines:\n{tail}")
        for key in together:
            results[key] = stage.read_result(run, key)
    for key in keys:
        if key not in results:
            results[key] = stage.run(run, key, **kwargs)
    return {k: results[k] for k in keys}


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import importlib

    parser = argparse.ArgumentParser(description="run one model of a stage in this process, on one thread "
                                                 "(what bcos_lib.core.members.run_members starts)")
    parser.add_argument("stage", help="the stage module, e.g. bcos_lib.stages.train")
    parser.add_argument("key")
    parser.add_argument("--profile")
    parser.add_argument("--output-dir")
    parser.add_argument("--params")
    args = parser.parse_args(argv)
    import torch

    from .pipeline import setup
    run = setup(args.profile, args.output_dir, args.params, models=args.key)
    torch.set_num_threads(1)
    stage = importlib.import_module(args.stage)
    stage.run(run, args.key, **_member_options(stage))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
