"""Copy the results (results/report.md, written by the figures stage) into README.md between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers, so that the README always shows
the last ``dvc repro``: ``python -m bcos_lib.readme`` (the ``readme`` stage).  It imports nothing
else of the library, so that only a new report reruns it."""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["update_readme", "START", "END", "main"]

START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: str | Path, report: str | Path) -> bool:
    """Replace the text between the markers in ``readme`` by ``report``; True if it changed."""
    readme, report = Path(readme), Path(report)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{report.read_text().strip()}\n{END}{tail}"
    if new != text:
        readme.write_text(new)
        return True
    return False


def main() -> int:
    from .core.paths import project_root
    root = project_root()
    changed = update_readme(root / "README.md", root / "results" / "report.md")
    print("README.md results section " + ("updated" if changed else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
