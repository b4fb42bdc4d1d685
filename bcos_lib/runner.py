"""Run one pipeline stage's notebook: ``python -m bcos_lib.runner NOTEBOOK OUTPUT [-p name value]...``.

What every stage command in dvc.yaml calls instead of bare papermill (the ``-p`` options
mean the same as papermill's).  It

1. loads and validates params.yaml with the stage's profile (``-p profile``) and checks the
   model keys (``-p models``) *before anything is written*; a mistake ends the run with one
   line that names the key, what was expected and the file, and exit status 2.  A check that
   passed is remembered (``.cache/params-checked/``, git-ignored) under a hash of params.yaml,
   the ``-p`` values and every source file of bcos_lib: the 54 stages of a ``dvc repro`` check
   the same file, and the check imports torch and every method (~2 s each time on 2 cores);
2. executes the notebook in this process (:mod:`bcos_lib.inprocess`: no kernel to start, about
   4 s less per stage; ``BCOS_RUNNER_KERNEL=1``: in a Jupyter kernel with papermill, as
   JupyterLab and nbval run it) — from the command line, in a child of a warm stage server
   when one can take it (:mod:`bcos_lib.forkserver`: no Python or torch start-up; the child runs
   :func:`main` as this process would) into a temporary file next to OUTPUT and renames it
   onto OUTPUT only when every cell succeeded.  A failed run leaves OUTPUT as it was (so a
   good result is never replaced by a failed one, and DVC sees no changed output once the
   cause is fixed) and keeps the failed notebook, with its traceback, at
   ``<OUTPUT without .ipynb>.failed.ipynb`` (git-ignored); its last line is the stage's own
   exception, ``ExceptionName: message``;
3. writes a notebook that depends only on what the stage computed: papermill's timestamps and
   durations, the kernel's execution timestamps and papermill's random id of the injected
   parameters cell are removed or fixed, and each cell's text output is stored as Jupyter
   shows it (carriage returns applied, so an erased progress bar leaves nothing).  A rerun that
   computes the same results writes the same bytes, and DVC reruns nothing after it;
4. with a kernel, provisions CurveZMQ keys for it (jupyter_client's ``transport_encryption``), which
   is what the kernel's "running over TCP without encryption" warning asks for.

The notebook's printed output goes to this process's stdout and stderr as it is produced.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .inprocess import _text

__all__ = ["main", "run_notebook", "normalise_notebook", "failed_path", "StageFailed", "OutputNotWritable",
           "render_stream"]

#: exit status for a configuration mistake found before anything ran (argparse uses 2 as well)
EXIT_CONFIG = 2
#: exit status for a stage whose notebook raised
EXIT_FAILED = 1


class StageFailed(RuntimeError):
    """The notebook raised; ``str()`` is the one line to show (``ExceptionName: message``)."""


class OutputNotWritable(RuntimeError):
    """The executed notebook cannot be written where it should go (found before anything ran)."""


def failed_path(output: str | os.PathLike) -> Path:
    """Where the notebook of a failed run is kept: ``x.ipynb`` → ``x.failed.ipynb``."""
    output = Path(output)
    stem = output.name[: -len(".ipynb")] if output.name.endswith(".ipynb") else output.name
    return output.with_name(f"{stem}.failed.ipynb")


def resolve_value(value: str) -> Any:
    """A ``-p`` value as papermill's command line reads it: True/False/None, int, float, else the string."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


#: where passed checks are remembered, below the project root (git-ignored)
CHECKED_DIR = Path(".cache") / "params-checked"
#: how many remembered checks are kept (the oldest go first)
CHECKED_KEEP = 64


def check_key(root: Path, parameters: dict[str, Any]) -> str:
    """What a check's verdict depends on: params.yaml's bytes, the profile and model keys asked
    for, the library's source (the registered models, methods and their option types) and the
    Python version.  Any change to one of them gives another key.  The model keys a stage asks for
    are not part of it: the remembered check keeps the profile's model keys, so that the 54 stages
    of a ``dvc repro``, each asking for other models, validate the file once."""
    digest = hashlib.sha256()
    params = root / "params.yaml"
    for part in (str(params.resolve()), params.read_bytes(), repr(parameters.get("profile")), sys.version):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    package = Path(__file__).resolve().parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def _remember(folder: Path, key: str, models: list[str]) -> None:
    """Record a passed check and the profile's model keys (best effort: a read-only checkout just
    checks every time)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / key).write_text("\n".join(models) + "\n")
        kept = sorted(folder.iterdir(), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in kept[CHECKED_KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def check_params(parameters: dict[str, Any], use_cache: bool = True) -> None:
    """Validate params.yaml with the stage's profile and model keys; raise ConfigError with a
    message that names the file once.  With ``use_cache``, a check that passed before with the
    same :func:`check_key` is not repeated."""
    from .core.paths import display_path, project_root

    root = project_root()
    key = check_key(root, parameters) if (root / "params.yaml").is_file() else None
    path = Path(display_path(root / "params.yaml"))
    defined: list[str] | None = None
    if use_cache and key and (root / CHECKED_DIR / key).is_file():
        try:
            defined = (root / CHECKED_DIR / key).read_text().split()
        except OSError:
            defined = None
    if defined is None:
        from .core.config import load_params
        profile = parameters.get("profile")
        defined = list(load_params(path, str(profile) if profile else None).models)
        if key:
            _remember(root / CHECKED_DIR, key, defined)
    models = parameters.get("models")
    if isinstance(models, str) and models not in ("", "all"):
        for name in (k.strip() for k in models.split(",")):
            if name not in defined:
                from .core.config import ConfigError
                raise ConfigError(f"{path}: no model {name!r} in `models` (asked for by `-p models {models}`); "
                                  f"defined: {', '.join(defined) or 'none'}")


# ----------------------------------------------------------------------------- normalisation
_VOLATILE_PAPERMILL = ("start_time", "end_time", "duration")


def render_stream(text: str) -> str:
    """Text as a terminal (and Jupyter's output area) shows it: on each line, what follows a
    carriage return is written over the line from its start.  Lines that an erased progress bar
    leaves blank are dropped; other lines are kept exactly."""
    lines = []
    for line in text.split("\n"):
        if "\r" not in line:
            lines.append(line)
            continue
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        shown = shown.rstrip()
        if shown:
            lines.append(shown)
    rendered = "\n".join(lines)
    if text.endswith("\n") and not rendered.endswith("\n"):
        rendered += "\n"
    return rendered


def _coalesce_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same name joined (the kernel sends them in chunks whose
    boundaries depend on timing), then rendered; empty ones dropped."""
    merged: list = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = _text(merged[-1]["text"]) + _text(out["text"])
        else:
            merged.append(out)
    result = []
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = render_stream(_text(out["text"]))
            if not out["text"]:
                continue
        result.append(out)
    return result


def normalise_notebook(nb: Any, output_path: str | None = None) -> Any:
    """Remove what differs between two runs that computed the same thing (in place; returns ``nb``)."""
    pm = nb.get("metadata", {}).get("papermill")
    if pm is not None:
        for k in _VOLATILE_PAPERMILL:
            pm.pop(k, None)
        if output_path is not None:
            pm["output_path"] = output_path
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        meta.pop("execution", None)  # the kernel's iopub/shell timestamps
        for k in _VOLATILE_PAPERMILL:
            meta.get("papermill", {}).pop(k, None)
        if "injected-parameters" in meta.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives it a random id
        if "outputs" in cell:
            cell["outputs"] = _coalesce_streams(cell["outputs"])
    return nb


# ----------------------------------------------------------------------------- running
def _quiet_logging() -> None:
    """papermill's own INFO lines (input/output paths, "Executing Cell 3-----") are noise here:
    the notebook's output is written straight to stdout/stderr instead."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("papermill", "nbclient", "traitlets"):
        logging.getLogger(name).setLevel(logging.WARNING)


#: run in the kernel at its start (nothing enters the notebook): jupyter_client interrupts a kernel
#: before shutting it down, and a kernel still busy after a failed cell then logs "KeyboardInterrupt
#: caught in kernel", which reads as if the user had pressed Ctrl-C; the stage's own error is what counts
_QUIET_SHUTDOWN = ("__import__('logging').getLogger('IPKernelApp').addFilter("
                   "lambda record: 'KeyboardInterrupt caught in kernel' not in record.getMessage())")


def use_kernel() -> bool:
    """Whether stage notebooks run in a Jupyter kernel (papermill) rather than in this process
    (:mod:`bcos_lib.inprocess`, the default: about 4 s less start-up per stage).  The environment
    variable ``BCOS_RUNNER_KERNEL=1`` asks for the kernel."""
    return os.environ.get("BCOS_RUNNER_KERNEL", "") not in ("", "0")


def run_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any],
                 stdout: Any = None, stderr: Any = None) -> Path:
    """Execute ``notebook`` with ``parameters`` and write it to ``output`` only on success.

    Raises :class:`StageFailed` (the failed notebook is then at :func:`failed_path`); ``output``
    is never touched by a failed run.
    """
    cell_failed: tuple[type[BaseException], ...] = ()   # a cell raised, as the kernel's runner says it
    if use_kernel():
        import nbformat
        import papermill as pm
        from traitlets.config import Config
        cell_failed = (pm.PapermillExecutionError,)

    output = Path(output)
    failed = failed_path(output)
    try:   # before anything runs: a folder that cannot be written is said at once, without a traceback
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp.ipynb")
        os.close(fd)
    except OSError as e:
        raise OutputNotWritable(f"cannot write the executed notebook {output}: {e.strerror or e} "
                                f"({e.filename or output.parent}); make {output.parent} a writable folder") from None
    tmp = Path(tmp_name)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # what papermill's CLI sets (debugger warning)
    ok = False
    try:
        if use_kernel():
            config = Config()
            config.KernelManager.transport_encryption = "auto"  # CurveZMQ keys when the kernel supports them
            pm.execute_notebook(str(notebook), str(tmp), parameters=parameters, progress_bar=False,
                                log_output=False, stdout_file=stdout or sys.stdout, stderr_file=stderr or sys.stderr,
                                config=config, extra_arguments=[f"--IPKernelApp.exec_lines={_QUIET_SHUTDOWN}"])
            nb = nbformat.read(tmp, as_version=nbformat.NO_CONVERT)
        else:
            from .inprocess import CellError, execute, notebook_json
            try:
                nb = execute(notebook, parameters, stdout, stderr)
            except CellError as e:
                normalise_notebook(e.notebook, str(output))
                tmp.write_text(notebook_json(e.notebook), encoding="utf-8")
                raise StageFailed(f"{e.ename}: {' '.join(str(e.evalue).split())}") from None
        normalise_notebook(nb, str(output))
        if use_kernel():
            nbformat.write(nb, tmp)
        else:
            tmp.write_text(notebook_json(nb), encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
        ok = True
    except cell_failed as e:
        raise StageFailed(f"{e.ename}: {' '.join(str(e.evalue).split())}") from None
    except BaseException as e:  # the kernel died, Ctrl-C, ...
        if isinstance(e, (KeyboardInterrupt, SystemExit, StageFailed)):
            raise
        raise StageFailed(f"{type(e).__name__}: {' '.join(str(e).split())}") from e
    finally:
        if not ok and tmp.exists():
            if tmp.stat().st_size:
                os.replace(tmp, failed)
            else:
                tmp.unlink()
    if failed.exists():
        failed.unlink()  # an earlier failure, now fixed
    return output


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bcos_lib.runner",
        description="Validate params.yaml, then run a stage notebook with papermill; write OUTPUT only on success.")
    ap.add_argument("notebook", help="the stage notebook, e.g. notebooks/20_train.ipynb")
    ap.add_argument("output", help="the executed notebook, e.g. results/notebooks/20_train_std_cnn.ipynb")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter, as papermill's -p")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    parameters = {name: resolve_value(value) for name, value in args.parameters}
    from .core.config import ConfigError

    try:
        check_params(parameters)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {' '.join(str(e).split())} (nothing was run or written: fix it and run again)",
              file=sys.stderr)
        return EXIT_CONFIG
    _quiet_logging()
    print(f"running {args.notebook} → {args.output}", flush=True)
    import time
    started = time.perf_counter()
    try:
        run_notebook(args.notebook, args.output, parameters)
    except OutputNotWritable as e:
        print(f"error: {e} (nothing was run)", file=sys.stderr)
        return EXIT_FAILED
    except StageFailed as e:
        sys.stdout.flush()
        print(f"\n{args.notebook} failed; {args.output} was left as it was. The executed notebook, with the "
              f"traceback, is {failed_path(args.output)}. The error:", file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\ninterrupted; {args.output} was left as it was", file=sys.stderr)
        return 130
    # (the log only, not the notebook: a rerun that computes the same writes the same bytes)
    print(f"wrote {args.output} in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


def cli() -> int:
    """The command line: the stage runs in a warm stage server when one can take it
    (:mod:`bcos_lib.forkserver`), else in this process."""
    argv = sys.argv[1:]
    from . import forkserver
    if forkserver.enabled():
        code = forkserver.submit(argv, entry="bcos_lib.runner:main")
        if code is not None:
            return code
    return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
