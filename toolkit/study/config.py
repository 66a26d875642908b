"""Study configs: loading, ``--set`` overrides, defaults and validation with key paths."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DATA_SOURCES = {
    "make_sentiment_clips", "make_clinical_cohort", "load_av_digits", "load_uci_sentences",
    "load_speech_emotion", "load_pneumoniamnist", "load_mimic_iv_demo", "load_mmsa_features",
    "load_manifest",
}  # fmt: skip
ENCODERS = {
    "TextEncoder",
    "ImageEncoder",
    "AudioEncoder",
    "ScanEncoder",
    "TabularEncoder",
    "FeatureEncoder",
}
FUSIONS = {"early", "late", "gated"}
TASKS = {"classification", "regression"}

DEFAULTS: dict[str, Any] = {
    "name": "study",
    "seed": 0,
    "task": "classification",
    "data": {"params": {}, "target": None, "groups": None},
    "modalities": None,
    "fusion": ["early", "late", "gated"],
    "evaluation": {
        "cv": 5,
        "bootstrap": 1000,
        "threshold": 0.5,
        "robustness": True,
        "baselines": True,
    },
    "explanation": {"enabled": True, "removal": "missing"},
    "output": {"report": True, "save_model": True, "include_text": False},
}


class ConfigError(ValueError):
    """A study config is invalid; the message names the key path."""


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(config: dict, assignment: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML) to ``config`` in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = config
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path, overrides=()) -> dict:
    """Read a YAML study config, apply overrides, fill defaults and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file '{path}': expected a mapping at the top level, found {type(raw).__name__}"
        )
    for assignment in overrides:
        apply_override(raw, assignment)
    config = _merge(DEFAULTS, raw)
    config["_path"] = str(path.resolve())
    validate_config(config)
    return config


def _expect(cond: bool, key: str, expected: str, found: Any) -> None:
    if not cond:
        shown = repr(found) if not isinstance(found, dict | list) else type(found).__name__
        raise ConfigError(f"{key}: expected {expected}, found {shown}")


ALLOWED_KEYS = {
    "": {
        "name",
        "seed",
        "task",
        "data",
        "modalities",
        "fusion",
        "evaluation",
        "explanation",
        "output",
    },
    "data": {"source", "params", "target", "groups"},
    "evaluation": {
        "cv",
        "bootstrap",
        "threshold",
        "robustness",
        "baselines",
        "primary_metric",
        "n_jobs",
    },
    "explanation": {"enabled", "removal"},
    "output": {"report", "save_model", "include_text"},
}


def _check_keys(config: dict) -> None:
    for section, allowed in ALLOWED_KEYS.items():
        node = config if not section else config.get(section)
        if not isinstance(node, dict):
            continue
        for key in node:
            if key.startswith("_"):
                continue
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                raise ConfigError(f"{where}: unknown key; expected one of {sorted(allowed)}")


def validate_config(config: dict) -> None:
    """Check keys, types and names; raise ConfigError naming the key path."""
    _check_keys(config)
    _expect(isinstance(config.get("name"), str), "name", "a string", config.get("name"))
    _expect(isinstance(config.get("seed"), int), "seed", "an integer", config.get("seed"))
    _expect(config.get("task") in TASKS, "task", f"one of {sorted(TASKS)}", config.get("task"))
    data = config.get("data")
    _expect(isinstance(data, dict), "data", "a mapping", data)
    _expect(
        data.get("source") in DATA_SOURCES,
        "data.source",
        f"one of {sorted(DATA_SOURCES)}",
        data.get("source"),
    )
    _expect(isinstance(data.get("params"), dict), "data.params", "a mapping", data.get("params"))
    for key in ("target", "groups"):
        value = data.get(key)
        _expect(value is None or isinstance(value, str), f"data.{key}", "a column name", value)
    mods = config.get("modalities")
    if mods is not None:
        _expect(isinstance(mods, list) and mods, "modalities", "a non-empty list", mods)
        names = set()
        for i, mod in enumerate(mods):
            key = f"modalities[{i}]"
            _expect(isinstance(mod, dict), key, "a mapping with name, encoder, columns", mod)
            _expect(
                isinstance(mod.get("name"), str) and mod["name"],
                f"{key}.name",
                "a string",
                mod.get("name"),
            )
            _expect(mod["name"] not in names, f"{key}.name", "a unique name", mod["name"])
            names.add(mod["name"])
            _expect(
                mod.get("encoder") in ENCODERS,
                f"{key}.encoder",
                f"one of {sorted(ENCODERS)}",
                mod.get("encoder"),
            )
            cols = mod.get("columns")
            ok = isinstance(cols, str) or (
                isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)
            )
            _expect(ok, f"{key}.columns", "a column name or a list of column names", cols)
            _expect(
                isinstance(mod.get("params", {}), dict),
                f"{key}.params",
                "a mapping",
                mod.get("params"),
            )
    fusion = config.get("fusion")
    _expect(isinstance(fusion, list) and fusion, "fusion", "a non-empty list of strategies", fusion)
    for i, entry in enumerate(fusion):
        key = f"fusion[{i}]"
        name = (
            entry
            if isinstance(entry, str)
            else entry.get("name")
            if isinstance(entry, dict)
            else None
        )
        _expect(
            name in FUSIONS,
            key,
            f"one of {sorted(FUSIONS)} (or a mapping with name and params)",
            entry,
        )
        if isinstance(entry, dict):
            _expect(
                isinstance(entry.get("params", {}), dict),
                f"{key}.params",
                "a mapping",
                entry.get("params"),
            )
    ev = config.get("evaluation")
    _expect(isinstance(ev, dict), "evaluation", "a mapping", ev)
    _expect(
        isinstance(ev.get("cv"), int) and ev["cv"] >= 2,
        "evaluation.cv",
        "an integer >= 2",
        ev.get("cv"),
    )
    _expect(
        isinstance(ev.get("bootstrap"), int) and ev["bootstrap"] >= 0,
        "evaluation.bootstrap",
        "an integer >= 0",
        ev.get("bootstrap"),
    )
    thr = ev.get("threshold")
    _expect(
        isinstance(thr, int | float) and 0 < thr < 1,
        "evaluation.threshold",
        "a number in (0, 1)",
        thr,
    )
    for key in ("robustness", "baselines"):
        _expect(isinstance(ev.get(key), bool), f"evaluation.{key}", "true or false", ev.get(key))
    n_jobs = ev.get("n_jobs", 1)
    _expect(
        isinstance(n_jobs, int) and n_jobs != 0,
        "evaluation.n_jobs",
        "a non-zero integer (folds run in parallel; -1: all cores)",
        n_jobs,
    )
    ex = config.get("explanation")
    _expect(isinstance(ex, dict), "explanation", "a mapping", ex)
    _expect(
        ex.get("removal") in ("missing", "background"),
        "explanation.removal",
        "'missing' or 'background'",
        ex.get("removal"),
    )
    out = config.get("output")
    _expect(isinstance(out, dict), "output", "a mapping", out)
    for key in ("report", "save_model", "include_text"):
        _expect(isinstance(out.get(key), bool), f"output.{key}", "true or false", out.get(key))
