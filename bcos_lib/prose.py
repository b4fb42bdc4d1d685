"""Checking the numbers of hand-written prose against the files the pipeline wrote.

The README's "What the numbers say" section discusses the results tables in words, with the
numbers in the sentences.  :func:`unsupported_numbers` finds every decimal number of such a
text that no source supports, so that a test fails as soon as a rerun of the pipeline
changes a number the prose still quotes.  A decimal written with d decimals is supported when
one of these, rounded to d decimals, equals it:

1. a number in ``results/{train,explain,evaluate}/*/metrics.json`` (any depth), in the claims
   ledger (``results/claims.json``), the under-training check (``results/convergence.json``) or the
   record of measured run times (``results/runs.json``), when the text quotes it with at least 3
   significant digits, or a number it so quotes elsewhere;
2. a paper's number (``PAPER_NUMBERS`` of a method's ``present.py``) or a setting of ``params.yaml``;
3. the difference of two supported numbers quoted in the same paragraph or list item
   ("0.65 points apart", a margin);
4. a number listed in ``allowed`` with the reason it cannot come from the files (e.g. an
   earlier experiment the text mentions).

Integers (epochs, image counts, grid sizes) and numbers inside code spans are not checked.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = ["numbers_of", "source_numbers", "unsupported_numbers", "readme_section", "prose_of"]

_DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.]*\d)")
_CODE = re.compile(r"`[^`]*`")


def numbers_of(obj: Any) -> Iterable[float]:
    """Every number in a nested JSON/YAML structure (keys included, when they are numbers)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, (int, float)) and not isinstance(k, bool):
                yield float(k)
            yield from numbers_of(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from numbers_of(v)


def source_numbers(root: str | Path) -> tuple[list[float], list[float]]:
    """The numbers the prose may quote: (measured: the results' metrics files, fixed: the
    papers' numbers and the settings of params.yaml)."""
    from .core.registry import list_methods
    root = Path(root)
    measured: list[float] = []
    for stage in ("train", "explain", "evaluate"):
        for f in sorted((root / "results" / stage).glob("*/metrics.json")):
            measured += numbers_of(json.loads(f.read_text()))
    for name in ("claims.json", "convergence.json", "runs.json"):
        f = root / "results" / name
        if f.is_file():
            measured += numbers_of(json.loads(f.read_text()))
    fixed = list(numbers_of([m.load("present").paper_numbers for m in list_methods()]))
    params = root / "params.yaml"
    if params.is_file():
        fixed += numbers_of(yaml.safe_load(params.read_text()))
    return measured, fixed


def _matches(text: str, values: Iterable[float]) -> bool:
    d = len(text.split(".")[1])
    target, tol = float(text), 0.5 * 10 ** -d + 1e-9
    return any(abs(v - target) <= tol for v in values)


def _significant(text: str) -> int:
    return len(text.replace(".", "").lstrip("0"))


def unsupported_numbers(text: str, measured: Iterable[float], fixed: Iterable[float] = (),
                        allowed: Mapping[str, str] | None = None) -> list[str]:
    """The decimal numbers of ``text`` that nothing supports (rules in the module docstring),
    each with the paragraph it is in.

    A measured number must be quoted with at least 3 significant digits to be matched against
    the metrics files directly (with fewer, almost any value of [0, 1] would match one of
    them); a shorter one is supported by a paper number, a setting, the rounding of a number
    the text quotes in full, or a difference as above."""
    measured, fixed = sorted(set(measured)), sorted(set(fixed))
    allowed = allowed or {}
    paras = re.split(r"\n\s*\n|\n(?=\s*[-*] )", text)         # paragraphs and list items
    found = [_DECIMAL.findall(_CODE.sub("", p)) for p in paras]
    full = [float(n) for ns in found for n in ns if _significant(n) >= 3 and _matches(n, measured)]
    bad = []
    for para, numbers in zip(paras, found):
        direct = [n for n in numbers if n in allowed or _matches(n, fixed)
                  or _matches(n, measured if _significant(n) >= 3 else full)]
        supported = sorted({float(n) for n in direct})
        diffs = [b - a for a, b in itertools.combinations(supported, 2)]
        for n in numbers:
            if n not in direct and not _matches(n, diffs):
                bad.append(f"{n} in: {' '.join(para.split())[:160]}")
    return bad


def readme_section(readme: str | Path, heading: str, until: str = "\n#") -> str:
    """The text of ``readme`` from the line ``heading`` to the next heading (or ``until``)."""
    text = Path(readme).read_text()
    if heading not in text:
        raise ValueError(f"{readme} has no section {heading!r}")
    body = text.split(heading, 1)[1]
    return body.split(until, 1)[0]


_GENERATED = re.compile(r"<!-- (\w+):start -->.*?<!-- \1:end -->", re.S)
_FENCE = re.compile(r"```.*?```", re.S)


def prose_of(path: str | Path) -> str:
    """The hand-written text of a markdown file: without the blocks the pipeline generates
    (between ``<!-- x:start -->`` and ``<!-- x:end -->``), code blocks and tables."""
    text = _FENCE.sub("", _GENERATED.sub("", Path(path).read_text()))
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|"))
