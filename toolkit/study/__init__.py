"""Declarative studies: a YAML config -> cross-validated comparison, contributions, report.

Modules by job: :mod:`~toolkit.study.config` (load and validate a config into the typed
:class:`~toolkit.study.schema.StudyConfig`; its schema in :mod:`~toolkit.study.schema`),
:mod:`~toolkit.study.data` (load the data and check the config against it),
:mod:`~toolkit.study.splits`, :mod:`~toolkit.study.orchestration` (the folds),
:mod:`~toolkit.study.metrics` (the metric registry ``METRICS``) and
:mod:`~toolkit.study.summary`, :mod:`~toolkit.study.writing` and
:mod:`~toolkit.study.report` (with ``report_figures`` and ``report_methods``), and
:mod:`~toolkit.study.engine`, which runs a study from start to end.
"""

from __future__ import annotations

from toolkit.study.config import ConfigError, StudyConfig, load_config, validate_config
from toolkit.study.engine import run_study
from toolkit.study.model_card import model_card, write_model_card

__all__ = [
    "ConfigError",
    "StudyConfig",
    "load_config",
    "model_card",
    "run_study",
    "validate_config",
    "write_model_card",
]
