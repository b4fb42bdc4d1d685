"""Copy the results (results/report.md, written by the figures stage) between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers: in full into docs/results.md, and a
compact copy (the accuracy table and the localisation margin, with a link to every table) into
README.md, so that both always show the last ``dvc repro``: ``python -m bcos_lib.readme`` (the
``readme`` stage).  It imports nothing else of the library, so that only a new report reruns it."""
from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["update_readme", "compact_report", "START", "END", "main"]

START, END = "<!-- results:start -->", "<!-- results:end -->"


def compact_report(report: str) -> str:
    """The README's short copy of the report: its first line (the profile), the accuracy table,
    the localisation margin sentence and a link to every table (docs/results.md)."""
    parts = report.strip().split("\n### ")
    accuracy = [f"### {p.strip()}" for p in parts[1:] if p.startswith("Accuracy")]
    margin = [line for line in report.splitlines() if line.startswith("Margin: ")]
    rest = [re.split(r":| \(", p.split("\n", 1)[0], maxsplit=1)[0].strip() for p in parts[1:]
            if not p.startswith("Accuracy")]
    link = ("Every table — " + ", ".join(rest) + " — with the definitions and what the numbers say: "
            "[docs/results.md](docs/results.md).") if rest else "Every table: [docs/results.md](docs/results.md)."
    return "\n\n".join([parts[0].strip(), *accuracy, *margin, link])


def _write_between(path: Path, text: str) -> bool:
    """Replace the text between the markers in ``path`` by ``text``; True if it changed."""
    old = path.read_text()
    if START not in old or END not in old:
        raise ValueError(f"{path} has no {START} … {END} markers")
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{text.strip()}\n{END}{tail}"
    if new != old:
        path.write_text(new)
        return True
    return False


def update_readme(readme: str | Path, report: str | Path, results_page: str | Path | None = None) -> bool:
    """Write ``report`` between the markers: in full into ``results_page`` (docs/results.md; its
    links to figures/ made relative to docs/) and as :func:`compact_report` into ``readme``
    (the whole report when no ``results_page`` is given).  True if either changed."""
    text = Path(report).read_text()
    changed = False
    if results_page is not None:
        full = text.replace("](figures/", "](../figures/")
        changed = _write_between(Path(results_page), full)
        text = compact_report(text)
    return _write_between(Path(readme), text) or changed


def main() -> int:
    from .core.paths import project_root
    root = project_root()
    changed = update_readme(root / "README.md", root / "results" / "report.md", root / "docs" / "results.md")
    print("README.md and docs/results.md results sections " + ("updated" if changed else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
