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


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        (["F", 1, "M", 2], r"number \(rows \[1, 3\]\) and str \(rows \[0, 2\]\)"),
        (["F", True, None, "M"], r"bool \(rows \[1\]\) and str \(rows \[0, 3\]\)"),
        (pd.Categorical([1, "a", 1, "a"]), r"number \(rows \[0, 2\]\) and str \(rows \[1, 3\]\)"),
    ],
)
def test_mixed_type_categorical_column_names_column_types_and_rows(values, kinds):
    df = pd.DataFrame({"age": [50.0, 60.0, 70.0, 80.0], "sex": values})
    with pytest.raises(TypeError, match=rf"column 'sex' mixes value types: {kinds}.*astype\(str\)"):
        TabularEncoder().fit(df)
    with pytest.raises(TypeError, match="column 'sex' mixes value types"):
        TabularEncoder(categorical=["sex"]).fit(df)


def test_categorical_column_must_keep_its_kind_at_transform():
    enc = TabularEncoder().fit(_frame())
    new = _frame()
    new["sex"] = [0, 1, 0, None, 1]
    with pytest.raises(
        TypeError, match=r"column 'sex' held str values in fit but holds number values now"
    ):
        enc.transform(new)


def test_numeric_column_with_words_names_rows_and_numeric_strings_are_parsed():
    enc = TabularEncoder().fit(_frame())
    new = _frame().astype({"crp": object})
    new.loc[1, "crp"] = "high"
    with pytest.raises(
        ValueError, match=r"column 'crp' is numeric but holds non-numeric values at rows \[1\]"
    ):
        enc.transform(new)
    new.loc[1, "crp"] = "2.0"
    np.testing.assert_array_equal(enc.transform(new), enc.transform(_frame()))
    table = pd.DataFrame({"n": ["1", "2", "x"]})
    with pytest.raises(
        ValueError, match=r"rows \[2\] \(e.g. 'x'\).*list the column in categorical="
    ):
        TabularEncoder(categorical=[]).fit(table)


@pytest.mark.parametrize("value", [1e308, -1e300, 3.5e38])
def test_value_beyond_float32_is_out_of_range_not_nan(value):
    df = _frame()
    df.loc[1, "crp"] = value
    with pytest.raises(
        ValueError, match=r"column 'crp' holds values out of range at rows \[1\].*float32 range"
    ):
        TabularEncoder().fit(df)
    ok = _frame()
    ok.loc[1, "crp"] = 3.4e38  # inside float32: encoded, finite
    assert np.isfinite(TabularEncoder(scale=False).fit_transform(ok)[1]).all()


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (
            pd.DataFrame({"z": np.ones(3) + 1j}),
            ValueError,
            "Complex data not supported: column 'z'",
        ),
        (
            pd.DataFrame({"d": pd.date_range("2020", periods=3)}),
            TypeError,
            "column 'd' holds dates",
        ),
        (
            pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),
            ValueError,
            "'a' appears more than once",
        ),
        (pd.DataFrame([[1, 2], [3, 4]], columns=["a", 1]), TypeError, "column names mix types"),
        (pd.DataFrame(index=range(3)), ValueError, r"got 0 columns \(3 rows\)"),
        (
            np.ones((3, 2)) + 1j,
            ValueError,
            "Complex data not supported: TabularEncoder got an array",
        ),
        (np.array([[1, "a"]], dtype=object), ValueError, r"column x1 holds 'a' \(str\) at row 0"),
    ],
)
def test_structural_errors_name_the_column(frame, error, message):
    with pytest.raises(error, match=message):
        TabularEncoder().fit(frame)
