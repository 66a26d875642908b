"""Tabular encoder: imputation, scaling and one-hot encoding of clinical variables."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data


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

    def __init__(
        self, categorical=None, add_indicator=True, scale=True, max_categories=50, on_error="raise"
    ):
        self.categorical = categorical
        self.add_indicator = add_indicator
        self.scale = scale
        self.max_categories = max_categories
        self.on_error = on_error

    def _validate(self, X, reset: bool) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[0] == 0:
                raise ValueError("TabularEncoder got 0 rows; at least one is required")
            df = X
        else:
            arr = validate_data(
                self,
                X,
                reset=reset,
                dtype=np.float64,
                ensure_all_finite="allow-nan",
                ensure_min_samples=1,
            )
            df, _ = _frame(arr)
        if not reset:
            missing = [c for c in self.columns_ if c not in df.columns]
            if missing:
                raise ValueError(
                    f"TabularEncoder was fitted on columns {self.columns_} but {missing} are missing; "
                    "pass the same columns as in fit"
                )
            df = df[self.columns_]
        for col in df.columns:
            s = df[col]
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                values = s.to_numpy(dtype=np.float64, na_value=np.nan)
                bad = np.isinf(values)
                if bad.any():
                    rows = list(df.index[bad][:5])
                    raise ValueError(
                        f"column '{col}' holds infinite values at rows {rows}; replace them with "
                        "NaN (missing) or finite numbers"
                    )
            elif s.dtype == object:
                kinds = {
                    type(v).__name__
                    for v in s.dropna()[:1000]
                    if not isinstance(v, (str, bool, int, float, np.generic))
                }
                if kinds:
                    raise TypeError(
                        f"column '{col}' holds values of type {sorted(kinds)}; tabular columns must "
                        "hold numbers or category strings"
                    )
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
        df = df.copy()
        df.columns = self.column_names_
        if self.categorical is not None:
            unknown = [c for c in self.categorical if str(c) not in self.column_names_]
            if unknown:
                raise ValueError(
                    f"categorical columns {unknown} are not in the data {self.columns_}"
                )
            cat = [str(c) for c in self.categorical]
        else:
            cat = [
                c for c in self.column_names_
                if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
            ]  # fmt: skip
        num = [c for c in self.column_names_ if c not in cat]
        self.numeric_columns_, self.categorical_columns_ = num, cat
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
        cat_df = df.copy()
        for c in cat:
            cat_df[c] = cat_df[c].astype(object).where(cat_df[c].notna(), np.nan)
        absent = df.isna().all(axis=1).to_numpy()
        fit_rows = cat_df.loc[~absent] if (~absent).any() else cat_df
        self.transformer_.fit(fit_rows)
        self.n_features_out_ = len(self.transformer_.get_feature_names_out())
        return cat_df

    def _encode_frame(self, df: pd.DataFrame):
        for c in self.categorical_columns_:
            df[c] = df[c].astype(object).where(df[c].notna(), np.nan)
        absent = df.isna().all(axis=1).to_numpy()
        out = np.full((len(df), self.n_features_out_), np.nan, dtype=np.float32)
        if (~absent).any():
            out[~absent] = np.asarray(
                self.transformer_.transform(df.loc[~absent]), dtype=np.float32
            )
        return out, ~absent

    def encode(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Encode; return the block (NaN rows where every column is missing) and availability."""
        check_is_fitted(self, "transformer_")
        df = self._validate(X, reset=False).copy()
        df.columns = self.column_names_
        return self._encode_frame(df)

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
