"""The stage server (bcos_lib.forkserver): a stage that a warm server runs behaves, and writes, as
one run in a process of its own — same bytes, same exit statuses, Ctrl-C passed on — and a server
only ever runs the library, interpreter, folder and environment it was started with."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bcos_lib import forkserver

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the stage server needs fork and Unix sockets")

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, *sources: str) -> Path:
    cells = [{"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"]}, "execution_count": None,
              "outputs": [], "source": 'profile = "tiny"\nvalue = 0'}]
    cells += [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
               "source": s} for i, s in enumerate(sources)]
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": cells, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A scratch project (the repository's params.yaml and bcos_lib, linked), its notebooks, and a
    warm stage server for runners started there with this environment."""
    root = tmp_path_factory.mktemp("served") / "project"
    (root / "nb").mkdir(parents=True)
    (root / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (root / "bcos_lib").symlink_to(REPO / "bcos_lib")
    _notebook(root / "nb" / "good.ipynb",
              "import os, torch\nprint(f'value {value}', flush=True)\nprint('pid', os.getpid(), os.getppid())",
              "torch.manual_seed(value)\nprint(torch.rand(3).tolist())")
    _notebook(root / "nb" / "random.ipynb", "import torch, numpy\nprint(torch.rand(2).tolist(), numpy.random.rand())")
    _notebook(root / "nb" / "bad.ipynb", "print('working')", "raise ValueError('the input is wrong')")
    _notebook(root / "nb" / "slow.ipynb", "import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BCOS_RUNNER", "BCOS_PROJECT_ROOT", "BCOS_OUTPUT_ROOT", "PYTHONPATH"))}
    sock = forkserver.start(root, env)
    yield root, env, sock
    forkserver.stop(sock)


def _run(root: Path, env: dict, *args: str, server: bool = True) -> subprocess.CompletedProcess:
    env = dict(env) if server else {**env, "BCOS_RUNNER_SERVER": "0"}
    return subprocess.run([sys.executable, "-m", "bcos_lib.runner", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_served_stage_runs_in_the_server_and_writes_what_its_own_process_writes(served):
    root, env, sock = served
    own = _run(root, env, "nb/good.ipynb", "results/own.ipynb", "-p", "value", "7", server=False)
    srv = _run(root, env, "nb/good.ipynb", "results/served.ipynb", "-p", "value", "7")
    assert own.returncode == 0 and srv.returncode == 0, own.stderr + srv.stderr
    assert "value 7" in srv.stdout   # the child writes to the runner's own streams
    pid, parent = map(int, next(line.split()[1:] for line in srv.stdout.splitlines() if line.startswith("pid ")))
    server_pids = {int(line.split()[2]) for line in (sock.parent / "server.log").read_text().splitlines()
                   if line.startswith("stage server ") and line.endswith(f"ready at {sock}")}
    assert parent in server_pids   # the stage ran in a child of the warm server, not in the runner's process
    own_pid = next(line.split()[1] for line in own.stdout.splitlines() if line.startswith("pid "))
    assert int(own_pid) != pid
    a = (root / "results" / "own.ipynb").read_text().replace("own.ipynb", "X")
    b = (root / "results" / "served.ipynb").read_text().replace("served.ipynb", "X")
    strip = lambda t: "\n".join(line for line in t.splitlines() if '"pid ' not in line)  # noqa: E731
    assert strip(a) == strip(b)


def test_each_served_stage_draws_unseeded_numbers_of_its_own(served):
    root, env, _ = served
    first, second = (_run(root, env, "nb/random.ipynb", f"results/r{i}.ipynb") for i in (1, 2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[1] != second.stdout.splitlines()[1]   # not the server's one stream


def test_a_failing_served_stage_ends_as_it_would_in_its_own_process(served):
    root, env, _ = served
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / "bad.ipynb").write_text("previous")
    p = _run(root, env, "nb/bad.ipynb", "results/bad.ipynb")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == "error: ValueError: the input is wrong"
    assert (root / "results" / "bad.ipynb").read_text() == "previous"
    assert (root / "results" / "bad.failed.ipynb").is_file()
    typo = _run(root, env, "nb/good.ipynb", "results/t.ipynb", "-p", "models", "no_such_model")
    assert typo.returncode == 2 and "no model 'no_such_model'" in typo.stderr
    assert not (root / "results" / "t.ipynb").exists()


def test_ctrl_c_on_the_runner_interrupts_the_served_stage(served):
    root, env, _ = served
    proc = subprocess.Popen([sys.executable, "-m", "bcos_lib.runner", "nb/slow.ipynb", "results/slow.ipynb"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("running ")
    assert proc.stdout.readline().strip() == "sleeping"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 1 and "KeyboardInterrupt" in err
    assert not (root / "results" / "slow.ipynb").exists()


def test_another_library_environment_or_folder_is_another_server(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    env = {"PYTHONHASHSEED": "0", "PATH": "/bin"}
    fp = forkserver.fingerprint(env, package=pkg, cwd=tmp_path)
    assert forkserver.fingerprint({**env, "PATH": "/usr/bin", "DVC_STAGE": "x"}, package=pkg, cwd=tmp_path) == fp
    assert forkserver.fingerprint({**env, "PYTHONHASHSEED": "1"}, package=pkg, cwd=tmp_path) != fp
    assert forkserver.fingerprint({**env, "OMP_NUM_THREADS": "1"}, package=pkg, cwd=tmp_path) != fp
    assert forkserver.fingerprint(env, package=pkg, cwd=pkg) != fp
    (pkg / "a.py").write_text("x = 2\n")   # an edit (same size: the modification time tells)
    os.utime(pkg / "a.py", ns=(1, 1))
    assert forkserver.fingerprint(env, package=pkg, cwd=tmp_path) != fp


def test_a_server_for_another_fingerprint_refuses_to_start(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bcos_lib.forkserver", "--serve", str(tmp_path / "0123.sock")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not this process's fingerprint" in p.stderr
    assert not (tmp_path / "0123.sock").exists()


def test_the_server_is_off_on_request_and_with_a_kernel(monkeypatch):
    monkeypatch.delenv("BCOS_RUNNER_KERNEL", raising=False)
    monkeypatch.setenv("BCOS_RUNNER_SERVER", "0")
    assert not forkserver.enabled()
    monkeypatch.setenv("BCOS_RUNNER_SERVER", "1")
    assert forkserver.enabled()
    monkeypatch.setenv("BCOS_RUNNER_KERNEL", "1")
    assert not forkserver.enabled()


def test_an_idle_server_exits_and_removes_its_socket(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (root / "bcos_lib").symlink_to(REPO / "bcos_lib")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BCOS_RUNNER")}, "BCOS_RUNNER_SERVER_IDLE": "1"}
    sock = forkserver.start(root, env)
    deadline = time.monotonic() + 30
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sock.exists()
