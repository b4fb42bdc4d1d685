"""A warm process that runs pipeline stages, so that a stage does not pay Python's and torch's start-up.

Each stage of ``dvc repro`` is one ``python -m bcos_lib.runner …`` command.  On its own, such a
process spends seconds before the stage's first line of work: the interpreter, then torch,
pandas, matplotlib, IPython and the library are imported (about 2.8 s on 2 quiet cores, ten
seconds and more while another program trains), and about 0.8 s after its last line tearing
itself down.  With 54 stages that is minutes of every run.

The runner's command line therefore first asks a *stage server* to run the stage: a process
that imported all of that once and forks a child per stage.  The child is a copy of the warm
process: it takes the runner's working directory, environment, standard streams (passed over a
Unix socket, ``SCM_RIGHTS``) and arguments, runs :func:`bcos_lib.runner.main` exactly as the
runner would have, and reports its exit status, which the runner's process then exits with.
Ctrl-C or a ``kill`` of the runner's process is passed on to the child.

What makes a child's run the same as a fresh process's:

* a server serves only the interpreter, working directory, start-up environment (``PYTHON*``,
  locale, thread and device settings) and library source it was started with: all of them, down
  to every ``bcos_lib`` file's size and modification time, name its socket, so an edited
  library (or another Python, another checkout) simply finds no server and starts a new one;
* the server imports modules and runs nothing: no tensor operation, no thread pool, no CUDA
  context exists before the fork; the child seeds torch's and numpy's default random generators
  from the system's entropy, as a fresh process does (Python's ``random`` reseeds itself after a
  fork), so two children do not share one unseeded stream;
* the child runs ``atexit``'s handlers, as a process that ends normally does.

The first stage of a run starts the server in the background (its own session, its output to
``.cache/runner/server.log``) and runs itself in its own process as before; the server exits
after :data:`IDLE_SECONDS` without a stage.  ``BCOS_RUNNER_SERVER=0`` turns it off (every stage
then runs in its own process); it is off where ``fork`` or Unix sockets are missing, and with
``BCOS_RUNNER_KERNEL=1`` (a kernel per stage).  ``python -m bcos_lib.forkserver --stop`` ends a
running server of this checkout.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["enabled", "fingerprint", "socket_path", "submit", "serve", "start", "stop", "IDLE_SECONDS"]

#: a server with no stage to run for this long exits (seconds; ``BCOS_RUNNER_SERVER_IDLE`` overrides)
IDLE_SECONDS = 120.0
#: what the server imports before it forks (what the stage notebooks import in their first cells)
PRELOAD = ("torch", "numpy", "pandas", "matplotlib.pyplot", "scipy.stats", "sklearn.metrics", "tqdm",
           "IPython.core.interactiveshell", "IPython.core.displayhook", "IPython.core.displaypub",
           "IPython.core.display_trap",
           "bcos_lib.core.config", "bcos_lib.core.pipeline", "bcos_lib.runner", "bcos_lib.inprocess",
           "bcos_lib.stages.train", "bcos_lib.stages.explain", "bcos_lib.stages.evaluate",
           "bcos_lib.stages.figures")
#: environment variables a Python process reads when it starts or imports torch: a server serves
#: only runners whose values of these equal its own (the rest of the environment is the runner's own)
_START_ENV_PREFIXES = ("PYTHON", "LANG", "LC_", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "CUDA_",
                       "TORCH", "PYTORCH_", "NVIDIA_", "MPL", "HOME", "TMPDIR", "BCOS_")
_LENGTH = struct.Struct("!I")
#: the longest path a Unix socket may have (sun_path holds 108 bytes with the final NUL)
_SUN_PATH_MAX = 107


def enabled() -> bool:
    """Whether the runner's command line should use a stage server."""
    if os.environ.get("BCOS_RUNNER_SERVER", "1").strip() in ("0", "", "no", "false"):
        return False
    if os.environ.get("BCOS_RUNNER_KERNEL", "") not in ("", "0"):
        return False
    return hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")


def _package() -> Path:
    return Path(__file__).resolve().parent


def fingerprint(environ: dict[str, str] | None = None, package: Path | None = None,
                cwd: str | os.PathLike | None = None) -> str:
    """What a server must share with a runner to run its stage as the runner would have: the
    interpreter, the working directory (``cwd``, default the current one), the start-up
    environment (``environ``, default this process's) and the library's source files (path, size
    and modification time of each)."""
    env = os.environ if environ is None else environ
    digest = hashlib.sha256()
    for part in (sys.executable, sys.version, str(Path(cwd or os.getcwd()).resolve()),
                 str(os.getuid()) if hasattr(os, "getuid") else ""):
        digest.update(part.encode() + b"\0")
    for name in sorted(env):
        if name.startswith(_START_ENV_PREFIXES) and not name.startswith("BCOS_RUNNER"):   # (the server's own switches)
            digest.update(f"{name}={env[name]}\0".encode())
    package = package or _package()
    for source in sorted(package.rglob("*.py")):
        st = source.stat()
        digest.update(f"{source.relative_to(package).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:24]


def socket_path(fp: str | None = None, cwd: str | os.PathLike | None = None) -> Path:
    """Where the server for the checkout around ``cwd`` (default: the current directory) and
    ``fp`` listens: ``.cache/runner/<fp>.sock`` in the project, or a file in the temporary folder
    when that path is too long for a Unix socket."""
    from .core.paths import project_root
    fp = fp or fingerprint(cwd=cwd)
    path = project_root(cwd) / ".cache" / "runner" / f"{fp}.sock"
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        import tempfile
        path = Path(tempfile.gettempdir()) / f"bcos-runner-{os.getuid()}-{fp}.sock"
    return path


# ----------------------------------------------------------------------------- the runner's side
def _send(sock: socket.socket, payload: dict, fds: Sequence[int] = ()) -> None:
    """The length of the JSON ``payload`` (with ``fds`` attached), then the JSON itself."""
    data = json.dumps(payload).encode()
    socket.send_fds(sock, [_LENGTH.pack(len(data))], list(fds))
    sock.sendall(data)


def _read_line(sock: socket.socket, buffer: bytearray) -> str | None:
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


def submit(argv: Sequence[str], entry: str, start: bool = True) -> int | None:
    """Run ``entry`` (``"package.module:function"``, a function of the library that takes the
    command line's arguments and returns an exit status, e.g. ``bcos_lib.runner:main``) with
    ``argv`` in a stage server; return its exit status, or None when no server could take it (the
    caller then runs it itself; with ``start``, a server is started in the background for the
    stages that follow)."""
    try:
        fp = fingerprint()
        path = socket_path(fp)
    except OSError:   # no project root here, a library file gone: the runner says what is wrong itself
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        if start:
            _start_server(path)
        return None
    try:
        _send(sock, {"entry": entry, "argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ),
                     "fingerprint": fp},
              [0, 1, 2])
        buffer = bytearray()
        first = _read_line(sock, buffer)
    except OSError:
        sock.close()
        return None
    if not first or not first.startswith("pid "):   # the server went away before it forked
        sock.close()
        return None
    child = int(first.split()[1])
    forwarded = {}

    def forward(signum, frame):   # Ctrl-C, DVC's or the user's kill: the child's, as it would be ours
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        forwarded[sig] = signal.signal(sig, forward)
    try:
        line = _read_line(sock, buffer)   # (a forwarded signal does not interrupt it: PEP 475)
    finally:
        for sig, handler in forwarded.items():
            signal.signal(sig, handler)
        sock.close()
    if line is None or not line.startswith("exit "):
        print(f"error: the stage's process (pid {child}) ended without an exit status (killed or crashed); "
              f"run the stage again, or with BCOS_RUNNER_SERVER=0 to run it in a process of its own",
              file=sys.stderr)
        return 1
    return int(line.split()[1])


def _spawn(path: Path, cwd: str | os.PathLike | None = None,
           environ: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server for ``path`` in its own session, its output appended to ``server.log`` beside
    the socket, detached from this process's streams."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / "server.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "bcos_lib.forkserver", "--serve", str(path)],
                                cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)


def _start_server(path: Path) -> None:
    """Start a server for the stages that follow (best effort: without one they run as before)."""
    try:
        _spawn(path)
    except OSError:
        pass


def start(cwd: str | os.PathLike, environ: dict[str, str], timeout: float = 300.0) -> Path:
    """Start a server for runners in ``cwd`` with ``environ`` and wait until it has done its imports
    (as the first runner of a run would start it; for tests and benchmarks).  Returns its socket."""
    path = socket_path(fingerprint(environ, cwd=cwd), cwd=cwd)
    log = path.parent / "server.log"
    since = log.stat().st_size if log.is_file() else 0
    proc = _spawn(path, cwd, environ)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if f"ready at {path}" in log.read_bytes()[since:].decode(errors="replace"):
            return path
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the stage server did not start (see {log})")


def stop(path: Path | None = None) -> bool:
    """Ask the server at ``path`` (this checkout's current one by default) to exit; True if one did."""
    path = path or socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        _send(sock, {"stop": True})
        sock.recv(16)
        return True
    except OSError:
        return False
    finally:
        sock.close()


# ----------------------------------------------------------------------------- the server's side
def _listen(path: Path) -> socket.socket | None:
    """Bind ``path`` (before the imports, so that a runner that comes meanwhile waits instead of
    starting a second server); None if a live server already has it."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return None   # (the probe's empty request is read as a closed connection and ignored)
    except OSError:
        pass
    finally:
        probe.close()
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def _receive(conn: socket.socket) -> tuple[dict | None, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, _LENGTH.size, 3)
    if len(header) < _LENGTH.size:
        for fd in fds:
            os.close(fd)
        return None, []
    (size,) = _LENGTH.unpack(header)
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return json.loads(bytes(data)), list(fds)


def _run_child(conn: socket.socket, listener: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the runner's process, run its stage, report, exit."""
    import atexit
    code = 1
    try:
        listener.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.argv[0], *request["argv"]]
        # unseeded generators as a fresh process has them: seeded from the system's entropy, not
        # the server's state shared by every child (Python's `random` reseeds itself after a fork)
        if "torch" in sys.modules:
            sys.modules["torch"].seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        conn.sendall(f"pid {os.getpid()}\n".encode())
        import importlib
        module, _, function = request["entry"].partition(":")
        main = getattr(importlib.import_module(module), function)
        try:
            code = main(request["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except KeyboardInterrupt:
            code = 130
        atexit._run_exitfuncs()
    except BaseException:   # (anything the runner's main does not handle itself)
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            conn.sendall(f"exit {int(code)}\n".encode())
        except OSError:
            pass
        os._exit(int(code) & 0xFF)


def _serves(path: Path) -> bool:
    """Whether this process (its library, Python, folder, environment) is the one ``path`` is named for."""
    return path.name.endswith(f"{fingerprint()}.sock")


def serve(path: Path, idle: float | None = None) -> int:
    """Listen at ``path``, import :data:`PRELOAD`, fork a child per stage; exit after ``idle``
    seconds without one (and with no stage still running)."""
    idle = float(os.environ.get("BCOS_RUNNER_SERVER_IDLE", IDLE_SECONDS)) if idle is None else idle
    if not _serves(path):   # started from another place, Python or environment
        print(f"stage server: {path.name} is not this process's fingerprint; exiting", file=sys.stderr, flush=True)
        return 2
    listener = _listen(path)
    if listener is None:   # a live server has it already
        print(f"stage server already ready at {path}", file=sys.stderr, flush=True)
        return 0
    try:
        import importlib
        environ = dict(os.environ)
        os.environ.setdefault("MPLBACKEND", "Agg")   # as the in-process runner sets it
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception as e:   # (an optional import missing: the child imports what it needs itself)
                print(f"stage server: {name} not preloaded ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
        os.environ.clear()
        os.environ.update(environ)
        if not _serves(path):   # the library changed while it was imported
            print("stage server: the library changed during its start; exiting", file=sys.stderr, flush=True)
            return 0
        print(f"stage server {os.getpid()} ready at {path}", file=sys.stderr, flush=True)
        children: set[int] = set()
        last = time.monotonic()
        listener.settimeout(1.0)
        while True:
            while children:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if pid == 0:
                    break
                children.discard(pid)
                last = time.monotonic()
            if not children and time.monotonic() - last > idle:
                return 0
            if not path.exists():   # removed (a clean of .cache): nobody can reach this server any more
                return 0
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10.0)
                try:
                    request, fds = _receive(conn)
                except (OSError, ValueError):
                    continue
                if request is None:
                    continue
                if request.get("stop"):
                    conn.sendall(b"ok\n")
                    return 0
                entry = str(request.get("entry", ""))
                if (not path.name.endswith(f"{request.get('fingerprint')}.sock")   # another library: not ours to run
                        or not entry.startswith(f"{__package__}.") or ":" not in entry):   # only the library's entries
                    for fd in fds:
                        os.close(fd)
                    continue
                conn.settimeout(None)
                pid = os.fork()
                if pid == 0:
                    _run_child(conn, listener, request, fds)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                last = time.monotonic()
    finally:
        listener.close()
        try:
            if path.exists():
                path.unlink()
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m bcos_lib.forkserver", description=__doc__.splitlines()[0])
    ap.add_argument("--serve", metavar="SOCKET", help="run a server at SOCKET (the runner starts it)")
    ap.add_argument("--stop", action="store_true", help="stop this checkout's running server")
    args = ap.parse_args(argv)
    if args.serve:
        return serve(Path(args.serve))
    if args.stop:
        print("stopped" if stop() else "no server was running")
        return 0
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
