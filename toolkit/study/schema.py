"""The study config's schema: one dataclass per section, each field with its default and
its check (type, bounds, allowed values) in one place.

:class:`StudyConfig` is what :func:`toolkit.study.load_config` returns and what the
study engine, the summary, the report and the model card read (by attribute:
``config.evaluation.cv``). :meth:`StudyConfig.from_dict` fills the defaults and checks
every value, raising :class:`~toolkit.study.checks.ConfigError` with the key path;
:meth:`StudyConfig.to_dict` gives the resolved config (``config.resolved.yaml``). The
allowed keys of each section and their defaults are derived from the fields
(:func:`allowed_keys`, :func:`defaults`), never written a second time.

A field (:func:`option`) holds its default as a config would write it and its check,
``check(value, key, ctx)``, which returns the checked value; ``ctx`` holds the
caller's limits and the values checked so far (fields are checked in order), for the
few checks that depend on another key (``evaluation.primary_metric`` on ``task``,
``output.model_rule`` on ``fusion``, a modality's ``params`` on its ``encoder``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from toolkit.study import checks
from toolkit.study.checks import ConfigError, expect

TASKS = ("classification", "regression")
#: Most rows ``output.drilldown_rows`` may ask for (each costs up to 2^max_parts - 2
#: encoder calls per drilled modality).
MAX_DRILLDOWN_ROWS = 20
#: How the saved model is chosen (``output.model_rule``): the simpler model (the best
#: single modality) unless a fusion's paired gain over it has a 95% interval above 0
#: (``prefer_simpler``, the default); the model (fusion strategy or single modality) with
#: the best out-of-fold primary metric (``best_mean_primary``); one named strategy
#: (``fixed:<strategy>``); or ``auto``, the estimators' ``fusion="auto"``, which chooses
#: among the strategies and the best single modality by inner cross-validation on the
#: training rows (needs a toolkit whose FUSIONS registers "auto").
MODEL_RULES = ("prefer_simpler", "best_mean_primary", "fixed:<strategy>", "auto")


@dataclass
class Context:
    """What a check may read besides its value: the limits, and the values checked so far
    by key path (``done["task"]``, ``done["modalities[0].encoder"]``), defaults included."""

    limits: dict
    done: dict = field(default_factory=dict)

    def sibling(self, key: str, name: str) -> Any:
        """The checked value of ``name`` in the same section as ``key``."""
        where = key.rsplit(".", 1)[0] if "." in key else ""
        return self.done[f"{where}.{name}" if where else name]


def option(default: Any, check, typed=None):
    """A schema field: its default as written in a config (``raw``, checked like any value
    when the key is absent), its check, and ``typed``, a factory of the default's checked
    form (when it differs from the written one) for an instance made in Python."""
    factory = typed or (lambda: copy.deepcopy(default))
    return field(default_factory=factory, metadata={"check": check, "raw": default})


def section(cls):
    """A field holding a nested section (a dataclass) with its own defaults."""
    return field(default_factory=cls, metadata={"section": cls})


# -- field checks ---------------------------------------------------------------------------


def _bool(value, key, ctx):
    expect(isinstance(value, bool), key, "true or false", value)
    return value


def _int(low: int, high: int | str | None, what: str = ""):
    """An integer in [low, high]; ``high`` may name a limit (``"max_bootstrap"``)."""

    def check(value, key, ctx):
        top = ctx.limits[high] if isinstance(high, str) else high
        return checks.integer(value, key, low, top, what)

    return check


def _unit(what: str = ""):
    return lambda value, key, ctx: checks.open_unit(value, key, what)


def _choice(values, expected: str):
    def check(value, key, ctx):
        expect(isinstance(value, str) and value in values, key, expected, value)
        return value

    return check


def _name(value, key, ctx):
    return checks.check_name(value, key)


def _seed(value, key, ctx):
    return checks.seed(value, key)


def _n_jobs(value, key, ctx):
    if type(value) is int and value == -1:
        return value
    what = " (folds run at once), or -1: all cores"
    return checks.integer(value, key, 1, ctx.limits["max_n_jobs"], what)


def _drilldown_parts(value, key, ctx):
    from toolkit.explain.drilldown import MAX_EXACT_PARTS

    what = " (items with more parts are sampled)"
    return checks.integer(value, key, 1, MAX_EXACT_PARTS, what)


def _mosi_metrics(value, key, ctx):
    _bool(value, key, ctx)
    if value and ctx.done["task"] != "regression":
        raise ConfigError(
            "evaluation.mosi_metrics: MOSI's acc2 / f1 / acc7 are sentiment-score metrics of a "
            "regression study; remove the key or use task: regression"
        )
    return value


def _primary_metric(value, key, ctx):
    """None, or a metric of the task that can rank models."""
    from toolkit.study.metrics import METRICS, metric_names

    if value is None:
        return None
    task = ctx.done["task"]
    names = metric_names(task, mosi=True, ranking=True)
    if isinstance(value, str) and value in METRICS and METRICS[value].task == task:
        metric = METRICS[value]
        if not metric.ranks:
            raise ConfigError(
                f"{key}: '{value}' has an ideal value ({metric.ideal:g}), not a better "
                f"direction, so it cannot rank models; use one of {names}"
            )
    expect(
        isinstance(value, str) and value in names, key, f"a {task} metric, one of {names}", value
    )
    return value


def _source(value, key, ctx):
    return checks.data_source(value)


def _data_params(value, key, ctx):
    source = ctx.sibling(key, "source")
    return checks.data_params(value, source, ctx.limits["max_synthetic_bytes"])


def _column(value, key, ctx):
    return checks.column_name(value, key)


def _columns(value, key, ctx):
    return checks.columns(value, key)


def _encoder(value, key, ctx):
    return checks.encoder_name(value, key)


def _encoder_params(value, key, ctx):
    return checks.encoder_params(value, ctx.sibling(key, "encoder"), key)


def _model_rule(value, key, ctx):
    return checks.model_rule(value, [f.name for f in ctx.done["fusion"]])


def _column_groups(value, key, ctx):
    """None, or {group name: [columns of the modality]}: columns explained together (one
    player of the lab drill-down); a column in no group is a player of its own."""
    if value is None:
        return None
    expect(isinstance(value, dict) and value, key, "a mapping {group: [columns]}", value)
    listed = ctx.sibling(key, "columns")
    listed = listed if isinstance(listed, list) else [listed]
    seen: dict = {}
    for group, cols in value.items():
        where = f"{key}.{group}"
        expect(isinstance(group, str) and group, key, "group names that are text", group)
        expect(
            isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols),
            where, "a non-empty list of column names", cols,
        )  # fmt: skip
        for c in cols:
            if c not in listed:
                raise ConfigError(
                    f"{where}: column '{c}' is not one of the modality's columns {listed}"
                )
            if c in seen:
                raise ConfigError(f"{where}: column '{c}' is already in group '{seen[c]}'")
            seen[c] = group
    return value


# -- the sections ---------------------------------------------------------------------------


@dataclass
class DataConfig:
    """``data``: the registered source, its parameters, the target and groups columns."""

    source: str | None = option(None, _source)  # a name in toolkit.datasets.DATASETS
    params: dict = option({}, _data_params)  # keyword arguments of the source
    target: str | None = option(None, _column)  # default: the source's target
    groups: str | None = option(None, _column)  # default: the source's groups


@dataclass
class ModalityConfig:
    """One entry of ``modalities``: a name, a registered encoder, its columns and params."""

    name: str = option(None, _name)  # it becomes a folder name
    encoder: str = option(None, _encoder)  # a name in toolkit.encoders.ENCODERS
    columns: str | list = option(None, _columns)  # a column or a list of columns
    params: dict = option({}, _encoder_params)  # the encoder's parameters
    # {group: [columns]} explained together in the lab drill-down (tabular modalities)
    column_groups: dict | None = option(None, _column_groups)


@dataclass
class FusionConfig:
    """One entry of ``fusion``: a registered strategy and its parameters."""

    name: str
    params: dict = field(default_factory=dict)
    bare: bool = field(default=False, repr=False, compare=False)  # written as a name only

    def to_dict(self):
        return self.name if self.bare and not self.params else {
            "name": self.name, "params": copy.deepcopy(self.params)
        }  # fmt: skip


@dataclass
class ConformalConfig:
    """``evaluation.conformal`` (``conformal: true`` turns it on with these defaults)."""

    enabled: bool = option(False, _bool)
    confidence: float = option(0.9, _unit(" (the coverage asked for)"))
    calibration: float = option(
        0.25, _unit(" (the share of each fold's training rows held out to calibrate)")
    )


@dataclass
class EvaluationConfig:
    """``evaluation``: cross-validation, bootstrap, metrics, robustness, conformal."""

    cv: int = option(5, _int(2, None, " (at most the rows, smallest class, groups)"))
    bootstrap: int = option(1000, _int(0, "max_bootstrap"))
    threshold: float = option(0.5, lambda v, k, ctx: checks.open_unit(v, k))
    robustness: bool = option(True, _bool)
    baselines: bool = option(True, _bool)
    n_jobs: int = option(1, _n_jobs)
    conformal: ConformalConfig = section(ConformalConfig)
    mosi_metrics: bool = option(False, _mosi_metrics)
    primary_metric: str | None = option(None, _primary_metric)


@dataclass
class ExplanationConfig:
    """``explanation``: exact modality contributions and how a modality is removed."""

    enabled: bool = option(True, _bool)
    removal: str = option(
        "missing", _choice(("missing", "background"), "'missing' or 'background'")
    )


@dataclass
class OutputConfig:
    """``output``: what the run folder holds."""

    report: bool = option(True, _bool)
    save_model: bool = option(True, _bool)
    include_text: bool = option(False, _bool)  # true: words of the rows in the report
    include_images: bool = option(False, _bool)  # true: pictures of rows in the report
    include_group_ids: bool = option(False, _bool)  # true: group ids, not pseudonyms
    interactions: bool = option(True, _bool)
    intervals: bool = option(True, _bool)
    drilldown_rows: int = option(
        2, _int(0, MAX_DRILLDOWN_ROWS, " (test rows drilled into; 0 turns the drill-down off)")
    )
    drilldown_max_parts: int = option(8, _drilldown_parts)
    model_rule: str = option("prefer_simpler", _model_rule)  # one of MODEL_RULES


def _modalities(value, key, ctx):
    if value is None:
        return None
    expect(isinstance(value, list) and value, key, "a non-empty list", value)
    out, seen = [], set()
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        expect(isinstance(item, dict), where, "a mapping with name, encoder, columns", item)
        mod = _build(ModalityConfig, item, where, ctx, unknown="first")
        expect(mod.name not in seen, f"{where}.name", "a unique name", mod.name)
        seen.add(mod.name)
        out.append(mod)
    return out


def _fusion(value, key, ctx):
    if isinstance(value, str):
        raise ConfigError(
            f"{key}: expected a list of strategies, found the name {value!r}; write it as a "
            f"list: {key}: [{value}] (on the command line: --set {key}=[{value}])"
        )
    expect(isinstance(value, list) and value, key, "a non-empty list of strategies", value)
    return [FusionConfig(*checks.fusion_entry(e, f"{key}[{i}]")) for i, e in enumerate(value)]


@dataclass
class StudyConfig:
    """A study config with its defaults filled in and every value checked.

    Build one with :func:`toolkit.study.load_config` (a YAML file) or
    :meth:`from_dict`; read it by attribute (``config.evaluation.bootstrap``).
    ``path`` is the config file's path (relative input paths resolve against its
    folder); it is not part of :meth:`to_dict`.
    """

    name: str = option("study", _name)  # the run folder's prefix
    seed: int = option(0, _seed)
    task: str = option("classification", _choice(TASKS, f"one of {sorted(TASKS)}"))
    # a test-sized run (``mmtk run --quick``): sizes capped by toolkit.study.quick, marked
    # "quick run - not for reporting" in the report and metrics.json
    quick: bool = option(False, _bool)
    data: DataConfig = section(DataConfig)
    modalities: list[ModalityConfig] | None = option(None, _modalities)
    fusion: list[FusionConfig] = option(
        ["early", "late", "gated"], _fusion,
        typed=lambda: [FusionConfig(n, bare=True) for n in ("early", "late", "gated")],
    )  # fmt: skip
    evaluation: EvaluationConfig = section(EvaluationConfig)
    explanation: ExplanationConfig = section(ExplanationConfig)
    output: OutputConfig = section(OutputConfig)
    path: str | None = field(default=None, metadata={"internal": True})

    @classmethod
    def from_dict(cls, raw: dict, *, path: str | None = None, **limits) -> StudyConfig:
        """Fill defaults into ``raw`` and check it; ``limits`` override
        :data:`~toolkit.study.checks.LIMITS` (``max_bootstrap``, ``max_n_jobs``,
        ``max_synthetic_bytes``). Raises ConfigError naming the key path."""
        unknown = set(limits) - set(checks.LIMITS)
        if unknown:
            raise TypeError(f"unknown limits {sorted(unknown)}; expected {sorted(checks.LIMITS)}")
        expect(isinstance(raw, dict), "config", "a mapping", raw)
        raw = _shorthands(raw)
        _check_keys(cls, raw, "")
        ctx = Context({**checks.LIMITS, **limits})
        config = _build(cls, raw, "", ctx)
        config.path = path
        return config

    def to_dict(self) -> dict:
        """The resolved config as plain data (what ``config.resolved.yaml`` holds)."""
        return _to_dict(self)

    def __getitem__(self, key: str):
        """A copy of a top-level key of :meth:`to_dict`, for code written against the
        dict this used to be (read-only: set the attribute to change a setting)."""
        return self.to_dict()[key]

    @property
    def fusion_names(self) -> list[str]:
        """The strategies listed in ``fusion``, in order."""
        return [f.name for f in self.fusion]


# -- building, keys and defaults ------------------------------------------------------------


def _shorthands(raw: dict) -> dict:
    """``evaluation.conformal: true`` means ``{enabled: true}`` with the other defaults;
    ``quick: true`` caps the sizes (:func:`toolkit.study.quick.quick_raw`)."""
    ev = raw.get("evaluation")
    if isinstance(ev, dict) and isinstance(ev.get("conformal"), bool):
        raw = {**raw, "evaluation": {**ev, "conformal": {"enabled": ev["conformal"]}}}
    if raw.get("quick") is True:
        from toolkit.study.quick import quick_raw

        raw = quick_raw(raw)
    return raw


def _sections(cls) -> dict[str, type]:
    return {
        f.name: f.metadata["section"] for f in dataclasses.fields(cls) if "section" in f.metadata
    }


def _keys(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _unknown(cls, node: dict, where: str, first: bool = False) -> None:
    allowed = _keys(cls)
    unknown = [k for k in node if k not in allowed]
    if first and unknown:
        unknown = sorted(map(str, unknown))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"{key}: unknown key; expected one of {sorted(allowed)}")


def _check_keys(cls, node: dict, where: str) -> None:
    """Every key of every section is a field of its dataclass (checked before any value)."""
    _unknown(cls, node, where)
    for name, sub in _sections(cls).items():
        if isinstance(node.get(name), dict):
            _check_keys(sub, node[name], f"{where}.{name}" if where else name)


def _build(cls, node: dict, where: str, ctx: Context, unknown: str | None = None):
    """An instance of the section ``cls`` from ``node``: defaults filled, values checked."""
    if unknown:
        _unknown(cls, node, where, first=True)
    values = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{where}.{f.name}" if where else f.name
        if "section" in f.metadata:
            sub = node.get(f.name, {})
            expect(isinstance(sub, dict), key, "a mapping", sub)
            values[f.name] = _build(f.metadata["section"], sub, key, ctx)
            continue
        value = node[f.name] if f.name in node else f.metadata["raw"]
        values[f.name] = ctx.done[key] = f.metadata["check"](copy.deepcopy(value), key, ctx)
    return cls(**values)


def _to_dict(obj) -> Any:
    if isinstance(obj, FusionConfig):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal")
        }
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return copy.deepcopy(obj)


def allowed_keys(cls=StudyConfig, where: str = "") -> dict[str, set[str]]:
    """{section path: its keys} derived from the schema (``""``: the top level)."""
    out = {where: _keys(cls)}
    for name, sub in _sections(cls).items():
        out.update(allowed_keys(sub, f"{where}.{name}" if where else name))
    return out


def defaults() -> dict:
    """Every key's default, as a nested dict (``data.source`` has none: it is required)."""
    return StudyConfig().to_dict()
