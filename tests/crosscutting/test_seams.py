"""The study engine, the explainers and the CLI go through public APIs only (issue: seams).

Checked with ``ast`` over the source: no ``obj._private`` access on another module's object
(``self``/``cls`` and objects of classes defined in the same module are the module's own), and
no import of a ``_``-prefixed name or module from another package (toolkit's or a library's).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "toolkit"
CHECKED = sorted(
    [*ROOT.joinpath("study").glob("*.py"), *ROOT.joinpath("explain").glob("*.py"), ROOT / "cli.py"]
)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package(module: str) -> str:
    return module.rpartition(".")[0]


def violations(path: Path) -> list[str]:
    module = "toolkit." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own_package = _package(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    own_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            same = node.module == own_package or node.module.startswith(own_package + ".")
            if not same and any(_private(p) for p in parts):
                found.append(f"line {node.lineno}: from {node.module} import …")
            for alias in node.names:
                if not same and _private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(p) for p in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and (
                owner.id in ("self", "cls") or owner.id in own_classes
            ):
                continue
            found.append(f"line {node.lineno}: .{node.attr} of {ast.unparse(owner)}")
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_access_across_modules(path):
    assert violations(path) == []


def test_the_checker_catches_private_access(tmp_path, monkeypatch):
    bad = ROOT / "study" / "_seam_probe_for_test.py"
    source = (
        "from toolkit._utils import seed_if_unset\n"
        "from sklearn.utils._param_validation import Interval\n"
        "def f(model, emb):\n"
        "    return model._encode(emb)\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setattr(Path, "relative_to", lambda self, other: Path("study/probe.py"))
    found = violations(path)
    assert any("toolkit._utils" in f for f in found)
    assert any("sklearn.utils._param_validation" in f for f in found)
    assert any("._encode of model" in f for f in found)
    assert not bad.exists()
