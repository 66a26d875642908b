"""The study package keeps its functions small: at most ~60 lines and ~5 positional
parameters each (checked on the source with ``ast``). Private access across modules is
checked for the whole package by tests/test_seams.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import toolkit.study

PACKAGE = Path(toolkit.study.__file__).parent
MAX_LINES = 60
MAX_POSITIONAL = 5
#: Exceptions, each with its reason.
POSITIONAL_EXCEPTIONS: dict[str, int] = {}
CHECKED = sorted(PACKAGE.rglob("*.py"))


def oversized(source: str) -> list[str]:
    """Functions of ``source`` that are too long or take too many positional parameters."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_LINES:
            found.append(f"{node.name}: {lines} lines")
        positional = [a.arg for a in node.args.posonlyargs + node.args.args]
        positional = [a for a in positional if a not in ("self", "cls")]
        if len(positional) > POSITIONAL_EXCEPTIONS.get(node.name, MAX_POSITIONAL):
            found.append(f"{node.name}: {len(positional)} positional parameters")
    return found


def test_the_checker_counts_lines_and_positional_parameters():
    long_body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    source = (
        f"def long():\n{long_body}"
        "def many(a, b, c, d, e, f):\n    pass\n"
        "def fine(self, a, b, c, d, e, *, f, g):\n    pass\n"
    )
    assert oversized(source) == [
        f"long: {MAX_LINES + 1} lines",
        "many: 6 positional parameters",
    ]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_functions_are_short_with_few_positional_parameters(path):
    assert oversized(path.read_text()) == []
