"""Contract of the encoder backends: every backend of every registry (found by walking the
registries, never a list kept here) declares its parameters and constraints, builds a tiny
random instance of itself (``Backend.example``; nothing downloads), encodes a few items to
the declared width, refuses a bad parameter by name, and, where it saves weights, survives
``toolkit.save`` / ``toolkit.load``."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

import toolkit
from toolkit import MultimodalRegressor, TabularEncoder
from toolkit.encoders import backends as backends_module
from toolkit.encoders.backends import REGISTRIES, Backend, Registry
from toolkit.encoders.base import BaseEncoder


def _encoder_classes() -> dict:
    """{modality: encoder class} of every encoder class of the package with a registry."""
    import toolkit.encoders  # noqa: F401  (imports every encoder module)

    found, todo = {}, [BaseEncoder]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("toolkit.") and isinstance(
            cls.__dict__.get("backends"), Registry
        ):
            found[cls.backends.modality] = cls
    return found


ENCODERS = _encoder_classes()
CASES = [(modality, b.name) for modality, reg in REGISTRIES.items() for b in reg]


def _items(modality: str, n: int = 12) -> list:
    rng = np.random.default_rng(0)
    if modality == "text":
        return [f"review {i} was {'good' if i % 2 else 'bad'} and the plot {i}" for i in range(n)]
    if modality == "image":
        return [rng.random((16, 16, 3)) for _ in range(n)]
    if modality == "audio":
        t = np.arange(4000) / 8000
        return [((0.3 + 0.02 * i) * np.sin(2 * np.pi * (150 + 40 * i) * t), 8000) for i in range(n)]
    if modality == "scan":
        return [rng.random((12, 12, 12)).astype(np.float32) for _ in range(n)]
    raise AssertionError(f"no tiny items for modality {modality!r}: add them to _items")


def _labels(n: int = 12) -> np.ndarray:
    return np.arange(n) % 2


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """{(modality, name): (fitted encoder, items, transform output)}, built on demand."""
    cache = {}

    def get(modality, name):
        if (modality, name) not in cache:
            backend = REGISTRIES[modality].get(name)
            folder = tmp_path_factory.mktemp(f"{modality}-{name}")
            params = {**backend.example(folder), "backend": name, "progress": False}
            enc = ENCODERS[modality](**params)
            items = _items(modality)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                enc.fit(items, _labels()) if backend.trains else enc.fit(items)
                cache[modality, name] = (enc, items, enc.transform(items), folder)
        return cache[modality, name]

    return get


def test_every_registry_belongs_to_one_encoder_and_every_encoder_to_a_registry():
    assert set(ENCODERS) == set(REGISTRIES)
    for modality, cls in ENCODERS.items():
        assert cls.backends is REGISTRIES[modality]
        assert cls.modality == modality
        default = inspect.signature(cls).parameters["backend"].default
        assert default in cls.backends
    assert all(isinstance(b, Backend) for reg in REGISTRIES.values() for b in reg)


def test_registry_refuses_unknown_and_duplicate_names():
    with pytest.raises(ValueError, match=r"unknown image backend 'resnet'; choose one of \["):
        REGISTRIES["image"].get("resnet")
    twice = type("Twice", (Backend,), {"name": "descriptors"})
    with pytest.raises(ValueError, match="needs a name not used by another"):
        Registry("image", [backends_module.Descriptors, twice])
    unnamed = type("Unnamed", (Backend,), {})
    with pytest.raises(ValueError, match="needs a name"):
        Registry("image", [unnamed])


def test_a_backend_registered_from_user_code_fits_saves_and_loads(tmp_path):
    from toolkit.encoders.backends import IMAGE_BACKENDS, Descriptors

    @IMAGE_BACKENDS.register
    class Mine(Descriptors):
        name = "mine"

    try:
        rng = np.random.default_rng(0)
        df = pd.DataFrame({"x": [rng.random((8, 8)) for _ in range(24)], "age": np.arange(24.0)})
        y = np.arange(24.0)
        mods = [("m", toolkit.ImageEncoder(backend="mine", progress=False), "x"),
                ("age", TabularEncoder(), ["age"])]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            reg = MultimodalRegressor(mods, fusion="early", random_state=0).fit(df, y)
        assert reg.encoders_["m"].backend_object().name == "mine"
        saved = toolkit.save(reg, tmp_path / "model")
        loaded = toolkit.load(saved)
        np.testing.assert_allclose(loaded.predict(df), reg.predict(df), rtol=1e-6)
        with pytest.raises(ValueError, match="needs a name not used by another"):
            IMAGE_BACKENDS.register(Mine)
    finally:
        IMAGE_BACKENDS.unregister("mine")
    with pytest.raises(InvalidParameterError, match="'backend' parameter of ImageEncoder"):
        toolkit.ImageEncoder(backend="mine").fit([np.zeros((8, 8))])
    with pytest.raises(
        toolkit.persistence.ModelFileError,
        match=r"encoder 'm' was saved with image backend 'mine', which this process has not "
        r"registered .*IMAGE_BACKENDS.register\) before toolkit.load",
    ):
        toolkit.load(saved)


@pytest.mark.parametrize(("modality", "name"), CASES)
def test_backend_declares_parameters_the_encoder_has_and_validates(modality, name):
    cls, backend = ENCODERS[modality], REGISTRIES[modality].get(name)
    params = set(inspect.signature(cls).parameters)
    constraints = cls._parameter_constraints
    assert set(backend.parameters) <= params, set(backend.parameters) - params
    assert set(backend.constraints) <= set(backend.parameters)
    assert all(p in constraints for p in backend.parameters)
    assert backend.feature_prefix
    assert isinstance(backend.weight_parameters, tuple)
    assert set(backend.weight_parameters) <= params
    # a bad value of each parameter it declares is refused by name, before any work
    for param in backend.constraints:
        enc = cls(backend=name, **{param: object()})
        with pytest.raises(InvalidParameterError, match=f"'{param}' parameter of {cls.__name__}"):
            enc.fit(_items(modality, 4), _labels(4)) if backend.trains else enc.fit(
                _items(modality, 4)
            )
    with pytest.raises(InvalidParameterError, match="'backend' parameter"):
        cls(backend=f"{name}-nope").fit(_items(modality, 4))


@pytest.mark.parametrize(("modality", "name"), CASES)
def test_backend_encodes_to_its_declared_width(fitted, modality, name):
    enc, items, block, _ = fitted(modality, name)
    backend = enc.backend_object()
    assert block.shape == (len(items), enc.n_features_out_) and block.dtype == np.float32
    assert np.isfinite(block).all() and enc.n_features_out_ > 0
    names = enc.get_feature_names_out()
    assert len(names) == enc.n_features_out_
    if backend.feature_names(enc) is None:
        assert names[0] == f"{backend.feature_prefix}0"
    # what the backend declares is what the encoder reports
    assert enc.supervised == backend.trains
    assert enc.fixed == (backend.fixed and not backend.trains)
    assert enc.weight_parameters() == backend.weight_parameters


@pytest.mark.parametrize(("modality", "name"), CASES)
def test_backend_networks_and_architectures(fitted, modality, name):
    backend = REGISTRIES[modality].get(name)
    builds = name in REGISTRIES[modality].with_networks()
    if not builds:
        enc = ENCODERS[modality](backend=name)
        with pytest.raises(ValueError, match=f"backend='{name}'.*has no network"):
            enc.build_network()
        return
    enc, *_ = fitted(modality, name)
    import torch

    with torch.device("meta"):
        net = enc.build_network()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {
        k: tuple(v.shape) for k, v in enc.model_.state_dict().items()
    }
    if backend.weight_parameters == ("weights",) and not backend.trains:
        allowed = backend.architectures()
        assert enc.model in allowed
        with pytest.raises(ValueError, match="is not a model"):
            backend.check_architecture("__import__")


@pytest.mark.parametrize(("modality", "name"), CASES)
def test_backend_with_weights_round_trips_through_save_and_load(fitted, modality, name, tmp_path):
    enc, items, block, folder = fitted(modality, name)
    if not enc.weight_parameters():
        assert enc.save_weights(tmp_path) is None
        return
    df = pd.DataFrame({"x": items, "age": np.arange(len(items), dtype=float)})
    y = np.arange(len(items)) % 3 + 0.5
    mods = [("m", clone(enc), "x"), ("age", TabularEncoder(), ["age"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reg = MultimodalRegressor(mods, fusion="early", random_state=0).fit(df, y)
    saved = toolkit.save(reg, tmp_path / "model")
    loaded = toolkit.load(saved)
    np.testing.assert_allclose(loaded.predict(df), reg.predict(df), rtol=1e-5, atol=1e-6)
    restored = loaded.encoders_["m"]
    assert restored.weight_parameters() == enc.weight_parameters()
    if not enc.backend_object().trains:  # a trained network is loaded, weights= stays None
        for param in enc.weight_parameters():
            assert str(restored.get_params()[param]).startswith(str(saved.resolve()))
