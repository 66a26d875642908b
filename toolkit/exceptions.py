"""Errors raised by the toolkit's readers and estimators."""

from __future__ import annotations


class ReadError(ValueError):
    """A raw item (file, array or string) could not be read.

    The message names the item and what was wrong with it. Encoders catch it when
    ``on_error="missing"`` and mark the item missing instead.
    """


class MissingModalityError(ValueError):
    """A row has no modality available, so there is nothing to predict from."""


class LeakageWarning(UserWarning):
    """The input gives the answer away: a feature column that is the target, or a modality
    whose availability alone predicts the label. The model's scores would not hold on new
    rows; the message names the column or modality and what to do."""
