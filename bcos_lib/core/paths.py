"""Project-root discovery.

papermill, nbval and JupyterLab start notebook kernels in different working
directories, so nothing in the project may rely on the current directory.  The
root is the nearest ancestor that holds both ``params.yaml`` and ``bcos_lib/``;
``BCOS_PROJECT_ROOT`` overrides the search.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "output_root", "resolve", "display_path"]

_MARKERS = ("params.yaml", "bcos_lib")


def _is_root(path: Path) -> bool:
    return all((path / m).exists() for m in _MARKERS)


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The project root: ``$BCOS_PROJECT_ROOT``, else the first ancestor of ``start``
    (default: the current directory, then this file's location) holding params.yaml and bcos_lib/."""
    env = os.environ.get("BCOS_PROJECT_ROOT")
    if env:
        root = Path(env).expanduser().resolve()
        if not _is_root(root):
            raise FileNotFoundError(
                f"BCOS_PROJECT_ROOT={env} does not hold params.yaml and bcos_lib/; "
                "unset it or point it at the bcos-companion checkout")
        return root
    candidates = [Path(start) if start is not None else Path.cwd(), Path(__file__).resolve().parent]
    for c in candidates:
        c = c.resolve()
        for p in (c, *c.parents):
            if _is_root(p):
                return p
    raise FileNotFoundError(
        "could not find the project root (a folder with params.yaml and bcos_lib/) above "
        f"{candidates[0]}; start from inside the checkout or set BCOS_PROJECT_ROOT")


def output_root(profile: str = "default") -> Path:
    """Where a run writes models/, results/ and figures/.

    The pipeline's ``default`` profile writes into the project root (the paths in
    dvc.yaml).  Any other profile writes under ``runs/<profile>/`` so that a quick
    notebook run in JupyterLab or under nbval never overwrites pipeline outputs.
    ``$BCOS_OUTPUT_ROOT`` overrides both (the tests point it at a temporary folder).
    """
    env = os.environ.get("BCOS_OUTPUT_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    root = project_root()
    return root if profile == "default" else root / "runs" / profile


def resolve(path: str | os.PathLike, base: Path | None = None) -> Path:
    """A path from params.yaml: absolute stays, relative is taken from ``base`` (default: project root)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base or project_root()) / p


def display_path(path: str | os.PathLike) -> str:
    """``path`` as messages show it: relative to the current directory when it lies below it."""
    path = Path(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel
