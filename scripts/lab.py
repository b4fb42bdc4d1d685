"""Open JupyterLab on the project's notebooks, with the project's environment as the kernel.

`make lab` runs this with the virtual environment's Python; tests/test_jupyterlab.py starts
the server with the same options (``lab_command``), so what the test checks is what users get.

* Root and non-root alike: ``--ServerApp.allow_root`` is passed when the process runs as root
  (the server refuses to start as root without it; containers and CI machines often are root).
* No browser on a headless machine (Linux without ``DISPLAY``/``WAYLAND_DISPLAY``): the URL,
  with its token, is printed instead (and the server prints it too).
* Loopback only by default (``--ip`` to change it), a free port from 8888 on (``--port``),
  a fresh random token unless ``JUPYTER_TOKEN`` is set.  Any further arguments go to
  ``jupyter lab`` unchanged (``make lab LAB_ARGS="--ServerApp.log_level=DEBUG"``).
* The server's root is the project, and it opens on ``notebooks/``.  The kernel ``python3`` is
  the one ``make setup`` installs into the environment (its ``share/jupyter/kernels``), so
  notebooks run with exactly the interpreter and packages of ``.venv``.
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_PAGE = "/lab/tree/notebooks"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def is_headless() -> bool:
    """True where no browser can open: Linux without a display (ssh sessions, containers, CI)."""
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def free_port(ip: str = "127.0.0.1", start: int = 8888, tries: int = 100) -> int:
    """The first port from ``start`` on that nothing listens on at ``ip``."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}–{start + tries - 1} on {ip}; pass --port")


def lab_url(ip: str, port: int, token: str) -> str:
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else ip
    return f"http://{host}:{port}{START_PAGE}?token={token}"


def lab_command(port: int, token: str, ip: str = "127.0.0.1", open_browser: bool = False,
                extra: list[str] | None = None) -> list[str]:
    """The command line that starts the server (the environment's own Python runs jupyterlab)."""
    argv = [sys.executable, "-m", "jupyterlab",
            f"--ServerApp.root_dir={ROOT}",
            f"--ServerApp.ip={ip}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",  # the printed URL must be the server's
            f"--IdentityProvider.token={token}",
            f"--LabApp.default_url={START_PAGE}",
            f"--ServerApp.open_browser={open_browser}"]
    if is_root():
        argv.append("--ServerApp.allow_root=True")
    return argv + list(extra or [])


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: the first free one from 8888 on)")
    opts, extra = parser.parse_known_args(args)
    port = opts.port or free_port(opts.ip)
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    command = lab_command(port, token, opts.ip, open_browser=not is_headless(), extra=extra)
    print(f"JupyterLab on the notebooks, kernel: this environment's Python ({sys.executable})\n"
          f"    {lab_url(opts.ip, port, token)}\n"
          "(open that URL in a browser; on a remote machine forward the port first, e.g. "
          f"ssh -L {port}:localhost:{port} <machine>)", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
