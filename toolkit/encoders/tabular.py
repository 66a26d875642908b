"""Tabular encoder: imputation, scaling and one-hot encoding of clinical variables."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from toolkit._utils import (
    FLOAT32_MAX,
    check_column_labels,
    describe_kinds,
    raise_non_numeric,
    rows_by_kind,
    value_kind,
)

_ALLOWED_KINDS = {"str", "number", "bool"}


def _frame(X) -> tuple[pd.DataFrame, bool]:
    """A DataFrame view of X (arrays get columns x0..x{p-1}); whether X was a DataFrame."""
    if isinstance(X, pd.DataFrame):
        return X, True
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]), False


class TabularEncoder(TransformerMixin, BaseEstimator):
    """Encode clinical or other tabular columns: impute + scale numeric, one-hot categorical.

    A row whose columns are all missing is an absent modality (NaN row, mask False);
    other missing cells are imputed (median / most frequent) and, with
    ``add_indicator=True``, flagged by indicator features.

    Cells are checked before scikit-learn sees them, and every refusal names the column
    and rows: a categorical column must hold one kind of value (all strings, all numbers
    or all booleans; at transform the same kind as in fit); a numeric column must hold
    numbers (numeric strings are parsed) that are finite and within the float32 range
    (about +-3.4e38, the dtype of the encoded block) and whose standardized value fits it
    too; complex numbers, dates and other objects are refused.

    Parameters
    ----------
    categorical : list of str, default=None
        Columns to one-hot encode. Default: object, string, category and bool columns.
    add_indicator : bool, default=True
        Append missing-value indicators for columns that had missing values in training.
    scale : bool, default=True
        Standardize numeric columns.
    max_categories : int, default=50
        Categories beyond this per column are grouped as infrequent.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when fitted on a DataFrame)
    columns_ : list
        Input column labels, as given.
    column_names_, numeric_columns_, categorical_columns_ : list of str
    category_kinds_ : dict of str to {"str", "number", "bool"} or None
        Kind of value each categorical column held in fit (None: all missing).
    transformer_ : fitted sklearn ColumnTransformer
    n_features_out_ : int

    Examples
    --------
    >>> import pandas as pd
    >>> from toolkit import TabularEncoder
    >>> df = pd.DataFrame({"age": [50, 60, None], "sex": ["F", "M", "F"]})
    >>> TabularEncoder().fit_transform(df).shape
    (3, 4)
    """

    _parameter_constraints = {
        "categorical": [list, None],
        "add_indicator": ["boolean"],
        "scale": ["boolean"],
        "max_categories": [Interval(Integral, 2, None, closed="left")],
        "on_error": [StrOptions({"raise"})],
    }

    #: Output does not depend on the fitting data: False (imputation and scaling are learned).
    fixed = False
    modality = "tabular"
    #: Drill-down: the parts of this modality are its feature columns
    #: (``toolkit.explain.drill_down`` explains them with ``explain_features``).
    parts_are_features = True

    def __init__(
        self, categorical=None, add_indicator=True, scale=True, max_categories=50, on_error="raise"
    ):
        self.categorical = categorical
        self.add_indicator = add_indicator
        self.scale = scale
        self.max_categories = max_categories
        self.on_error = on_error

    def _validate(self, X, reset: bool) -> pd.DataFrame:
        """Structural checks (shape, column names, cell types); returns the input frame."""
        if isinstance(X, pd.DataFrame):
            check_column_labels(X.columns, what="TabularEncoder")
            if X.shape[1] == 0:
                raise ValueError(
                    f"TabularEncoder got 0 columns ({len(X)} rows); select at least one column"
                )
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[0] == 0:
                raise ValueError("TabularEncoder got 0 rows; at least one is required")
            df = X
        else:
            df, _ = _frame(self._validate_array(X, reset))
        if not reset:
            missing = [c for c in self.columns_ if c not in df.columns]
            if missing:
                raise ValueError(
                    f"TabularEncoder was fitted on columns {self.columns_} but {missing} are missing; "
                    "pass the same columns as in fit"
                )
            df = df[self.columns_]
        for col in df.columns:
            _check_cell_types(df[col], col)
        return df

    def _validate_array(self, X, reset: bool) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.dtype.kind == "c":
            raise ValueError(
                "Complex data not supported: TabularEncoder got an array of complex numbers; "
                "pass real numbers (e.g. np.abs(X), or the real and imaginary parts as columns)"
            )
        try:
            return validate_data(
                self,
                X,
                reset=reset,
                dtype=np.float64,
                ensure_all_finite="allow-nan",
                ensure_min_samples=1,
            )
        except (TypeError, ValueError) as exc:
            raise_non_numeric(
                exc,
                X,
                lambda i, j, value, first: (
                    f"TabularEncoder: column x{j} holds {value!r} ({type(value).__name__}) at "
                    f"row {i}: {first} An array input must be numeric; pass a DataFrame to "
                    "encode category strings"
                ),
            )

    def _prepare(self, df: pd.DataFrame, fit: bool) -> pd.DataFrame:
        """A copy with string column names, float64 numeric columns (range-checked) and
        object categorical columns (NaN for missing) of one kind of value each."""
        df = df.copy()
        df.columns = self.column_names_
        for c in self.numeric_columns_:
            df[c] = _numeric_column(df[c], c, fit=fit)
        kinds = {}
        for c in self.categorical_columns_:
            s = df[c]
            found = rows_by_kind(s.tolist(), list(s.index))
            if len(found) > 1:
                raise TypeError(
                    f"column '{c}' mixes value types: {describe_kinds(found)}. A categorical "
                    "column must hold only strings, only numbers or only booleans (1 and '1' "
                    f"would be different categories); convert it, e.g. df['{c}'].astype(str), "
                    "or fix those rows"
                )
            kind = next(iter(found), None)
            if fit:
                kinds[c] = kind
            elif kind is not None and self.category_kinds_.get(c) not in (None, kind):
                raise TypeError(
                    f"column '{c}' held {self.category_kinds_[c]} values in fit but holds "
                    f"{kind} values now (rows {found[kind]}); pass the same kind of values as "
                    "in fit, or they would all be treated as unknown categories"
                )
            df[c] = s.astype(object).where(s.notna(), np.nan)
        if fit:
            self.category_kinds_ = kinds
        return df

    def fit(self, X, y=None):
        """Fit on a DataFrame (or 2-D array) of shape (n_samples, n_columns)."""
        self._fit_frame(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit and encode; returns (n_samples, n_features_out_) float32 with NaN absent rows."""
        return self._encode_frame(self._fit_frame(X))[0]

    def _fit_frame(self, X) -> pd.DataFrame:
        """Validate, fit the column transformer; return the prepared frame."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self._validate_params()
        df = self._validate(X, reset=True)
        self.columns_ = list(df.columns)
        self.column_names_ = [str(c) for c in df.columns]
        if self.categorical is not None:
            unknown = [c for c in self.categorical if str(c) not in self.column_names_]
            if unknown:
                raise ValueError(
                    f"categorical columns {unknown} are not in the data {self.columns_}"
                )
            cat = [str(c) for c in self.categorical]
        else:
            cat = [
                str(c) for c in df.columns
                if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
            ]  # fmt: skip
        num = [c for c in self.column_names_ if c not in cat]
        self.numeric_columns_, self.categorical_columns_ = num, cat
        df = self._prepare(df, fit=True)
        steps = []
        if num:
            numeric = [
                SimpleImputer(
                    strategy="median", add_indicator=self.add_indicator, keep_empty_features=True
                )
            ]
            if self.scale:
                numeric.append(StandardScaler())
            steps.append(("num", make_pipeline(*numeric), num))
        if cat:
            steps.append(
                (
                    "cat",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                        OneHotEncoder(
                            handle_unknown="infrequent_if_exist",
                            max_categories=self.max_categories,
                            sparse_output=False,
                        ),
                    ),
                    cat,
                )
            )
        self.transformer_ = ColumnTransformer(
            steps, verbose_feature_names_out=False, sparse_threshold=0.0
        )
        absent = df.isna().all(axis=1).to_numpy()
        fit_rows = df.loc[~absent] if (~absent).any() else df
        self.transformer_.fit(fit_rows)
        self.n_features_out_ = len(self.transformer_.get_feature_names_out())
        return df

    def _encode_frame(self, df: pd.DataFrame):
        """Encode a frame made by :meth:`_prepare`."""
        absent = df.isna().all(axis=1).to_numpy()
        out = np.full((len(df), self.n_features_out_), np.nan, dtype=np.float32)
        if (~absent).any():
            rows = df.loc[~absent]
            z = np.asarray(self.transformer_.transform(rows), dtype=np.float64)
            self._check_encoded(z, rows)
            out[~absent] = z
        return out, ~absent

    def _check_encoded(self, z: np.ndarray, rows: pd.DataFrame) -> None:
        """Refuse encodings that float32 cannot hold (a value many training standard
        deviations away from the training mean), naming the column and rows."""
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(z) | (np.abs(z) > FLOAT32_MAX)
        if not bad.any():
            return
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        first = self.transformer_.output_indices_.get("num", slice(0, 0)).start
        k = j - first
        if 0 <= k < len(self.numeric_columns_):
            col = self.numeric_columns_[k]
            labels = rows.index[bad[:, j]][:5].tolist()
            value = rows[col].to_numpy()[bad[:, j]][0]
            distance = abs(z[bad[:, j], j][0])
            raise ValueError(
                f"column '{col}' rows {labels}: the value {value:.3g} lies {distance:.3g} "
                "training standard deviations from the column's training mean, beyond the "
                "float32 range of the encoded block; check the value, or rescale the column "
                "(e.g. take a log) and refit"
            )
        name = self.transformer_.get_feature_names_out()[j]
        raise ValueError(
            f"TabularEncoder produced non-finite or out-of-range features ('{name}') for rows "
            f"{rows.index[bad[:, j]][:5].tolist()}; check those rows"
        )

    def encode(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Encode; return the block (NaN rows where every column is missing) and availability."""
        check_is_fitted(self, "transformer_")
        return self._encode_frame(self._prepare(self._validate(X, reset=False), fit=False))

    def transform(self, X) -> np.ndarray:
        """Encode a DataFrame (or 2-D array) with the fitted columns."""
        return self.encode(X)[0]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "transformer_")
        return np.asarray(self.transformer_.get_feature_names_out(), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # blocks are always float32
        return tags


def _check_cell_types(s: pd.Series, col) -> None:
    """Refuse cells no tabular column can hold: complex numbers, dates, other objects."""
    if s.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: column '{col}' holds complex numbers; pass real "
            "numbers (e.g. the magnitude, or the real and imaginary parts as two columns)"
        )
    if s.dtype.kind in "mM" or isinstance(s.dtype, pd.DatetimeTZDtype):
        raise TypeError(
            f"column '{col}' holds dates or durations ({s.dtype}); convert them to numbers "
            "(e.g. days since a reference date) or to category strings"
        )
    if s.dtype == object:
        found = rows_by_kind(s.tolist(), list(s.index))
        odd = sorted(set(found) - _ALLOWED_KINDS)
        if odd:
            rows = found[odd[0]]
            hint = (
                "; pass real numbers (e.g. the magnitude)"
                if odd == ["complex"]
                else "; convert them to numbers or category strings"
            )
            raise TypeError(
                f"column '{col}' holds values of type {odd} (rows {rows}); tabular columns must "
                f"hold numbers or category strings{hint}"
            )


def _numeric_column(s: pd.Series, col: str, fit: bool) -> pd.Series:
    """A numeric column as float64 (numeric strings parsed), finite, within float32 range."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values)
    else:
        kinds = {value_kind(v) for v in s.tolist()} - {None}
        converted = pd.to_numeric(s.where(s.notna(), np.nan), errors="coerce")
        bad = (s.notna() & converted.isna()).to_numpy() if kinds - {"number", "bool"} else None
        if bad is not None and bad.any():
            rows = s.index[bad][:5].tolist()
            example = s[bad].iloc[0]
            hint = (
                ", or list the column in categorical= to one-hot encode it"
                if fit
                else " (it was numeric in fit)"
            )
            raise ValueError(
                f"column '{col}' is numeric but holds non-numeric values at rows {rows} (e.g. "
                f"{example!r}); pass numbers (NaN for missing){hint}"
            )
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values)
    if infinite.any():
        rows = s.index[infinite][:5].tolist()
        raise ValueError(
            f"column '{col}' holds infinite values at rows {rows}; replace them with NaN "
            "(missing) or finite numbers"
        )
    with np.errstate(invalid="ignore"):
        big = ~np.isnan(values) & ~(np.abs(values) <= FLOAT32_MAX)
    if big.any():
        rows = s.index[big][:5].tolist()
        raise ValueError(
            f"column '{col}' holds values out of range at rows {rows} (e.g. "
            f"{s[big].iloc[0]:.3g}): beyond +-{FLOAT32_MAX:.1e}, the float32 range of the "
            "encoded block, where they would become infinite (or make scaling overflow to "
            "NaN); rescale the column (e.g. change its unit or take a log)"
        )
    return pd.Series(values, index=s.index, name=s.name)
