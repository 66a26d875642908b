"""Declarative studies: a YAML config -> cross-validated comparison, contributions, report.

Modules by job: :mod:`~toolkit.study.config` (load and validate a config),
:mod:`~toolkit.study.data` (load the data and check the config against it),
:mod:`~toolkit.study.splits`, :mod:`~toolkit.study.orchestration` (the folds),
:mod:`~toolkit.study.metrics` and :mod:`~toolkit.study.summary`,
:mod:`~toolkit.study.writing` and :mod:`~toolkit.study.report`, and
:mod:`~toolkit.study.engine`, which runs a study from start to end.
"""

from __future__ import annotations

from toolkit.study.config import ConfigError, load_config, validate_config
from toolkit.study.engine import run_study
from toolkit.study.model_card import model_card, write_model_card

__all__ = [
    "ConfigError",
    "load_config",
    "model_card",
    "run_study",
    "validate_config",
    "write_model_card",
]
