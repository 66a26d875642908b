"""toolkit.explain goes through public seams only: no ``_``-prefixed attribute of another
module's object, and no private name imported from another package (checked with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import toolkit.explain

PACKAGE = "toolkit.explain"
SOURCES = sorted(Path(toolkit.explain.__file__).parent.glob("*.py"))
OWN = {"self", "cls"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, package: str = PACKAGE) -> list[str]:
    """``line: what`` for every private attribute reached on an object that is not ``self``
    or ``cls``, and every private name imported from outside ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in OWN):
                found.append(f"{node.lineno}: .{node.attr} on {ast.unparse(owner)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id in OWN)
        ):
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            inside = node.module == package or node.module.startswith(package + ".")
            parts = node.module.split(".")
            for alias in node.names:
                if not inside and (_private(alias.name) or any(_private(p) for p in parts)):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_explain_modules_use_only_public_attributes_of_other_objects(path):
    assert private_uses(path.read_text()) == []


@pytest.mark.parametrize(
    "code",
    [
        "model._output(emb)",
        "explainer._value_missing(emb, 3)",
        "getattr(model, '_label_encoder')",
        "from toolkit.fusion.base import _target_exponent",
        "from toolkit.fusion._gated_module import GatedNetwork",
    ],
)
def test_the_check_finds_private_access(code):
    assert len(private_uses(code)) == 1


@pytest.mark.parametrize(
    "code",
    [
        "self._scale(x)",
        "cls._registry",
        "type(x).__name__",
        "model.output(emb)",
        "from toolkit.explain.shapley import exact_shapley",
    ],
)
def test_the_check_lets_public_and_own_access_through(code):
    assert private_uses(code) == []
