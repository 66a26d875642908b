"""The typed study config (toolkit/study/schema.py, config.py): one schema gives the
defaults, the allowed keys and the checks; loading builds a StudyConfig read by attribute;
errors name the key path; to_dict round-trips; --set overrides reach the typed object;
every shipped pipeline validates and keeps every value it states."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from toolkit.datasets import DATASETS
from toolkit.encoders import ENCODERS
from toolkit.fusion import FUSIONS
from toolkit.study import ConfigError, StudyConfig, load_config, validate_config
from toolkit.study.checks import LIMITS
from toolkit.study.config import apply_override
from toolkit.study.schema import (
    EvaluationConfig,
    FusionConfig,
    ModalityConfig,
    allowed_keys,
    defaults,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCE = {"data": {"source": "make_sentiment_clips"}}
TINY = """\
name: tiny
data: {source: make_sentiment_clips, params: {n_samples: 30}, target: label}
modalities:
  - {name: text, encoder: TextEncoder, columns: transcript, params: {n_components: 4}}
fusion: [late, {name: early, params: {}}]
evaluation: {cv: 2, bootstrap: 50}
"""


def _refused(raw: dict, **limits) -> str:
    with pytest.raises(ConfigError) as exc:
        StudyConfig.from_dict(raw, **limits)
    return str(exc.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


# -- one schema: defaults and allowed keys come from the dataclasses -------------------------


def test_defaults_come_from_the_schema():
    config = StudyConfig.from_dict(SOURCE)
    assert (config.name, config.seed, config.task) == ("study", 0, "classification")
    assert config.modalities is None and config.fusion_names == ["early", "late", "gated"]
    ev = config.evaluation
    assert (ev.cv, ev.bootstrap, ev.threshold, ev.n_jobs, ev.primary_metric) == (
        5,
        1000,
        0.5,
        1,
        None,
    )
    assert (ev.robustness, ev.baselines, ev.mosi_metrics) == (True, True, False)
    assert dataclasses.asdict(ev.conformal) == {
        "enabled": False,
        "confidence": 0.9,
        "calibration": 0.25,
    }
    assert (config.explanation.enabled, config.explanation.removal) == (True, "missing")
    out = config.output
    assert (out.report, out.save_model, out.include_text, out.interactions, out.intervals) == (
        True, True, False, True, True,
    )  # fmt: skip
    assert (out.drilldown_rows, out.drilldown_max_parts, out.model_rule) == (
        2,
        8,
        "prefer_simpler",
    )
    assert out.include_images is False and out.include_group_ids is False
    assert config.quick is False
    # defaults() is the default instance as plain data; an instance made in Python agrees
    assert defaults() == {**config.to_dict(), "data": {**config.to_dict()["data"], "source": None}}
    assert StudyConfig().evaluation == EvaluationConfig() == config.evaluation


def test_allowed_keys_are_the_fields_of_each_section():
    keys = allowed_keys()
    assert set(keys) == {"", "data", "evaluation", "evaluation.conformal", "explanation", "output"}
    assert keys[""] == {"name", "seed", "task", "quick", "data", "modalities", "fusion",
                        "evaluation", "explanation", "output"}  # fmt: skip
    assert keys["evaluation.conformal"] == {"enabled", "confidence", "calibration"}
    assert "path" not in keys[""]  # the file's path is not a config key
    defaults_ = defaults()
    for section, names in keys.items():
        node = defaults_
        for part in section.split(".") if section else []:
            node = node[part]
        assert set(node) == names, section


def test_every_section_has_a_check_and_a_default_for_each_field():
    for cls in (StudyConfig, EvaluationConfig, ModalityConfig):
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            assert "check" in f.metadata or "section" in f.metadata, (cls.__name__, f.name)


# -- validation errors keep their key paths ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"colour": 1}, "colour: unknown key; expected one of ['data', 'evaluation', "),
        ({"evaluation": {"folds": 3}}, "evaluation.folds: unknown key; expected one of ['baselines'"),
        ({"evaluation": {"conformal": {"level": 0.9}}},
         "evaluation.conformal.level: unknown key; expected one of ['calibration', 'confidence', 'enabled']"),
        ({"name": "../up"}, "name: expected a plain name"),
        ({"seed": -1}, "seed: expected an integer in [0, 4,294,967,295], found -1"),
        ({"task": "ranking"}, "task: expected one of ['classification', 'regression'], found 'ranking'"),
        ({"evaluation": {"cv": 1}}, "evaluation.cv: expected an integer >= 2 (at most the rows, smallest class, groups), found 1"),
        ({"evaluation": {"cv": 3.0}}, "evaluation.cv: expected an integer >= 2"),
        ({"evaluation": {"threshold": True}}, "evaluation.threshold: expected a number in (0, 1), found True"),
        ({"evaluation": {"n_jobs": 0}}, "evaluation.n_jobs: expected an integer in [1, 64] (folds run at once), or -1: all cores, found 0"),
        ({"evaluation": {"conformal": {"confidence": 1.5}}},
         "evaluation.conformal.confidence: expected a number in (0, 1) (the coverage asked for), found 1.5"),
        ({"evaluation": None}, "evaluation: expected a mapping, found None"),
        ({"explanation": {"removal": "zero"}}, "explanation.removal: expected 'missing' or 'background', found 'zero'"),
        ({"output": {"drilldown_rows": 21}}, "output.drilldown_rows: expected an integer in [0, 20]"),
        ({"output": {"model_rule": "fixed:tensor"}},
         "output.model_rule: 'fixed:tensor' names a strategy not listed in fusion ['early', 'late', 'gated']"),
        ({"modalities": [{"name": "a", "encoder": "TextEncoder", "columns": "t", "size": 2}]},
         "modalities[0].size: unknown key; expected one of ['column_groups', 'columns', 'encoder', 'name', 'params']"),
        ({"modalities": [{"name": "a", "encoder": "TextEncoder", "columns": "t"},
                         {"name": "a", "encoder": "TextEncoder", "columns": "u"}]},
         "modalities[1].name: expected a unique name, found 'a'"),
        ({"modalities": [{"name": "a", "encoder": "TextEncoder", "columns": "t",
                          "params": {"n_components": "four"}}]},
         "modalities[0].params.n_components: expected an integer"),
        ({"fusion": [{"name": "late", "weights": 1}]}, "fusion[0].weights: unknown key; expected name, params"),
        ({"data": {"source": "make_sentiment_clips", "params": {"output_dir": "x"}}},
         "data.params.output_dir: a study does not write generated files"),
    ],
)  # fmt: skip
def test_errors_name_the_key_path(raw, message):
    raw = {**SOURCE, **raw, "data": raw.get("data", SOURCE["data"])}
    assert _refused(raw).startswith(message)


def test_a_missing_source_is_named_and_unknown_keys_are_reported_before_values():
    assert _refused({}).startswith("data.source: expected one of [")
    # the unknown key wins over the bad value, wherever it is
    assert _refused({**SOURCE, "seed": -1, "output": {"colour": 1}}).startswith("output.colour:")


def test_limits_bound_the_numbers_and_unknown_limits_are_refused():
    raw = {**SOURCE, "evaluation": {"bootstrap": 20, "n_jobs": 4}}
    assert StudyConfig.from_dict(raw).evaluation.bootstrap == 20
    assert _refused(raw, max_bootstrap=10) == (
        "evaluation.bootstrap: expected an integer in [0, 10], found 20"
    )
    assert _refused(raw, max_n_jobs=2).startswith(
        "evaluation.n_jobs: expected an integer in [1, 2]"
    )
    assert set(LIMITS) == {"max_bootstrap", "max_n_jobs", "max_synthetic_bytes"}
    with pytest.raises(TypeError, match="unknown limits \\['max_folds'\\]"):
        StudyConfig.from_dict(raw, max_folds=3)


def test_conformal_true_is_shorthand_for_enabled_with_the_defaults():
    config = StudyConfig.from_dict({**SOURCE, "evaluation": {"conformal": True}})
    assert dataclasses.asdict(config.evaluation.conformal) == {
        "enabled": True, "confidence": 0.9, "calibration": 0.25,
    }  # fmt: skip


# -- the typed object: attributes, to_dict round trip, changes re-checked ---------------------


def test_load_config_builds_the_typed_object(tiny):
    config = load_config(tiny)
    assert isinstance(config, StudyConfig) and config.path == str(tiny.resolve())
    assert config.modalities == [
        ModalityConfig(name="text", encoder="TextEncoder", columns="transcript",
                       params={"n_components": 4})
    ]  # fmt: skip
    assert config.fusion == [FusionConfig("late"), FusionConfig("early")]
    assert config.fusion_names == ["late", "early"]
    assert (config.evaluation.cv, config.evaluation.bootstrap) == (2, 50)


def test_to_dict_round_trips_and_keeps_the_written_form_of_fusion(tiny):
    config = load_config(tiny)
    resolved = config.to_dict()
    assert "path" not in resolved
    assert resolved["fusion"] == ["late", {"name": "early", "params": {}}]
    assert resolved["modalities"][0] == {
        "name": "text", "encoder": "TextEncoder", "columns": "transcript",
        "params": {"n_components": 4}, "column_groups": None,
    }  # fmt: skip
    again = StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(resolved)))
    assert again.to_dict() == resolved and again == dataclasses.replace(config, path=None)
    # the dict view (for code written against the old dict) is a copy
    assert config["evaluation"]["cv"] == 2
    config["evaluation"]["cv"] = 9
    assert config.evaluation.cv == 2


def test_an_attribute_changed_in_python_is_checked_again(tiny):
    config = load_config(tiny)
    config.evaluation.bootstrap = -5
    with pytest.raises(ConfigError, match=r"evaluation.bootstrap: expected an integer in \[0, "):
        validate_config(config)
    config.evaluation.bootstrap = 7
    checked = validate_config(config)
    assert checked.evaluation.bootstrap == 7 and checked.path == config.path


def test_set_overrides_reach_the_typed_object(tiny):
    config = load_config(
        tiny,
        ["evaluation.cv=3", "output.model_rule=fixed:early", "evaluation.conformal=true",
         "explanation.enabled=false", "data.params.n_samples=40"],
    )  # fmt: skip
    assert config.evaluation.cv == 3 and config.output.model_rule == "fixed:early"
    assert config.evaluation.conformal.enabled and not config.explanation.enabled
    assert config.data.params == {"n_samples": 40}
    with pytest.raises(ConfigError, match="evaluation.cv: expected an integer >= 2"):
        load_config(tiny, ["evaluation.cv=1"])
    with pytest.raises(ConfigError, match="--set expects key=value, got 'evaluation.cv'"):
        load_config(tiny, ["evaluation.cv"])
    raw = {"name": "x"}
    with pytest.raises(ConfigError, match="--set 'name.first=a': name is a str, not a mapping"):
        apply_override(raw, "name.first=a")


def test_relative_input_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    from toolkit.study.config import resolve_input_paths

    folder = tmp_path / "study"
    folder.mkdir()
    path = folder / "m.yaml"
    path.write_text("data: {source: load_manifest, params: {csv: data/m.csv}, target: y}\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_input_paths(load_config(path))["csv"] == str(folder / "data" / "m.csv")


# -- every shipped pipeline -------------------------------------------------------------------


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path, node


PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))


def test_pipelines_are_found():
    assert len(PIPELINES) >= 5


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_validates_and_keeps_what_it_states(path):
    config = load_config(path)
    assert config.data.source in DATASETS
    assert all(m.encoder in ENCODERS for m in config.modalities or [])
    assert all(name in FUSIONS for name in config.fusion_names)
    resolved = config.to_dict()
    for keys, value in _leaves(yaml.safe_load(path.read_text(encoding="utf-8"))):
        loaded = resolved
        for key in keys:
            loaded = loaded[key]
        if keys == ("evaluation", "conformal") and isinstance(value, bool):  # shorthand
            loaded = loaded["enabled"]
        assert loaded == value, (path.name, keys)


def test_numbers_in_exponent_notation_are_numbers_in_files_and_in_set(tmp_path):
    """YAML 1.2 reads 1e3 as a number; PyYAML (YAML 1.1) reads it as text, so a window
    written [-1e3, 4e2] was refused as ['-1e3', '4e2']."""
    path = tmp_path / "scan.yaml"
    path.write_text(TINY.replace("{n_samples: 30}", "{n_samples: 30, noise: 2.5e-1}"))
    config = load_config(path, ["data.params.duration=5E-1"])
    assert config.data.params == {"n_samples": 30, "noise": 0.25, "duration": 0.5}
    raw = {"name": "x"}
    for assignment in ("limit=-1e-5", "big=1.0e39", "tag=x1e3", "version=1e"):
        apply_override(raw, assignment)
    assert raw == {"name": "x", "limit": -1e-5, "big": 1e39, "tag": "x1e3", "version": "1e"}
