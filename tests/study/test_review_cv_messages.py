"""``evaluation.cv`` against the groups of a study (review finding 3): the groups bind
before the rows, and a label-like grouping column (``sex``) is refused with what to group
by instead, not with a fold count that would hold out half the rows by sex."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from toolkit.study import load_config
from toolkit.study.config import ConfigError
from toolkit.study.data import prepare_study


def _config(tmp_path, frame: pd.DataFrame, *, groups=None, cv=3):
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    data = {"source": "load_manifest", "params": {"csv": str(csv)}, "target": "label"}
    config = {
        "name": "cv",
        "task": "classification",
        "data": {**data, "groups": groups} if groups else data,
        "modalities": [{"name": "labs", "encoder": "TabularEncoder", "columns": ["age"]}],
        "fusion": ["late"],
        "evaluation": {"cv": cv, "bootstrap": 0},
    }
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _visits(n_patients: int = 30) -> pd.DataFrame:
    """Two visits per patient, one class per patient, sex per patient (F then M)."""
    rng = np.random.default_rng(0)
    patient = np.repeat(np.arange(n_patients), 2)
    return pd.DataFrame({
        "age": rng.normal(60, 10, len(patient)).round(),
        "pid": [f"p{k:02d}" for k in patient],
        "sex": np.where(patient < n_patients // 2, "F", "M"),
        "label": patient % 2,
    })  # fmt: skip


def _refused(config) -> str:
    with pytest.raises(ConfigError) as info:
        prepare_study(config)
    return str(info.value)


def test_too_many_folds_for_the_groups_names_the_groups_before_the_rows(tmp_path):
    """cv=70 exceeds both the 30 patients and the 60 rows: the groups are named first,
    since they bind (as --set evaluation.cv=500 on the shipped 200-patient, 300-row study)."""
    message = _refused(_config(tmp_path, _visits(), groups="pid", cv=70))
    assert message == (
        "evaluation.cv: 70 folds need at least 70 groups, found 30; use cv <= 30 "
        "(data.groups ('pid'): 30 groups over 60 rows)"
    )
    message = _refused(_config(tmp_path, _visits(), groups="pid", cv=40))
    assert message.startswith("evaluation.cv: 40 folds need at least 40 groups, found 30; ")


def test_rows_bind_without_groups(tmp_path):
    message = _refused(_config(tmp_path, _visits(), cv=70))
    assert message == "evaluation.cv: 70 folds need at least 70 rows, found 60"


def test_a_label_like_grouping_column_is_refused_with_what_to_group_by(tmp_path):
    message = _refused(_config(tmp_path, _visits(), groups="sex", cv=3))
    assert message == (
        "data.groups ('sex'): grouping by this column leaves 2 groups (F: 30 rows, M: 30 "
        "rows) of 60 rows, too few for 3 grouped folds, and groups this large look like a "
        "category of the rows (a label-like column) rather than what repeated rows share. "
        "Group by the patient, site or speaker the rows come from instead; only if each of "
        "these 2 groups is a unit to hold out, set evaluation.cv: 2"
    )
    assert "use cv <=" not in message


def test_few_small_groups_still_get_the_fold_count(tmp_path):
    """Two patients of 6 rows each are real groups, merely few: cv <= 2 is the fix."""
    frame = _visits().iloc[:12].assign(pid=["a"] * 6 + ["b"] * 6, label=[0, 1] * 6)
    message = _refused(_config(tmp_path, frame, groups="pid", cv=3))
    assert message == (
        "evaluation.cv: 3 folds need at least 3 groups, found 2; use cv <= 2 "
        "(data.groups ('pid'): 2 groups over 12 rows)"
    )


def test_enough_patients_pass(tmp_path):
    study = prepare_study(_config(tmp_path, _visits(), groups="pid", cv=3))
    assert len(study.splits) == 3
