"""The registries of fusion strategies, encoders and datasets: the one list each that config
validation, ``make_fusion``, the estimators and ``mmtk datasets`` read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from toolkit.cli import main
from toolkit.datasets import DATASETS, DatasetInfo
from toolkit.encoders import ENCODERS, TabularEncoder
from toolkit.estimators import MultimodalClassifier
from toolkit.fusion import FUSIONS, BaseFusion, EarlyFusion, make_fusion
from toolkit.registry import EstimatorRegistry, Registry, UnknownNameError
from toolkit.study import ConfigError, load_config

BASE = """\
name: reg
data: {source: make_sentiment_clips, params: {n_samples: 20}, target: label}
modalities:
  - {name: text, encoder: TextEncoder, columns: transcript}
fusion: [early]
"""


def _load(tmp_path, *overrides):
    path = tmp_path / "study.yaml"
    path.write_text(BASE, encoding="utf-8")
    return load_config(path, list(overrides))


def _refused(tmp_path, *overrides) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, *overrides)
    return str(exc.value)


# -- the Registry itself ----------------------------------------------------------------


def test_registry_keeps_order_and_names_every_entry_when_a_name_is_unknown():
    reg = Registry("colour", {"red": 1, "green": 2})
    assert reg.names() == ["red", "green"] and reg["green"] == 2 and len(reg) == 2
    with pytest.raises(UnknownNameError) as exc:
        reg["blue"]
    assert str(exc.value) == "unknown colour 'blue'; expected one of 'red', 'green'"
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, ValueError)
    assert "blue" not in reg and ["unhashable"] not in reg and reg.get("blue") is None
    with pytest.raises(UnknownNameError, match="unknown colour 'blue'"):
        del reg["blue"]


def test_register_refuses_a_taken_name_and_a_name_that_is_not_text():
    reg = Registry("colour", {"red": 1})
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        reg.register("red", 3)
    assert reg["red"] == 1
    for bad in ("", 3, None):
        with pytest.raises(TypeError, match="a colour name must be a non-empty string"):
            reg.register(bad, 3)
    assert reg.register("blue", 4) == 4 and reg.names() == ["red", "blue"]


def test_build_sets_and_checks_parameters():
    built = FUSIONS.build("late", {"cv": 3})
    assert type(built) is FUSIONS["late"] and built.cv == 3
    with pytest.raises(ValueError, match="The 'cv' parameter of LateFusion"):
        FUSIONS.build("late", {"cv": 0})
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        ENCODERS.build("TextEncoder", {"nope": 1})
    assert isinstance(EstimatorRegistry("x"), Registry)


# -- every registered name is reachable -------------------------------------------------


def test_the_registries_hold_the_shipped_components():
    assert FUSIONS.names() == ["early", "late", "gated", "auto", "attention", "tensor", "lowrank"]
    assert set(ENCODERS) == {
        "TextEncoder", "ImageEncoder", "AudioEncoder", "ScanEncoder", "TabularEncoder",
        "FeatureEncoder",
    }  # fmt: skip
    for name, cls in FUSIONS.items():
        assert issubclass(cls, BaseFusion) and type(make_fusion(name)) is cls
    for name, cls in ENCODERS.items():
        assert cls.__name__ == name


@pytest.mark.parametrize("name", FUSIONS.names())
def test_every_fusion_is_valid_in_a_config(tmp_path, name):
    config = _load(tmp_path, f"fusion=[{name}, {{name: {name}, params: {{}}}}]")
    assert config["fusion"] == [name, {"name": name, "params": {}}]


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_encoder_is_valid_in_a_config(tmp_path, name):
    config = _load(tmp_path, f"modalities=[{{name: m, encoder: {name}, columns: c}}]")
    assert config["modalities"][0]["encoder"] == name


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_is_valid_in_a_config_and_listed_by_mmtk_datasets(tmp_path, capsys, name):
    config = _load(tmp_path, f"data.source={name}", "data.params={}")
    assert config["data"]["source"] == name
    info = DATASETS[name]
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.split()[:2] == [name, info.kind]]
    assert info.description in lines[at]
    assert lines[at + 1].split("licence: ", 1)[1] == info.licence
    assert lines[at + 2].split("card: ", 1)[1] == str(info.card)
    assert main(["datasets", name]) == 0
    out = capsys.readouterr().out
    assert f"citation: {info.citation}" in out and f"licence: {info.licence}" in out


def test_mmtk_datasets_with_an_unknown_name_lists_the_registry(capsys):
    assert main(["datasets", "load_nothing"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'load_nothing'" in err
    assert all(repr(name) in err for name in DATASETS)


# -- an unknown name's error lists the registry ---------------------------------------


def test_unknown_names_in_a_config_list_the_registered_names(tmp_path):
    assert _refused(tmp_path, "fusion=[middle]") == (
        f"fusion[0]: expected one of {sorted(FUSIONS)} (or a mapping with name and params), "
        "found 'middle'"
    )
    assert _refused(tmp_path, "modalities=[{name: m, encoder: BertEncoder, columns: c}]") == (
        f"modalities[0].encoder: expected one of {sorted(ENCODERS)}, found 'BertEncoder'"
    )
    assert _refused(tmp_path, "data.source=load_imagenet") == (
        f"data.source: expected one of {sorted(DATASETS)}, found 'load_imagenet'"
    )
    assert _refused(tmp_path, "data.source=[a]") == (
        f"data.source: expected one of {sorted(DATASETS)}, found list"
    )
    assert _refused(tmp_path, "modalities=[]") == (
        "modalities: expected a non-empty list, found an empty list"
    )
    with pytest.raises(ValueError, match="unknown fusion 'middle'; use 'early', 'late', 'gated'"):
        make_fusion("middle")


# -- adding an entry makes it valid everywhere ---------------------------------------


class MineFusion(EarlyFusion):
    """A new strategy: in a real addition, its own file under toolkit/fusion/."""


class MineEncoder(TabularEncoder):
    """A new encoder: in a real addition, its own file under toolkit/encoders/."""


def make_tiny(n_samples: int = 10, *, scale: float = 1.0, random_state=None) -> Bunch:
    """A new generator: in a real addition, its own file under toolkit/datasets/."""
    return Bunch(frame=pd.DataFrame({"x": np.arange(n_samples) * scale}), data_card=None)


def test_a_registered_fusion_is_valid_in_a_config_and_in_the_estimators(tmp_path, monkeypatch):
    assert "fusion[0]: expected one of" in _refused(tmp_path, "fusion=[mine]")
    monkeypatch.setitem(FUSIONS, "mine", MineFusion)
    config = _load(tmp_path, "fusion=[mine, {name: mine, params: {modality_dropout: 0.5}}]")
    assert config["fusion"][1] == {"name": "mine", "params": {"modality_dropout": 0.5}}
    assert (
        "['attention', 'auto', 'early', 'gated', 'late', 'lowrank', 'mine', 'tensor']"
        in _refused(tmp_path, "fusion=[middle]")
    )
    assert "fusion[0].params: The 'modality_dropout' parameter of MineFusion" in _refused(
        tmp_path, "fusion=[{name: mine, params: {modality_dropout: 1.5}}]"
    )
    # the estimators take the new name too, and it behaves as the class it names
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    y = (df["a"] > 0).astype(int).to_numpy()
    mods = [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])]
    mine = MultimodalClassifier(mods, fusion="mine", random_state=0).fit(df, y)
    early = MultimodalClassifier(mods, fusion="early", random_state=0).fit(df, y)
    assert type(mine.fusion_) is MineFusion
    np.testing.assert_array_equal(mine.predict_proba(df), early.predict_proba(df))


def test_a_registered_encoder_is_valid_in_a_config(tmp_path, monkeypatch):
    entry = "modalities=[{name: m, encoder: MineEncoder, columns: [a], params: {%s}}]"
    assert "modalities[0].encoder: expected one of" in _refused(tmp_path, entry % "")
    monkeypatch.setitem(ENCODERS, "MineEncoder", MineEncoder)
    assert _load(tmp_path, entry % "")["modalities"][0]["encoder"] == "MineEncoder"
    assert "modalities[0].params.nope: not a parameter of MineEncoder" in _refused(
        tmp_path, entry % "nope: 1"
    )


def test_a_registered_dataset_is_valid_in_a_config_and_listed(tmp_path, monkeypatch, capsys):
    overrides = ("data.source=make_tiny", "data.params={n_samples: 5, scale: 2.0}")
    assert "data.source: expected one of" in _refused(tmp_path, *overrides)
    info = DatasetInfo(
        "make_tiny", make_tiny, "synthetic", "a tiny column", "manifest",
        estimate_bytes=lambda p: 8 * p["n_samples"],
    )  # fmt: skip
    monkeypatch.setitem(DATASETS, "make_tiny", info)
    assert _load(tmp_path, *overrides)["data"]["params"] == {"n_samples": 5, "scale": 2.0}
    assert "data.params.size: not a parameter of make_tiny" in _refused(
        tmp_path, "data.source=make_tiny", "data.params={size: 3}"
    )
    assert "make_tiny with these parameters would generate about" in _refused(
        tmp_path, "data.source=make_tiny", "data.params={n_samples: 1000000000}"
    )
    assert main(["datasets"]) == 0
    assert "a tiny column" in capsys.readouterr().out


def test_dataset_kind_is_checked():
    with pytest.raises(ValueError, match="kind must be one of .'synthetic', 'real', 'user'."):
        DatasetInfo("make_tiny", make_tiny, "generated", "a tiny column", "manifest")
