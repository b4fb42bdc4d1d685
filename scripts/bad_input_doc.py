"""Write docs/bad-input.md from the cases tests/bad_input_cases.py tries: ``python scripts/bad_input_doc.py``.

``--check`` exits 1 (and says so) when the page is not what the cases print now.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
PAGE = ROOT / "docs" / "bad-input.md"


def main(argv: list[str] | None = None) -> int:
    from bad_input_cases import messages, render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = render(messages())
    current = PAGE.read_text() if PAGE.is_file() else ""
    if args.check:
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is not current: run `python scripts/bad_input_doc.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
