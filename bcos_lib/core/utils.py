"""Small shared helpers: seeding, devices, atomic file writes, library versions."""
from __future__ import annotations

import json
import os
import platform
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

__all__ = ["evaluating", "find_module", "set_seed", "keep_freed_memory", "resolve_device", "atomic_write", "atomic_torch_save", "safe_torch_load", "UnsafeFileError", "write_json", "versions"]


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for the block (batch statistics frozen, so images do not influence each
    other); the model's previous train/eval mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def find_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with an error that lists them."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise KeyError(f"model has no layer {name!r}; layers: {', '.join(n for n in modules if n)}")
    return modules[name]


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on a GPU also ask torch for deterministic kernels.

    The CPU kernels this project uses are deterministic already (a CPU run repeats
    exactly; tests/test_reliability.py checks it), so the switch is only thrown where it
    matters: ``torch.use_deterministic_algorithms`` imports torch._inductor, about 2 s at
    the start of every pipeline stage.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 256 * 2**20) -> bool:
    """Ask glibc's allocator to keep freed tensor memory for reuse rather than give it back.

    By default glibc serves every allocation above 128 KiB (most activation and gradient
    tensors) with a fresh ``mmap`` and returns it on ``free``, so the next step touches new
    pages and pays a page fault per 4 KiB: on this project's CPU runs that was 20–30 % of an
    explanation's time (measured before the B-cos conv's fused explanation node removed the
    per-class zero-filled MaxOut gradients; large per-class gradients still remain).  Raising the mmap threshold (to glibc's maximum, 32 MiB) and the trim
    threshold keeps that memory in the heap.  Process-wide; called by the pipeline's
    ``setup`` and the benchmark, not on import.  Returns False (and does nothing) where
    the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but no CUDA GPU is available; use device: auto or cpu")
    return dev


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers see the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_PLAIN = (torch.Tensor, str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; only str and int keys can be saved")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN) or (isinstance(obj, str) and type(obj) is not str):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: files hold only tensors, "
                        "dicts, lists, tuples, strings, numbers, booleans and None (so that they load with "
                        "weights_only=True); convert it (e.g. str(), .tolist()) before saving")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`.  It writes to an open file, not to the temporary
    path: torch names the archive inside the file after a path, so equal objects give equal bytes.
    ``obj`` must hold only plain data (checked before anything is written), so that the file loads
    with :func:`safe_torch_load`."""
    _check_plain(obj, str(path))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return atomic_write(path, write)


class UnsafeFileError(RuntimeError):
    """A ``.pt`` file holds something other than tensors and plain containers (it could run code)."""


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: only tensors, dicts, lists, tuples, strings,
    numbers, booleans and None are rebuilt, so a file that arrives from a shared DVC remote
    cannot run code when it is opened.  A file that asks for anything else (a pickled class, a
    ``__reduce__`` that calls a function) raises :class:`UnsafeFileError` naming the file;
    other damage (a truncated archive, garbage bytes) raises what ``torch.load`` raises."""
    import pickle
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        what = next((ln.strip() for ln in lines if "global" in ln.lower()), None)
        if what is None:   # not a forbidden object but bytes that are no pickle at all: damage
            raise
        raise UnsafeFileError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers ({what}); "
            "files are opened with weights_only=True so that a shared model file cannot run code. Delete it "
            "and re-create it with this code (dvc repro), or fetch it again from a remote you trust") from e


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


#: the library's version (``bcos_lib.__version__``; pyproject.toml says the same, a test checks it)
__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """The versions that decide the numbers (recorded in every metrics file).  torchvision's is read
    from its installed metadata: importing it costs a stage about 2 s, and no stage needs it."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        tv = version("torchvision")
    except PackageNotFoundError:
        tv = "not installed"
    return {"python": platform.python_version(), "torch": str(torch.__version__), "torchvision": tv,
            "numpy": np.__version__, "bcos_lib": __version__}
