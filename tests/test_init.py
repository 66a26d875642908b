"""``toolkit``'s public names: one table, every registered strategy and encoder reachable."""

from __future__ import annotations

import importlib

import toolkit


def test_every_public_name_resolves_to_its_module_object():
    assert toolkit.__all__ == sorted(toolkit._LAZY) + ["__version__"]
    for name, module in toolkit._LAZY.items():
        assert getattr(toolkit, name) is getattr(importlib.import_module(module), name)
    assert set(dir(toolkit)) == set(toolkit.__all__)


def test_every_registered_fusion_and_encoder_is_public():
    from toolkit.encoders import ENCODERS
    from toolkit.fusion import FUSIONS

    for cls in [*FUSIONS.values(), *ENCODERS.values()]:
        assert toolkit._LAZY.get(cls.__name__), f"{cls.__name__} is missing from toolkit._PUBLIC"
        assert getattr(toolkit, cls.__name__) is cls
    assert toolkit.AutoFusion is FUSIONS["auto"]


def test_each_listed_module_exports_its_names():
    for module, names in toolkit._PUBLIC.items():
        exported = getattr(importlib.import_module(module), "__all__", None)
        assert exported is not None, module
        assert set(names) <= set(exported), (module, set(names) - set(exported))
