"""Study configs: loading, ``--set`` overrides, defaults and validation with key paths.

What a config may do: name a data source and its parameters, the columns and encoders
of each modality, fusion strategies and the evaluation. The names it may use are those
registered in ``toolkit.datasets.DATASETS``, ``toolkit.encoders.ENCODERS`` and
``toolkit.fusion.FUSIONS`` (see ``toolkit.registry``). What it may not do:

- write outside the run folder. ``name`` and every modality ``name`` become folder
  names (the run folder ``<--out>/<name>-<stamp>``, the saved model's
  ``encoders/<modality>/``), so they must be plain names: letters, digits, ``.``, ``_``
  and ``-``, starting with a letter or digit, at most 100 characters, never ``..`` (so
  no ``/``, ``\\``, leading ``~`` or absolute path). A generator's ``output_dir`` is
  refused: a study keeps generated data in memory.
- read from a place that depends on the working directory: relative input paths in
  ``data.params`` (``csv``, ``data_dir``, ``path``) resolve against the config file's
  folder (see :func:`resolve_input_paths`); relative paths inside a manifest resolve
  against the manifest's folder (``toolkit.datasets.load_manifest``).
- pass a number out of range or of the wrong type. Every numeric key is bounded;
  ``true``/``false`` is never accepted as a number and a float never as an integer.

Limits (keyword arguments of :func:`validate_config` / :func:`load_config`, module
constants as defaults): ``max_bootstrap`` (:data:`MAX_BOOTSTRAP`, 100,000 resamples),
``max_n_jobs`` (:data:`MAX_N_JOBS`, 64 parallel folds), ``max_synthetic_bytes``
(:data:`MAX_SYNTHETIC_BYTES`, 4 GiB of generated arrays), ``max_config_bytes``
(:data:`MAX_CONFIG_BYTES`, 1 MB of YAML) and ``max_config_depth``
(:data:`MAX_CONFIG_DEPTH`, 32 levels of nesting). Seeds lie in [0, 2**32 - 1] (NumPy's range).

Checks that need the data (columns, target, classes and groups against ``cv``, the
metric against the task) are in :func:`toolkit.study.engine.prepare_study`, which
``mmtk validate`` runs.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import re
from pathlib import Path
from typing import Any

import yaml

TASKS = {"classification", "regression"}

#: Most bootstrap resamples (``evaluation.bootstrap``).
MAX_BOOTSTRAP = 100_000
#: Most folds run at once (``evaluation.n_jobs``; -1 means all cores).
MAX_N_JOBS = 64
#: Largest seed (``seed``, ``random_state``): NumPy's RandomState range.
MAX_SEED = 2**32 - 1
#: Most bytes of arrays a ``make_*`` source may generate (estimated from its parameters).
MAX_SYNTHETIC_BYTES = 4 * 1024**3
#: Largest config file read.
MAX_CONFIG_BYTES = 1_000_000
#: Deepest nesting of mappings and lists in a config.
MAX_CONFIG_DEPTH = 32
#: A name that becomes a folder: letters, digits, '.', '_', '-'; no '..'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: ``data.params`` keys that name input files or folders (resolved against the config's folder).
INPUT_PATH_PARAMS = ("csv", "data_dir", "path")
#: ``data.params`` keys that would write files; refused in a study.
OUTPUT_PATH_PARAMS = ("output_dir",)

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
        "mosi_metrics": False,
        "conformal": {"enabled": False, "confidence": 0.9, "calibration": 0.25},
    },
    "explanation": {"enabled": True, "removal": "missing"},
    "output": {
        "report": True,
        "save_model": True,
        "include_text": False,
        "model_rule": "best_mean_primary",
        "interactions": True,
        "intervals": True,
        "drilldown_rows": 2,
        "drilldown_max_parts": 8,
    },
}

#: Most rows ``output.drilldown_rows`` may ask for (each costs up to 2^max_parts - 2
#: encoder calls per drilled modality).
MAX_DRILLDOWN_ROWS = 20

#: How the saved model is chosen (``output.model_rule``): the model (fusion strategy or
#: single modality) with the best out-of-fold primary metric; one named strategy
#: (``fixed:<strategy>``); or ``auto``, the estimators' ``fusion="auto"``, which chooses
#: among the strategies and the best single modality by inner cross-validation on the
#: training rows (needs a toolkit whose FUSIONS registers "auto").
MODEL_RULES = ("best_mean_primary", "fixed:<strategy>", "auto")


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
    if not all(keys):
        raise ConfigError(f"--set {assignment!r}: the key path has an empty part; use a.b=value")
    node = config
    for depth, key in enumerate(keys[:-1]):
        if key not in node or node[key] is None:
            node[key] = {}
        elif not isinstance(node[key], dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(
                f"--set {assignment!r}: {where} is a {type(node[key]).__name__}, not a mapping"
            )
        node = node[key]
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML: {exc}") from exc


def _depth(value: Any) -> int:
    """Nesting depth of mappings and lists (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (v, depth + 1) for v in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def load_config(
    path,
    overrides=(),
    *,
    max_config_bytes: int = MAX_CONFIG_BYTES,
    max_config_depth: int = MAX_CONFIG_DEPTH,
    **limits,
) -> dict:
    """Read a YAML study config, apply overrides, fill defaults and validate it.

    ``limits`` are passed to :func:`validate_config`. A file larger than
    ``max_config_bytes`` (default :data:`MAX_CONFIG_BYTES`, 1 MB) is refused unread; one
    nested deeper than ``max_config_depth`` (default :data:`MAX_CONFIG_DEPTH`, 32 levels)
    is refused after parsing.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' is not a regular file; pass a YAML file")
    size = path.stat().st_size
    if size > max_config_bytes:
        raise ConfigError(
            f"config file '{path}' is {size:,} bytes, more than the {max_config_bytes:,} "
            "allowed (max_config_bytes); a study config is a short YAML file"
        )
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text; save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file '{path}' is not valid YAML: {detail}") from exc
    except RecursionError as exc:
        raise ConfigError(
            f"config file '{path}' is nested too deeply to parse; a study config has a few levels"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file '{path}': expected a mapping at the top level, found {type(raw).__name__}"
        )
    for assignment in overrides:
        apply_override(raw, assignment)
    depth = _depth(raw)
    if depth > max_config_depth:
        raise ConfigError(
            f"config file '{path}' nests mappings and lists {depth} levels deep, more than the "
            f"{max_config_depth} allowed (max_config_depth)"
        )
    ev = raw.get("evaluation")
    if isinstance(ev, dict) and isinstance(ev.get("conformal"), bool):
        ev["conformal"] = {"enabled": ev["conformal"]}  # `conformal: true` with the defaults
    config = _merge(DEFAULTS, raw)
    config["_path"] = str(path.resolve())
    validate_config(config, **limits)
    return config


def _shown(found: Any) -> str:
    if isinstance(found, dict | list):
        return f"an empty {type(found).__name__}" if not found else type(found).__name__
    return repr(found)


def _expect(cond: bool, key: str, expected: str, found: Any) -> None:
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, found {_shown(found)}")


def _integer(value: Any, key: str, low: int, high: int | None, what: str = "") -> int:
    """An int in [low, high]; a bool or a float (even 3.0) is refused."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high:,}]"
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected {allowed}{what}, found {value!r} (a boolean)")
    _expect(
        isinstance(value, numbers.Integral) and value >= low and (high is None or value <= high),
        key,
        allowed + what,
        value,
    )
    return int(value)


def _seed(value: Any, key: str) -> None:
    _integer(value, key, 0, MAX_SEED)


def check_name(value: Any, key: str) -> str:
    """A name that becomes a folder: NAME_PATTERN and no '..' (so no separators,
    no leading '~', no absolute path)."""
    ok = isinstance(value, str) and NAME_PATTERN.fullmatch(value) and ".." not in value
    if not ok:
        raise ConfigError(
            f"{key}: expected a plain name (letters, digits, '.', '_', '-', starting with a "
            f"letter or digit, at most 100 characters; no '/', '\\', '..', '~' or absolute "
            f"path, as it becomes a folder name), found {_shown(value)}"
        )
    return value


def _check_values(value: Any, key: str, bool_ok: bool) -> None:
    """No boolean where a number is meant, no NaN or infinity, anywhere inside ``value``."""
    if isinstance(value, bool):
        if not bool_ok:
            raise ConfigError(f"{key}: expected a number or text, found {value!r} (a boolean)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, found {value!r}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_values(v, f"{key}.{k}", bool_ok)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(v, f"{key}[{i}]", bool_ok)


def _check_params(params: dict, key: str, fn, what: str) -> None:
    """Each param is one of ``fn``'s keyword parameters and has its default's type:
    a bool for a bool default, an int (not a bool or float) for an int default, a number
    (not a bool) for a float default; no bool or non-finite number anywhere else."""
    signature = inspect.signature(fn)
    accepted = {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
    }
    for name, value in params.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or name not in accepted:
            raise ConfigError(
                f"{where}: not a parameter of {what}; expected one of {sorted(accepted)}"
            )
        default = accepted[name]
        if name in ("random_state", "seed") and value is not None:
            _seed(value, where)
        elif isinstance(default, bool):
            _expect(isinstance(value, bool), where, "true or false", value)
        elif isinstance(default, numbers.Integral):
            _integer(value, where, -(2**63), 2**63 - 1)
        elif isinstance(default, numbers.Real):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{where}: expected a number, found {_shown(value)}")
            _check_values(value, where, bool_ok=False)
        else:
            _check_values(value, where, bool_ok=False)


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
        "mosi_metrics",
        "conformal",
    },
    "evaluation.conformal": {"enabled", "confidence", "calibration"},
    "explanation": {"enabled", "removal"},
    "output": {
        "report",
        "save_model",
        "include_text",
        "model_rule",
        "interactions",
        "intervals",
        "drilldown_rows",
        "drilldown_max_parts",
    },
}


def _check_keys(config: dict) -> None:
    for section, allowed in ALLOWED_KEYS.items():
        node = config
        for part in section.split(".") if section else []:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        for key in node:
            if key == "_path" and not section:
                continue  # set by load_config: the config file's own path
            if key not in allowed:
                where = f"{section}.{key}" if section else str(key)
                raise ConfigError(f"{where}: unknown key; expected one of {sorted(allowed)}")


def metric_names(task: str, n_classes: int | None = None, mosi: bool = True) -> list[str]:
    """The metrics a study of ``task`` may report (binary-only ones need ``n_classes == 2``;
    MOSI's acc2 / f1 / acc7 need ``mosi``, i.e. ``evaluation.mosi_metrics: true``)."""
    from toolkit.study.metrics import (
        CLASSIFICATION_METRICS,
        classification_metric_names,
        regression_metric_names,
    )

    if task == "regression":
        return regression_metric_names(mosi)
    return (
        list(CLASSIFICATION_METRICS)
        if n_classes is None
        else classification_metric_names(n_classes)
    )


def _validate_data(data: dict, max_synthetic_bytes: int) -> None:
    from toolkit.datasets import DATASETS

    _expect(isinstance(data, dict), "data", "a mapping", data)
    source = data.get("source")
    _expect(
        isinstance(source, str) and source in DATASETS,
        "data.source",
        f"one of {sorted(DATASETS)}",
        source,
    )
    info = DATASETS[source]
    params = data.get("params")
    _expect(isinstance(params, dict), "data.params", "a mapping", params)
    for key in OUTPUT_PATH_PARAMS:
        if key in params:
            raise ConfigError(
                f"data.params.{key}: a study does not write generated files (its data stays in "
                f"memory and its outputs go in the run folder); remove the key, or call "
                f"toolkit.datasets.{source}({key}=...) in Python"
            )
    for key in INPUT_PATH_PARAMS:
        if key in params:
            value = params[key]
            _expect(isinstance(value, str) and value.strip(), f"data.params.{key}", "a path", value)
    _check_params(params, "data.params", info.function, source)
    size = info.generated_bytes(params)
    if size is not None and size > max_synthetic_bytes:
        raise ConfigError(
            f"data.params: {source} with these parameters would generate about "
            f"{size / 1024**3:.1f} GiB of arrays, more than the {max_synthetic_bytes / 1024**3:.1f} "
            "GiB allowed (max_synthetic_bytes); lower n_samples or the sizes"
        )
    for key in ("target", "groups"):
        value = data.get(key)
        _expect(
            value is None or (isinstance(value, str) and value != ""),
            f"data.{key}",
            "a column name",
            value,
        )


def _validate_estimator_params(registry, name: str, params: dict, key: str) -> None:
    """Build the registered ``name`` with ``params`` and run its own parameter checks."""
    cls = registry[name]
    _check_params(params, key, cls, cls.__name__)
    try:
        registry.build(name, params)
    except (ValueError, TypeError) as exc:  # scikit-learn's InvalidParameterError is both
        message = str(exc).replace("\n", " ")
        raise ConfigError(f"{key}: {message}") from exc


def _validate_modalities(mods) -> None:
    from toolkit.encoders import ENCODERS

    if mods is None:
        return
    _expect(isinstance(mods, list) and mods, "modalities", "a non-empty list", mods)
    names = set()
    for i, mod in enumerate(mods):
        key = f"modalities[{i}]"
        _expect(isinstance(mod, dict), key, "a mapping with name, encoder, columns", mod)
        unknown = set(mod) - {"name", "encoder", "columns", "params"}
        if unknown:
            raise ConfigError(
                f"{key}.{sorted(map(str, unknown))[0]}: unknown key; expected one of "
                "['columns', 'encoder', 'name', 'params']"
            )
        check_name(mod.get("name"), f"{key}.name")
        _expect(mod["name"] not in names, f"{key}.name", "a unique name", mod["name"])
        names.add(mod["name"])
        _expect(
            isinstance(mod.get("encoder"), str) and mod["encoder"] in ENCODERS,
            f"{key}.encoder",
            f"one of {sorted(ENCODERS)}",
            mod.get("encoder"),
        )
        cols = mod.get("columns")
        ok = (isinstance(cols, str) and cols) or (
            isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols)
        )
        _expect(ok, f"{key}.columns", "a column name or a list of column names", cols)
        if isinstance(cols, list) and len(set(cols)) != len(cols):
            dup = next(c for c in cols if cols.count(c) > 1)
            raise ConfigError(f"{key}.columns: column '{dup}' is listed twice")
        params = mod.get("params", {})
        _expect(isinstance(params, dict), f"{key}.params", "a mapping", params)
        _validate_estimator_params(ENCODERS, mod["encoder"], params, f"{key}.params")


def _validate_fusion(fusion) -> None:
    from toolkit.fusion import FUSIONS

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
            isinstance(name, str) and name in FUSIONS,
            key,
            f"one of {sorted(FUSIONS)} (or a mapping with name and params)",
            entry,
        )
        if isinstance(entry, dict):
            unknown = set(entry) - {"name", "params"}
            if unknown:
                raise ConfigError(
                    f"{key}.{sorted(map(str, unknown))[0]}: unknown key; expected name, params"
                )
            params = entry.get("params", {})
            _expect(isinstance(params, dict), f"{key}.params", "a mapping", params)
            _validate_estimator_params(FUSIONS, name, params, f"{key}.params")


def validate_config(
    config: dict,
    *,
    max_bootstrap: int = MAX_BOOTSTRAP,
    max_n_jobs: int = MAX_N_JOBS,
    max_synthetic_bytes: int = MAX_SYNTHETIC_BYTES,
) -> None:
    """Check keys, types, ranges and names; raise ConfigError naming the key path.

    Parameters
    ----------
    config : dict
        A config with defaults filled in (as :func:`load_config` returns it).
    max_bootstrap : int, default=MAX_BOOTSTRAP (100,000)
        Most resamples ``evaluation.bootstrap`` may ask for.
    max_n_jobs : int, default=MAX_N_JOBS (64)
        Most folds ``evaluation.n_jobs`` may run at once (or -1: all cores).
    max_synthetic_bytes : int, default=MAX_SYNTHETIC_BYTES (4 GiB)
        Most bytes of arrays a ``make_*`` data source may generate.
    """
    _check_keys(config)
    check_name(config.get("name"), "name")
    _seed(config.get("seed"), "seed")
    task = config.get("task")
    _expect(isinstance(task, str) and task in TASKS, "task", f"one of {sorted(TASKS)}", task)
    _validate_data(config.get("data"), max_synthetic_bytes)
    _validate_modalities(config.get("modalities"))
    _validate_fusion(config.get("fusion"))
    ev = config.get("evaluation")
    _expect(isinstance(ev, dict), "evaluation", "a mapping", ev)
    _integer(ev.get("cv"), "evaluation.cv", 2, None, " (at most the rows, smallest class, groups)")
    _integer(ev.get("bootstrap"), "evaluation.bootstrap", 0, max_bootstrap)
    thr = ev.get("threshold")
    _expect(
        isinstance(thr, int | float) and not isinstance(thr, bool) and 0 < thr < 1,
        "evaluation.threshold",
        "a number in (0, 1)",
        thr,
    )
    for key in ("robustness", "baselines"):
        _expect(isinstance(ev.get(key), bool), f"evaluation.{key}", "true or false", ev.get(key))
    n_jobs = ev.get("n_jobs", 1)
    if not (type(n_jobs) is int and n_jobs == -1):
        _integer(
            n_jobs, "evaluation.n_jobs", 1, max_n_jobs, " (folds run at once), or -1: all cores"
        )
    _validate_conformal(ev.get("conformal"))
    mosi = ev.get("mosi_metrics")
    _expect(isinstance(mosi, bool), "evaluation.mosi_metrics", "true or false", mosi)
    if mosi and task != "regression":
        raise ConfigError(
            "evaluation.mosi_metrics: MOSI's acc2 / f1 / acc7 are sentiment-score metrics of a "
            "regression study; remove the key or use task: regression"
        )
    primary = ev.get("primary_metric")
    if primary is not None:
        names = metric_names(task, mosi=True)
        _expect(
            isinstance(primary, str) and primary in names,
            "evaluation.primary_metric",
            f"a {task} metric, one of {names}",
            primary,
        )
    ex = config.get("explanation")
    _expect(isinstance(ex, dict), "explanation", "a mapping", ex)
    _expect(
        isinstance(ex.get("enabled"), bool),
        "explanation.enabled",
        "true or false",
        ex.get("enabled"),
    )
    _expect(
        ex.get("removal") in ("missing", "background"),
        "explanation.removal",
        "'missing' or 'background'",
        ex.get("removal"),
    )
    out = config.get("output")
    _expect(isinstance(out, dict), "output", "a mapping", out)
    for key in ("report", "save_model", "include_text", "interactions", "intervals"):
        _expect(isinstance(out.get(key), bool), f"output.{key}", "true or false", out.get(key))
    _integer(
        out.get("drilldown_rows"), "output.drilldown_rows", 0, MAX_DRILLDOWN_ROWS,
        " (test rows drilled into; 0 turns the drill-down off)",
    )  # fmt: skip
    from toolkit.explain.drilldown import MAX_EXACT_PARTS

    _integer(
        out.get("drilldown_max_parts"), "output.drilldown_max_parts", 1, MAX_EXACT_PARTS,
        " (items with more parts are sampled)",
    )  # fmt: skip
    _validate_model_rule(out.get("model_rule"), config.get("fusion"))


def _validate_conformal(conformal) -> None:
    _expect(isinstance(conformal, dict), "evaluation.conformal", "a mapping", conformal)
    enabled = conformal.get("enabled")
    _expect(isinstance(enabled, bool), "evaluation.conformal.enabled", "true or false", enabled)
    for key, what in (("confidence", "the coverage asked for"), ("calibration", "the share of "
                      "each fold's training rows held out to calibrate")):  # fmt: skip
        value = conformal.get(key)
        _expect(
            isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1,
            f"evaluation.conformal.{key}",
            f"a number in (0, 1) ({what})",
            value,
        )


def _validate_model_rule(rule, fusion) -> None:
    """``output.model_rule``: best_mean_primary, fixed:<a listed strategy>, or auto."""
    from toolkit.fusion import FUSIONS

    expected = "best_mean_primary, fixed:<a strategy listed in fusion> or auto"
    _expect(isinstance(rule, str), "output.model_rule", expected, rule)
    if rule == "best_mean_primary":
        return
    if rule == "auto":
        if "auto" not in FUSIONS:
            raise ConfigError(
                "output.model_rule: 'auto' needs fusion='auto' (inner-CV choice of the "
                f"strategy), which this toolkit does not register (strategies: {sorted(FUSIONS)}); "
                "use best_mean_primary or fixed:<strategy>"
            )
        return
    listed = [f if isinstance(f, str) else f.get("name") for f in (fusion or [])]
    if rule.startswith("fixed:"):
        name = rule.split(":", 1)[1]
        if name in listed:
            return
        raise ConfigError(
            f"output.model_rule: '{rule}' names a strategy not listed in fusion {listed}; "
            f"use one of {[f'fixed:{n}' for n in listed]}"
        )
    raise ConfigError(f"output.model_rule: expected {expected}, found {rule!r}")

def resolve_input_paths(config: dict) -> dict:
    """``data.params`` with relative input paths made absolute against the config's folder.

    The config's folder is that of ``config["_path"]`` (set by :func:`load_config`); a
    config built in Python without ``_path`` resolves against the working directory.
    ``~`` is expanded.
    """
    params = dict(config["data"].get("params") or {})
    base = Path(config["_path"]).parent if config.get("_path") else Path.cwd()
    for key in INPUT_PATH_PARAMS:
        if isinstance(params.get(key), str):
            path = Path(params[key]).expanduser()
            params[key] = str(path if path.is_absolute() else base / path)
    return params
