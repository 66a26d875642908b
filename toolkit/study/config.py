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
  folder (see :func:`resolve_input_paths`), and so does an encoder's relative ``weights``
  file (:func:`resolve_encoder_paths`); relative paths inside a manifest resolve
  against the manifest's folder (``toolkit.datasets.load_manifest``).
- pass a number out of range or of the wrong type. Every numeric key is bounded;
  ``true``/``false`` is never accepted as a number and a float never as an integer.

The schema (every key, its default, type, bounds and allowed values) is
:mod:`toolkit.study.schema`: :func:`load_config` returns a typed
:class:`~toolkit.study.schema.StudyConfig`, read by attribute
(``config.evaluation.cv``); ``config.to_dict()`` is the resolved config. The checks the
schema uses are in :mod:`toolkit.study.checks`.

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

import re
from pathlib import Path
from typing import Any

import yaml

from toolkit.study.checks import (
    INPUT_PATH_PARAMS,
    MAX_BOOTSTRAP,
    MAX_N_JOBS,
    MAX_SEED,
    MAX_SYNTHETIC_BYTES,
    NAME_PATTERN,
    OUTPUT_PATH_PARAMS,
    ConfigError,
    check_name,
)
from toolkit.study.schema import (
    MAX_DRILLDOWN_ROWS,
    MODEL_RULES,
    TASKS,
    StudyConfig,
    allowed_keys,
    defaults,
)

__all__ = [
    "INPUT_PATH_PARAMS",
    "MAX_BOOTSTRAP",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_DRILLDOWN_ROWS",
    "MAX_N_JOBS",
    "MAX_SEED",
    "MAX_SYNTHETIC_BYTES",
    "MODEL_RULES",
    "NAME_PATTERN",
    "OUTPUT_PATH_PARAMS",
    "TASKS",
    "ConfigError",
    "StudyConfig",
    "allowed_keys",
    "apply_override",
    "as_config",
    "check_name",
    "defaults",
    "load_config",
    "resolve_encoder_paths",
    "resolve_input_paths",
    "validate_config",
]

#: Largest config file read.
MAX_CONFIG_BYTES = 1_000_000
#: Deepest nesting of mappings and lists in a config.
MAX_CONFIG_DEPTH = 32
#: Most values (mappings, lists and scalars) a config may expand to once its YAML aliases are
#: followed (``max_config_values``): a few hundred bytes of nested aliases would otherwise
#: expand to billions of values.
MAX_CONFIG_VALUES = 100_000


def apply_override(config: dict, assignment: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML) to ``config`` in place.

    A part of the path that meets a list picks an entry by position (``modalities.2``) or,
    in a list of named entries, by name (``modalities.notes`` is the entry whose ``name``
    is ``notes``); a missing mapping along the way is made.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {assignment!r}: the key path has an empty part; use a.b=value")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML: {exc}") from exc
    node = config
    for depth, key in enumerate(keys[:-1]):
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            node = node[_list_position(node, key, where, assignment)]
            continue
        if key not in node or node[key] is None:
            node[key] = {}
        elif not isinstance(node[key], dict | list):
            raise ConfigError(
                f"--set {assignment!r}: {where} is a {type(node[key]).__name__}, not a mapping"
            )
        node = node[key]
    if isinstance(node, list):
        node[_list_position(node, keys[-1], path.strip(), assignment)] = value
    elif isinstance(node, dict):
        node[keys[-1]] = value
    else:
        where = ".".join(keys[:-1])
        raise ConfigError(
            f"--set {assignment!r}: {where} is a {type(node).__name__}, not a mapping"
        )


def _list_position(items: list, key: str, where: str, assignment: str) -> int:
    """The position in ``items`` that the path part ``key`` names: an index, or the name of
    an entry (a mapping whose ``name`` is ``key``)."""
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if key.lstrip("-").isdigit():
        k = int(key)
        if not -len(items) <= k < len(items):
            raise ConfigError(
                f"--set {assignment!r}: {where}: the list has {len(items)} entries "
                f"(positions 0 to {len(items) - 1}{'; names ' + str(names) if any(names) else ''})"
            )
        return k % len(items)
    for k, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return k
    parent = where.rsplit(".", 1)[0]
    if not any(names):
        raise ConfigError(
            f"--set {assignment!r}: {parent} is a list without named entries; address an "
            f"entry by its position (0 to {len(items) - 1}), not by '{key}'"
        )
    raise ConfigError(
        f"--set {assignment!r}: {parent} has no entry named '{key}'; use a position "
        f"(0 to {len(items) - 1}) or one of the names {names}"
    )


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


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _expanded_values(node, limit: int) -> int | None:
    """How many values the YAML node graph ``node`` stands for, an alias counted each time it
    is used (capped at ``limit + 1``; iterative, each node visited once); None when an alias
    refers to a node that contains it."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(node, False)]
    while stack:
        current, done = stack.pop()
        key = id(current)
        if done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(current))
            sizes[key] = min(total, limit + 1)
        elif key not in sizes:
            if key in on_path:
                return None
            on_path.add(key)
            stack.append((current, True))
            stack.extend((c, False) for c in _children(current) if id(c) not in sizes)
    return sizes[id(node)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a mapping that repeats a key (PyYAML keeps the last
    value silently, so a study would run with a setting its author did not see), and
    reading ``1e3`` or ``-1e-5`` as numbers, as YAML 1.2 does (PyYAML's YAML 1.1 reads a
    number without a dot in its mantissa as text)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise ConfigError(
                        f"config file '{self.name}': key '{key}' appears twice in one mapping "
                        f"(lines {seen[key]} and {line}); keep one"
                    )
                if isinstance(key, str | int | float | bool):
                    seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse(path: Path, text: str, max_values: int):
    """The YAML document in ``text``, refused before it is built when its aliases expand to
    more than ``max_values`` values or refer to themselves."""
    graph = yaml.compose(text, Loader=_UniqueKeyLoader)
    if graph is not None:
        n = _expanded_values(graph, max_values)
        if n is None:
            raise ConfigError(
                f"config file '{path}' has a YAML alias that refers to itself; write the values out"
            )
        if n > max_values:
            raise ConfigError(
                f"config file '{path}' expands to more than {max_values:,} values once its "
                "YAML aliases (*name) are followed (max_config_values); a study config has a "
                "few dozen: write the values out instead of nesting aliases"
            )
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config(
    path,
    overrides=(),
    *,
    max_config_bytes: int = MAX_CONFIG_BYTES,
    max_config_depth: int = MAX_CONFIG_DEPTH,
    max_config_values: int = MAX_CONFIG_VALUES,
    **limits,
) -> StudyConfig:
    """Read a YAML study config, apply overrides, fill defaults and validate it: the typed
    :class:`~toolkit.study.schema.StudyConfig`.

    ``limits`` are passed to :func:`validate_config`. A file larger than
    ``max_config_bytes`` (default :data:`MAX_CONFIG_BYTES`, 1 MB) is refused unread; one
    nested deeper than ``max_config_depth`` (default :data:`MAX_CONFIG_DEPTH`, 32 levels)
    is refused after parsing; one whose YAML aliases expand to more than
    ``max_config_values`` values (default :data:`MAX_CONFIG_VALUES`) or refer to themselves is
    refused before it is built.
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
        raw = _parse(path, path.read_bytes().decode("utf-8"), max_config_values)
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
    return StudyConfig.from_dict(raw, path=str(path.resolve()), **limits)


def validate_config(config, **limits) -> StudyConfig:
    """Check keys, types, ranges and names; raise ConfigError naming the key path.

    Parameters
    ----------
    config : StudyConfig or dict
        A typed config (checked again, e.g. after an attribute was changed, or against
        other limits) or a plain mapping (defaults are filled in).
    max_bootstrap : int, default=MAX_BOOTSTRAP (100,000)
        Most resamples ``evaluation.bootstrap`` may ask for.
    max_n_jobs : int, default=MAX_N_JOBS (64)
        Most folds ``evaluation.n_jobs`` may run at once (or -1: all cores).
    max_synthetic_bytes : int, default=MAX_SYNTHETIC_BYTES (4 GiB)
        Most bytes of arrays a ``make_*`` data source may generate.

    Returns
    -------
    StudyConfig
        The checked config (a new object; ``path`` is kept).
    """
    if isinstance(config, StudyConfig):
        return StudyConfig.from_dict(config.to_dict(), path=config.path, **limits)
    return StudyConfig.from_dict(config, **limits)


def as_config(config) -> StudyConfig:
    """``config`` itself when it is a :class:`StudyConfig`, else the typed config of a
    plain mapping (defaults filled, values checked)."""
    return config if isinstance(config, StudyConfig) else StudyConfig.from_dict(config)


#: Encoder parameters that name a file: a relative one resolves against the config's folder.
ENCODER_PATH_PARAMS = ("weights",)


def resolve_encoder_paths(config: StudyConfig, params: dict) -> dict:
    """An encoder's ``params`` with relative file paths (``weights``) made absolute against
    the config's folder, as :func:`resolve_input_paths` does for ``data.params``: the same
    config then reads the same file from any working directory. ``model`` (a local folder
    or a hub id) is resolved when the folder exists beside the config; one that exists only
    in the working directory is refused (ValueError). ``~`` is expanded."""
    params = dict(params)
    base = Path(config.path).parent if config.path else Path.cwd()
    for key in ENCODER_PATH_PARAMS:
        if isinstance(params.get(key), str) and params[key].strip():
            path = Path(params[key]).expanduser()
            params[key] = str(path if path.is_absolute() else base / path)
    model = params.get("model")
    if isinstance(model, str) and model.strip() and not Path(model).expanduser().is_absolute():
        beside = base / Path(model).expanduser()
        if beside.is_dir():
            params["model"] = str(beside)
        elif Path(model).expanduser().exists() and base.resolve() != Path.cwd().resolve():
            raise ValueError(
                f"model '{model}' is a folder of the working directory, not of the config's "
                f"folder '{base}', so the study would read another model when run from "
                "elsewhere; write its absolute path, or a path relative to the config"
            )
    return params


def resolve_input_paths(config: StudyConfig) -> dict:
    """``data.params`` with relative input paths made absolute against the config's folder.

    The config's folder is that of ``config.path`` (set by :func:`load_config`); a
    config built in Python without a path resolves against the working directory.
    ``~`` is expanded.
    """
    params = dict(config.data.params or {})
    base = Path(config.path).parent if config.path else Path.cwd()
    for key in INPUT_PATH_PARAMS:
        if isinstance(params.get(key), str):
            path = Path(params[key]).expanduser()
            params[key] = str(path if path.is_absolute() else base / path)
    return params
