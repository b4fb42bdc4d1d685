"""JupyterLab as a way into the project: `make lab`'s server, checked through its REST API.

The server is started with the options `make lab` uses (``scripts/lab.py: lab_command``), on
loopback, on a free port, with a random token, and with Jupyter's runtime, config and data
folders for user state in a temporary folder.  Through the REST API the tests check that the
notebooks list and open, that the ``python3`` kernel is this environment's Python, and that a
cell executed through that kernel imports bcos_lib and computes the expected number.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from _make import make

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ["01_bcos_transform.ipynb", "02_alignment_pressure.ipynb", "03_dynamic_linearity.ipynb"]
START_TIMEOUT = 60  # s, for the server and for the kernel (a loaded 2-core machine)


def _lab_module():
    spec = importlib.util.spec_from_file_location("lab", ROOT / "scripts" / "lab.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Lab:
    def __init__(self, port: int, token: str, log: Path):
        self.base, self.token, self.log = f"http://127.0.0.1:{port}", token, log

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, method: str, path: str, body: dict | None = None, expect: int = 200):
        status, data = self.request(method, path, body)
        assert status == expect, f"{method} {path}: HTTP {status} {data[:300]!r}\n{self.log_tail()}"
        return json.loads(data) if data else None

    def log_tail(self) -> str:
        return "server log (tail):\n" + self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab_mod = _lab_module()
    tmp = tmp_path_factory.mktemp("jupyterlab")
    with socket.socket() as s:  # a port the OS picks (two xdist workers may start a server each)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = uuid.uuid4().hex
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    env.pop("JUPYTER_TOKEN", None)
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(lab_mod.lab_command(port, token, open_browser=False), cwd=tmp, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(port, token, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}\n{server.log_tail()}"
            try:
                if server.request("GET", "/api/status", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"jupyter lab did not answer in {START_TIMEOUT} s\n{server.log_tail()}"
            time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_lab_command_allows_root_only_as_root_and_never_opens_a_browser_headless(monkeypatch):
    lab_mod = _lab_module()
    for uid, expected in ((0, True), (1000, False)):
        monkeypatch.setattr(os, "geteuid", lambda uid=uid: uid)
        argv = lab_mod.lab_command(8888, "t")
        assert ("--ServerApp.allow_root=True" in argv) is expected
        assert "--ServerApp.open_browser=False" in argv and "--ServerApp.ip=127.0.0.1" in argv
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert lab_mod.is_headless()
    monkeypatch.setenv("DISPLAY", ":0")
    assert not lab_mod.is_headless()
    assert lab_mod.lab_url("127.0.0.1", 8890, "abc") == "http://127.0.0.1:8890/lab/tree/notebooks?token=abc"


def test_make_lab_runs_the_lab_script():
    r = make(["-n", "lab"], ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].endswith("python scripts/lab.py"), r.stdout


def test_lab_lists_and_opens_the_notebooks(lab):
    listing = lab.json("GET", "/api/contents/notebooks")
    names = {item["name"]: item["type"] for item in listing["content"]}
    assert names.get("tutorials") == "directory" and names.get("20_train.ipynb") == "notebook", names
    tutorials = {item["name"] for item in lab.json("GET", "/api/contents/notebooks/tutorials")["content"]}
    assert set(TUTORIALS) <= tutorials, tutorials
    nb = lab.json("GET", f"/api/contents/notebooks/tutorials/{TUTORIALS[0]}?content=1")
    assert nb["type"] == "notebook"
    assert nb["content"]["metadata"]["kernelspec"]["name"] == "python3"
    assert "".join(nb["content"]["cells"][0]["source"]).startswith("# 01")
    # the page `make lab` opens renders, with the widgets extension that tqdm's notebook bars need
    status, page = lab.request("GET", "/lab/tree/notebooks")
    assert status == 200, lab.log_tail()
    assert b"@jupyter-widgets/jupyterlab-manager" in page


def _execute(lab: Lab, kernel_id: str, code: str, timeout: float = START_TIMEOUT) -> tuple[str, list[dict]]:
    """Run ``code`` through the kernel's websocket; return its stdout and any error messages."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{lab.base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels"
                                     f"?token={lab.token}", timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        stdout, errors = [], []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                stdout.append(msg["content"]["text"])
            elif kind == "error":
                errors.append(msg["content"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(stdout), errors
        raise AssertionError(f"the kernel did not finish the cell in {timeout} s\n{lab.log_tail()}")
    finally:
        ws.close()


def test_a_kernel_of_this_environment_runs_bcos_lib(lab):
    specs = lab.json("GET", "/api/kernelspecs")
    assert specs["default"] == "python3" and "python3" in specs["kernelspecs"], specs
    kernel_python = Path(specs["kernelspecs"]["python3"]["spec"]["argv"][0])
    assert kernel_python.parent.resolve() == Path(sys.executable).parent.resolve(), (kernel_python, sys.executable)

    # open a tutorial the way JupyterLab does: a session for the notebook, with a python3 kernel
    path = f"notebooks/tutorials/{TUTORIALS[0]}"
    session = lab.json("POST", "/api/sessions", {"path": path, "name": TUTORIALS[0], "type": "notebook",
                                                 "kernel": {"name": "python3"}}, expect=201)
    kernel_id = session["kernel"]["id"]
    try:
        assert kernel_id in {k["id"] for k in lab.json("GET", "/api/kernels")}
        tests_dir = str(Path(__file__).resolve().parent)
        code = ("import json, sys, torch, bcos_lib\n"
                f"sys.path.insert(0, {tests_dir!r})\n"
                "from reference import bcos_unit\n"
                "from tqdm.notebook import IProgress\n"
                "w = torch.tensor([[3.0, 4.0]], dtype=torch.float64)\n"
                "x = torch.tensor([1.0, 0.0], dtype=torch.float64)\n"
                "print(json.dumps({'prefix': sys.prefix, 'version': bcos_lib.__version__,\n"
                "                  'widgets': IProgress is not None, 'bcos': float(bcos_unit(w, x, 2.0)[0])}))\n")
        out, errors = _execute(lab, kernel_id, code)
        assert not errors, errors
        result = json.loads(out.strip().splitlines()[-1])
        import bcos_lib

        assert Path(result["prefix"]).resolve() == Path(sys.prefix).resolve()
        assert result["version"] == bcos_lib.__version__
        assert result["widgets"], "ipywidgets is missing: tqdm's notebook bars would warn 'IProgress not found'"
        # B-cos(x; w) for ŵ = (0.6, 0.8), x = (1, 0), B = 2: (ŵᵀx)·|cos| = 0.6 · 0.6
        assert result["bcos"] == pytest.approx(0.36, abs=1e-5)
    finally:
        lab.json("DELETE", f"/api/sessions/{session['id']}", expect=204)
    assert kernel_id not in {k["id"] for k in lab.json("GET", "/api/kernels")}
