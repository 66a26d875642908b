"""Units of the toolkit meet at public seams (checked with ``ast`` over the source).

Whole package: no module of ``toolkit/`` imports another unit's ``_private`` name or a name
from another unit's ``_private`` module. A unit is a subpackage (``toolkit.encoders``) or a
top-level module (``toolkit.cache``); inside one unit, modules may share private names. The
package-wide internals ``toolkit._utils`` and ``toolkit._progress`` are every lower unit's own
helpers (the upper layers below reach them through ``toolkit.utils``).

Upper layers, stricter: the study engine, the explainers and the CLI also make no
``obj._private`` access on another module's object (``self``/``cls`` and objects of classes
defined in the same module are the module's own), and import no ``_``-prefixed name or module
from another package, toolkit's or a library's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "toolkit"
CHECKED = sorted(
    [*ROOT.joinpath("study").glob("*.py"), *ROOT.joinpath("explain").glob("*.py"), ROOT / "cli.py"]
)
EVERY_MODULE = sorted(ROOT.rglob("*.py"))
#: The package's shared internals, which any unit may import (see the module docstring).
SHARED_INTERNALS = {"toolkit._utils", "toolkit._progress"}


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


def _unit(module: str) -> str:
    """``toolkit.encoders.base`` -> ``toolkit.encoders``; ``toolkit.cache`` -> itself."""
    return ".".join(module.split(".")[:2])


def _module_of(path: Path) -> tuple[str, str]:
    """The dotted module of a file under ROOT and the package its relative imports start at."""
    parts = ("toolkit", *path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def cross_unit_private_imports(path: Path) -> list[str]:
    """ "module.name" for each toolkit name that ``path`` imports from another unit and that is
    private itself or lives in a private module of that unit."""
    module, package = _module_of(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)]
            target = ".".join([*base, node.module] if node.level else [node.module or ""])
            target = target.rstrip(".")
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            target, names = None, [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            full = name if target is None else f"{target}.{name}"
            if not full.startswith("toolkit.") or _unit(full) == _unit(module):
                continue
            if _unit(full) in SHARED_INTERNALS:
                continue
            if any(_private(part) for part in full.split(".")[1:]):
                found.append(full)
    return found


def test_no_unit_imports_another_units_private_names():
    found = {
        f"{path.relative_to(ROOT).as_posix()}: {name}"
        for path in EVERY_MODULE
        for name in cross_unit_private_imports(path)
    }
    assert sorted(found) == [], "cross-unit private imports: import the unit's public name"


def test_the_package_checker_catches_private_imports(tmp_path, monkeypatch):
    source = (
        "from toolkit.io._paths import check_path\n"
        "from toolkit.fusion.base import _target_exponent\n"
        "from toolkit.fusion import make_fusion\n"
        "from toolkit._utils import is_missing\n"
        "from ._private_helper import thing\n"
        "import toolkit.encoders._torch\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setattr(Path, "relative_to", lambda self, other: Path("estimators/probe.py"))
    assert cross_unit_private_imports(path) == [
        "toolkit.io._paths.check_path",
        "toolkit.fusion.base._target_exponent",
        "toolkit.encoders._torch",
    ]


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
