"""Cross-validation splits of a study (toolkit/study/splits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.study import splits as splits_module
from toolkit.study.config import ConfigError
from toolkit.study.errors import StudyError
from toolkit.study.splits import check_groups_apart, make_splits

GROUPS = np.repeat(np.arange(10), 3)
Y = np.tile([0, 1, 0], 10)


def _covers_every_row_once(splits, n):
    tested = np.sort(np.concatenate([test for _, test in splits]))
    np.testing.assert_array_equal(tested, np.arange(n))
    for train, test in splits:
        assert not set(train) & set(test)


def test_grouped_splits_keep_groups_apart():
    splits = make_splits(Y, GROUPS, 3, True, 0)
    assert len(splits) == 3
    _covers_every_row_once(splits, 30)
    for train, test in splits:
        assert not set(GROUPS[train]) & set(GROUPS[test])


def test_ungrouped_classification_splits_are_stratified_and_seeded():
    y = np.array([0] * 20 + [1] * 10)
    splits = make_splits(y, None, 5, True, 0)
    _covers_every_row_once(splits, 30)
    assert [int(y[test].sum()) for _, test in splits] == [2] * 5  # 1/3 positives per fold
    again = make_splits(y, None, 5, True, 0)
    other = make_splits(y, None, 5, True, 1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other, strict=True))


def test_grouped_regression_splits_keep_groups_apart():
    y = np.linspace(-3, 3, 30)
    splits = make_splits(y, GROUPS, 5, False, 0)
    _covers_every_row_once(splits, 30)
    for train, test in splits:
        assert not set(GROUPS[train]) & set(GROUPS[test])


def test_fewer_groups_than_folds_is_a_config_error():
    with pytest.raises(ConfigError, match="evaluation.cv: 11 folds need at least 11 groups"):
        make_splits(Y, GROUPS, 11, True, 0)


def test_guard_names_the_fold_and_the_groups_on_both_sides():
    groups = np.array([0, 0, 1, 1, 2, 2])
    fine = (np.array([2, 3, 4, 5]), np.array([0, 1]))
    leaky = (np.array([0, 2, 3]), np.array([1, 4, 5]))  # group 0 in train and test
    check_groups_apart([fine], groups)
    with pytest.raises(StudyError, match=r"fold 1: groups \[0\] are in both train and test"):
        check_groups_apart([fine, leaky], groups)


def test_make_splits_refuses_a_splitter_that_ignores_groups(monkeypatch):
    from sklearn.model_selection import KFold

    # KFold ignores groups: rows 0-7 (groups 0, 1 and part of 2) are fold 0's test rows,
    # row 8 (group 2) is a training row, so the guard must stop the study.
    monkeypatch.setattr(splits_module, "_splitter", lambda n_splits, **kwargs: KFold(n_splits))
    with pytest.raises(StudyError, match=r"fold 0: groups \[2\] are in both train and test"):
        make_splits(Y, GROUPS, 4, True, 0)
