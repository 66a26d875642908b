"""The checks a study config's values go through, each raising :class:`ConfigError` with
the key path: bounded integers and numbers, plain names, seeds, and the values that must
name a registered entry (a data source and its parameters, an encoder and its
parameters, a fusion strategy and its parameters, the model rule).

:mod:`toolkit.study.schema` declares which check each key of the config takes; this
module holds the checks themselves (the vocabulary of the schema).
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from typing import Any

#: Most bootstrap resamples (``evaluation.bootstrap``).
MAX_BOOTSTRAP = 100_000
#: Most folds run at once (``evaluation.n_jobs``; -1 means all cores).
MAX_N_JOBS = 64
#: Largest seed (``seed``, ``random_state``): NumPy's RandomState range.
MAX_SEED = 2**32 - 1
#: Most bytes of arrays a ``make_*`` source may generate (estimated from its parameters).
MAX_SYNTHETIC_BYTES = 4 * 1024**3
#: A name that becomes a folder: letters, digits, '.', '_', '-'; no '..'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: ``data.params`` keys that name input files or folders (resolved against the config's folder).
INPUT_PATH_PARAMS = ("csv", "data_dir", "path")
#: ``data.params`` keys that would write files; refused in a study.
OUTPUT_PATH_PARAMS = ("output_dir",)
#: The limits a caller may change (keyword arguments of ``validate_config``), with defaults.
LIMITS = {
    "max_bootstrap": MAX_BOOTSTRAP,
    "max_n_jobs": MAX_N_JOBS,
    "max_synthetic_bytes": MAX_SYNTHETIC_BYTES,
}


class ConfigError(ValueError):
    """A study config is invalid; the message names the key path."""


def shown(found: Any) -> str:
    """How a wrong value is shown in a message (containers by kind, others by repr)."""
    if isinstance(found, dict | list):
        return f"an empty {type(found).__name__}" if not found else type(found).__name__
    return repr(found)


def expect(cond: bool, key: str, expected: str, found: Any) -> None:
    """Raise ``"<key>: expected <expected>, found <found>"`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, found {shown(found)}")


def integer(value: Any, key: str, low: int, high: int | None, what: str = "") -> int:
    """An int in [low, high]; a bool or a float (even 3.0) is refused."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high:,}]"
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected {allowed}{what}, found {value!r} (a boolean)")
    expect(
        isinstance(value, numbers.Integral) and value >= low and (high is None or value <= high),
        key,
        allowed + what,
        value,
    )
    return int(value)


def seed(value: Any, key: str) -> int:
    """A seed in [0, MAX_SEED]."""
    return integer(value, key, 0, MAX_SEED)


def open_unit(value: Any, key: str, what: str = "") -> float:
    """A number strictly between 0 and 1 (not a boolean)."""
    expect(
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1,
        key,
        f"a number in (0, 1){what}",
        value,
    )
    return value


def check_name(value: Any, key: str) -> str:
    """A name that becomes a folder: NAME_PATTERN and no '..' (so no separators,
    no leading '~', no absolute path)."""
    ok = isinstance(value, str) and NAME_PATTERN.fullmatch(value) and ".." not in value
    if not ok:
        raise ConfigError(
            f"{key}: expected a plain name (letters, digits, '.', '_', '-', starting with a "
            f"letter or digit, at most 100 characters; no '/', '\\', '..', '~' or absolute "
            f"path, as it becomes a folder name), found {shown(value)}"
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


def check_params(params: dict, key: str, fn, what: str) -> None:
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
            seed(value, where)
        elif isinstance(default, bool):
            expect(isinstance(value, bool), where, "true or false", value)
        elif isinstance(default, numbers.Integral):
            integer(value, where, -(2**63), 2**63 - 1)
        elif isinstance(default, numbers.Real):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{where}: expected a number, found {shown(value)}")
            _check_values(value, where, bool_ok=False)
        else:
            _check_values(value, where, bool_ok=False)


def estimator_params(registry, name: str, params: dict, key: str) -> dict:
    """Build the registered ``name`` with ``params`` and run its own parameter checks."""
    cls = registry[name]
    check_params(params, key, cls, cls.__name__)
    try:
        registry.build(name, params)
    except (ValueError, TypeError) as exc:  # scikit-learn's InvalidParameterError is both
        message = str(exc).replace("\n", " ")
        raise ConfigError(f"{key}: {message}") from exc
    return params


def data_source(source: Any) -> str:
    """``data.source``: a name registered in ``toolkit.datasets.DATASETS``."""
    from toolkit.datasets import DATASETS

    expect(
        isinstance(source, str) and source in DATASETS,
        "data.source",
        f"one of {sorted(DATASETS)}",
        source,
    )
    return source


def data_params(params: Any, source: str, max_synthetic_bytes: int) -> dict:
    """``data.params``: parameters of the source, no output path, bounded generated size."""
    from toolkit.datasets import DATASETS

    expect(isinstance(params, dict), "data.params", "a mapping", params)
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
            expect(isinstance(value, str) and value.strip(), f"data.params.{key}", "a path", value)
    info = DATASETS[source]
    check_params(params, "data.params", info.function, source)
    size = info.generated_bytes(params)
    if size is not None and size > max_synthetic_bytes:
        raise ConfigError(
            f"data.params: {source} with these parameters would generate about "
            f"{size / 1024**3:.1f} GiB of arrays, more than the {max_synthetic_bytes / 1024**3:.1f} "
            "GiB allowed (max_synthetic_bytes); lower n_samples or the sizes"
        )
    return params


def column_name(value: Any, key: str) -> str | None:
    """An optional column name (None or non-empty text)."""
    expect(value is None or (isinstance(value, str) and value != ""), key, "a column name", value)
    return value


def columns(cols: Any, key: str) -> str | list[str]:
    """A column name or a non-empty list of distinct column names."""
    ok = (isinstance(cols, str) and cols) or (
        isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols)
    )
    expect(ok, key, "a column name or a list of column names", cols)
    if isinstance(cols, list) and len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise ConfigError(f"{key}: column '{dup}' is listed twice")
    return cols


def encoder_name(value: Any, key: str) -> str:
    """A name registered in ``toolkit.encoders.ENCODERS``."""
    from toolkit.encoders import ENCODERS

    expect(isinstance(value, str) and value in ENCODERS, key, f"one of {sorted(ENCODERS)}", value)
    return value


def encoder_params(params: Any, encoder: str, key: str) -> dict:
    """Parameters of the encoder ``encoder``, checked by building it."""
    from toolkit.encoders import ENCODERS

    expect(isinstance(params, dict), key, "a mapping", params)
    estimator_params(ENCODERS, encoder, params, key)
    # the allow-lists a model file's encoder passes at toolkit.load (architecture name,
    # model_kwargs keys known to be inert): a config can no more make a backend download
    from toolkit.encoders.backends.base import check_encoder_params

    try:
        check_encoder_params(ENCODERS.build(encoder, params))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    return params


def fusion_entry(entry: Any, key: str) -> tuple[str, dict, bool]:
    """(name, params, written as a bare name) of one ``fusion`` entry."""
    from toolkit.fusion import FUSIONS

    name = (
        entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None
    )
    expect(
        isinstance(name, str) and name in FUSIONS,
        key,
        f"one of {sorted(FUSIONS)} (or a mapping with name and params)",
        entry,
    )
    if isinstance(entry, str):
        return name, {}, True
    unknown = set(entry) - {"name", "params"}
    if unknown:
        raise ConfigError(
            f"{key}.{sorted(map(str, unknown))[0]}: unknown key; expected name, params"
        )
    params = entry.get("params", {})
    expect(isinstance(params, dict), f"{key}.params", "a mapping", params)
    return name, estimator_params(FUSIONS, name, params, f"{key}.params"), False


def model_rule(rule: Any, listed: list[str]) -> str:
    """``output.model_rule``: prefer_simpler, best_mean_primary, fixed:<a listed strategy>,
    or auto."""
    from toolkit.fusion import FUSIONS

    expected = "prefer_simpler, best_mean_primary, fixed:<a strategy listed in fusion> or auto"
    expect(isinstance(rule, str), "output.model_rule", expected, rule)
    if rule in ("prefer_simpler", "best_mean_primary"):
        return rule
    if rule == "auto":
        if "auto" not in FUSIONS:
            raise ConfigError(
                "output.model_rule: 'auto' needs fusion='auto' (inner-CV choice of the "
                f"strategy), which this toolkit does not register (strategies: {sorted(FUSIONS)}); "
                "use best_mean_primary or fixed:<strategy>"
            )
        return rule
    if rule.startswith("fixed:"):
        if rule.split(":", 1)[1] in listed:
            return rule
        raise ConfigError(
            f"output.model_rule: '{rule}' names a strategy not listed in fusion {listed}; "
            f"use one of {[f'fixed:{n}' for n in listed]}"
        )
    raise ConfigError(f"output.model_rule: expected {expected}, found {rule!r}")
