"""Execute a stage notebook in the runner's own process, without a Jupyter kernel.

A kernel costs every pipeline stage a second Python process, its ZeroMQ start-up and a
second import of papermill's and jupyter_client's stack (about 4 s of a stage's 10-12 s of
start-up on 2 cores).  A stage notebook needs none of what a kernel gives an interactive
user, so :func:`execute` runs its code cells one after another in an IPython shell inside
this process and writes what a kernel would have sent into the notebook: the streams
(``stdout``/``stderr``, also echoed live to this process's own streams), rich displays
(``display(...)``: text, HTML, Markdown, PNG) and each cell's result (``execute_result``),
and, for a cell that raises, an ``error`` output with its traceback, after which no further
cell runs.  Parameters are injected as papermill does: a cell tagged ``injected-parameters``
after the one tagged ``parameters``.

Matplotlib runs on its non-interactive Agg backend (the stages save their figures to files and
display those files).  JupyterLab, papermill and nbval still run the same notebooks in a
kernel; ``BCOS_RUNNER_KERNEL=1`` makes the runner use one as well.
"""
from __future__ import annotations

import io
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["execute", "inject_parameters", "notebook_json", "CellError"]

#: the output formats a notebook keeps for a display, as ipykernel sends them
_FORMATS = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg",
            "image/svg+xml", "application/json")


class CellError(Exception):
    """A cell raised: ``ename``, ``evalue`` as Jupyter shows them."""

    def __init__(self, ename: str, evalue: str):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue = ename, evalue


def _literal(value: Any) -> str:
    """A parameter's value as Python source (strings in double quotes, as papermill writes them)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def inject_parameters(nb: dict, parameters: dict[str, Any]) -> dict:
    """Insert (or replace) the ``injected-parameters`` cell after the ``parameters`` cell (or first)."""
    cells = [c for c in nb["cells"] if "injected-parameters" not in _tags(c)]
    at = next((i + 1 for i, c in enumerate(cells) if "parameters" in _tags(c)), 0)
    if parameters:
        source = "# Parameters\n" + "\n".join(f"{k} = {_literal(v)}" for k, v in parameters.items()) + "\n"
        cells.insert(at, {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
                          "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": source})
    nb["cells"] = cells
    nb.setdefault("metadata", {}).setdefault("papermill", {})["parameters"] = dict(parameters)
    return nb


#: the formats whose strings a notebook file stores line by line (besides text/*), as nbformat does
_SPLIT_MIMES = ("application/javascript", "image/svg+xml")


def notebook_json(nb: dict) -> str:
    """The notebook file's text, as ``nbformat.write`` lays it out (sorted keys, one-space indent,
    multi-line strings as lists of lines), without importing nbformat and its JSON-schema validator
    (about 1 s of every stage's start-up)."""
    import copy
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(True)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and isinstance(out.get("text"), str):
                out["text"] = out["text"].splitlines(True)
            for mime, value in out.get("data", {}).items():
                if isinstance(value, str) and (mime.startswith("text/") or mime in _SPLIT_MIMES):
                    out["data"][mime] = value.splitlines(True)
    return json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False) + "\n"


class _Tee(io.TextIOBase):
    """A text stream that appends to the current cell's outputs and echoes to ``echo``."""

    def __init__(self, name: str, echo: Any, sink: list):
        self.name, self.echo, self.sink = name, echo, sink

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.sink.append(("stream", self.name, text))
            self.echo.write(text)
        return len(text)

    def flush(self) -> None:
        self.echo.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:   # what subprocesses started by a cell write to: the real stream
        return self.echo.fileno()


def _shell(sink: list) -> Any:
    """An IPython shell whose displays and cell results go to ``sink``."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.display_trap import DisplayTrap
    from IPython.core.interactiveshell import InteractiveShell

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):  # noqa: D102
            sink.append(("display_data", data, metadata or {}))

        def clear_output(self, wait=False):  # noqa: D102
            sink.append(("clear", None, None))

    class Hook(DisplayHook):
        def __call__(self, result=None):  # noqa: D102
            if result is None or self.quiet():
                return
            self.update_user_ns(result)
            data, md = self.shell.display_formatter.format(result)
            sink.append(("execute_result", data, md))

    def show_traceback(etype, evalue, stb):   # as ipykernel does: the traceback becomes an output
        sink.append(("error", etype.__name__, (str(evalue), list(stb))))

    shell = InteractiveShell.instance()
    shell._showtraceback = show_traceback
    shell.display_pub = Publisher(shell=shell, parent=shell)
    shell.displayhook = Hook(shell=shell, cache_size=shell.cache_size, parent=shell)
    shell.display_trap = DisplayTrap(hook=shell.displayhook)   # what run_cell installs as sys.displayhook
    shell.display_formatter.active_types = list(_FORMATS)
    shell.colors = "nocolor"
    return shell


def _outputs(events: list, execution_count: int) -> list:
    out: list = []
    for kind, a, b in events:
        if kind == "stream":   # (the runner's normalise_notebook joins consecutive ones)
            out.append({"output_type": "stream", "name": a, "text": b})
        elif kind == "clear":
            out = []
        elif kind == "display_data":
            out.append({"output_type": "display_data", "data": _jsonable(a), "metadata": b})
        elif kind == "execute_result":
            out.append({"output_type": "execute_result", "data": _jsonable(a), "metadata": b,
                        "execution_count": execution_count})
        elif kind == "error":
            out.append({"output_type": "error", "ename": a, "evalue": b[0], "traceback": b[1]})
    return out


def _jsonable(data: dict) -> dict:
    """Display data as a notebook stores it (binary images base64-encoded, JSON as objects)."""
    import base64
    out = {}
    for mime, value in data.items():
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        out[mime] = value
    return out


def execute(notebook: str | os.PathLike, parameters: dict[str, Any], stdout: Any = None,
            stderr: Any = None) -> Any:
    """Run ``notebook``'s code cells in order in this process; return the executed notebook.

    Raises :class:`CellError` with the executed notebook (up to the failed cell, its traceback as
    an ``error`` output) as ``.notebook``.  A cell that changes the working directory does not
    change the runner's: it is restored afterwards.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    if nb.get("nbformat") != 4:
        raise ValueError(f"{notebook}: a notebook of format 4 is expected (got {nb.get('nbformat')})")
    inject_parameters(nb, parameters)
    os.environ.setdefault("MPLBACKEND", "Agg")
    events: list = []
    shell = _shell(events)
    echo_out, echo_err = stdout or sys.stdout, stderr or sys.stderr
    saved = sys.stdout, sys.stderr, os.getcwd()
    count = 0
    try:
        for cell in nb["cells"]:
            if cell.get("cell_type") != "code":
                continue
            cell["outputs"] = []
            source = _text(cell.get("source", ""))
            if not source.strip():
                cell["execution_count"] = None
                continue
            count += 1
            events.clear()
            sys.stdout, sys.stderr = _Tee("stdout", echo_out, events), _Tee("stderr", echo_err, events)
            try:
                result = shell.run_cell(source, store_history=True, silent=False)
            finally:
                sys.stdout.flush()
                sys.stdout, sys.stderr = saved[0], saved[1]
            error = result.error_before_exec or result.error_in_exec
            if error is not None:
                shown = [e for e in events if e[0] == "error"]
                if shown:
                    echo_err.write("\n".join(shown[-1][2][1]) + "\n")
                else:   # (the shell always shows it; this keeps the notebook complete if it did not)
                    lines = traceback.format_exception(type(error), error, error.__traceback__)
                    events.append(("error", type(error).__name__, (str(error), [ln.rstrip("\n") for ln in lines])))
            cell["execution_count"] = count
            cell["outputs"] = _outputs(events, count)
            if error is not None:
                failed = CellError(type(error).__name__, str(error))
                failed.notebook = nb
                raise failed
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
        os.chdir(saved[2])
    nb["metadata"].setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return nb
