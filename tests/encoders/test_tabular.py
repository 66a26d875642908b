"""TabularEncoder: imputation, scaling, one-hot, absent rows and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import TabularEncoder


def _frame():
    return pd.DataFrame(
        {
            "age": [50.0, 60.0, np.nan, np.nan, 70.0],
            "sex": ["F", "M", "F", None, "M"],
            "crp": [1.0, 2.0, 3.0, np.nan, 4.0],
        }
    )


def test_impute_scale_onehot_and_absent_rows():
    enc = TabularEncoder()
    block, available = enc.fit(_frame()).encode(_frame())
    assert block.dtype == np.float32
    names = list(enc.get_feature_names_out())
    # crp is only missing in the absent row 3, so it gets no missing-value indicator.
    assert names == ["age", "crp", "missingindicator_age", "sex_F", "sex_M"]
    assert available.tolist() == [True, True, True, False, True]
    assert np.isnan(block[3]).all() and np.isfinite(block[available]).all()
    # Numeric columns are standardized on the rows that have the modality.
    np.testing.assert_allclose(block[available][:, 0].mean(), 0.0, atol=1e-6)
    # Row 2's missing age is imputed with the median and flagged.
    assert block[2, names.index("missingindicator_age")] > 0


def test_infinite_value_names_column_and_row():
    df = _frame()
    df.loc[4, "crp"] = np.inf
    with pytest.raises(ValueError, match=r"column 'crp' holds infinite values at rows \[4\]"):
        TabularEncoder().fit(df)


def test_missing_column_at_transform():
    enc = TabularEncoder().fit(_frame())
    with pytest.raises(ValueError, match=r"yet now missing:\n- crp"):
        enc.transform(_frame().drop(columns="crp"))


def test_wrong_cell_type():
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [[1, 2], [3]]})
    with pytest.raises(TypeError, match=r"column 'b' holds values of type \['list'\]"):
        TabularEncoder().fit(df)


def test_numeric_array_input():
    X = np.array([[1.0, 2.0], [3.0, np.nan], [np.nan, np.nan]])
    block, available = TabularEncoder().fit(X).encode(X)
    assert available.tolist() == [True, True, False]
    assert block.shape == (3, 3)


def test_unknown_category_at_predict_is_all_zero():
    enc = TabularEncoder().fit(_frame())
    new = _frame().iloc[:1].copy()
    new["sex"] = "X"
    row = enc.transform(new)[0]
    names = list(enc.get_feature_names_out())
    assert row[names.index("sex_F")] == 0 and row[names.index("sex_M")] == 0
