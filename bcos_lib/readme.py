"""Copy the results into the README and docs, so that both always show the last ``dvc repro``:
``python -m bcos_lib.readme`` (the ``readme`` stage).

* results/report.md (the figures stage's tables) between ``<!-- results:start -->`` and
  ``<!-- results:end -->``: in full into docs/results.md, and a compact copy (the accuracy table,
  with a link to every table) into README.md;
* results/claims.md (the claims ledger) between ``<!-- claims:start -->`` and
  ``<!-- claims:end -->``: in full (the table and one paragraph per claim) into docs/results.md,
  and its table into README.md.

It imports nothing else of the library, so that only a new report or ledger reruns it."""
from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["update_readme", "compact_report", "claims_table_of", "START", "END", "CLAIMS_START", "CLAIMS_END", "main"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
CLAIMS_START, CLAIMS_END = "<!-- claims:start -->", "<!-- claims:end -->"


def compact_report(report: str) -> str:
    """The README's short copy of the report: its first line (the profile), the accuracy table,
    the localisation margin sentence and a link to every table (docs/results.md)."""
    parts = report.strip().split("\n### ")
    accuracy = [f"### {p.strip()}" for p in parts[1:] if p.startswith("Accuracy")]
    rest = [re.split(r":| \(", p.split("\n", 1)[0], maxsplit=1)[0].strip() for p in parts[1:]
            if not p.startswith("Accuracy")]
    link = ("Every table — " + ", ".join(rest) + " — with the definitions and what the numbers say: "
            "[docs/results.md](docs/results.md).") if rest else "Every table: [docs/results.md](docs/results.md)."
    return "\n\n".join([parts[0].strip(), *accuracy, link])


#: the first words of the training-length block that the claims stage ends results/claims.md with
TRAINING_LENGTH = "**Training length.**"


def claims_table_of(claims: str) -> str:
    """The README's copy of the ledger: its first paragraph (the counts), its table and the
    training-length block (its paragraph and table), where the ledger has one."""
    head, _, rest = claims.strip().partition("\n\n")
    rest, _, length = rest.partition(TRAINING_LENGTH)
    lines = rest.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append(line)
    out = head + "\n\n" + "\n".join(table)
    return out + ("\n\n" + TRAINING_LENGTH + length.rstrip() if length else "")


def _write_between(path: Path, text: str, start: str = START, end: str = END) -> bool:
    """Replace the text between the markers in ``path`` by ``text``; True if it changed."""
    old = path.read_text()
    if start not in old or end not in old:
        raise ValueError(f"{path} has no {start} … {end} markers")
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{text.strip()}\n{end}{tail}"
    if new != old:
        path.write_text(new)
        return True
    return False


def update_readme(readme: str | Path, report: str | Path, results_page: str | Path | None = None,
                  claims: str | Path | None = None) -> bool:
    """Write ``report`` between the markers: in full into ``results_page`` (docs/results.md; its
    links to figures/ made relative to docs/) and as :func:`compact_report` into ``readme``
    (the whole report when no ``results_page`` is given); and the ledger ``claims`` (when given):
    in full into ``results_page``, its table into ``readme``.  True if any changed."""
    text = Path(report).read_text()
    changed = False
    if results_page is not None:
        full = text.replace("](figures/", "](../figures/")
        changed = _write_between(Path(results_page), full)
        text = compact_report(text)
    changed = _write_between(Path(readme), text) or changed
    if claims is not None:
        ledger = Path(claims).read_text()
        changed = _write_between(Path(readme), claims_table_of(ledger), CLAIMS_START, CLAIMS_END) or changed
        if results_page is not None:
            changed = _write_between(Path(results_page), ledger, CLAIMS_START, CLAIMS_END) or changed
    return changed


def main() -> int:
    from .core.paths import project_root
    root = project_root()
    changed = update_readme(root / "README.md", root / "results" / "report.md", root / "docs" / "results.md",
                            root / "results" / "claims.md")
    print("README.md and docs/results.md results sections " + ("updated" if changed else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
