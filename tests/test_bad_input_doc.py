"""Each bad-input case of docs/bad-input.md gives its message, and the page is current."""
from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_cases import CASES, messages, render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case_gives_its_message(case):
    message = case.run()
    assert case.expect in message, message


def test_the_page_is_current():
    assert PAGE.read_text() == render(messages()), "docs/bad-input.md is not current: run `python scripts/bad_input_doc.py`"
