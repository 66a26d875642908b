"""Declarative studies: a YAML config -> cross-validated comparison, contributions, report."""

from __future__ import annotations

from toolkit.study.config import ConfigError, load_config, validate_config
from toolkit.study.engine import run_study

__all__ = ["ConfigError", "load_config", "run_study", "validate_config"]
