"""Trust, classes 7 and 8, for the estimators, fusion strategies, embeddings and the
tabular / feature encoders: no silent inf/NaN or merged labels, and every bad input a user
can give ``fit`` / ``predict`` / ``explain`` gets an error that names the thing and says what
to do (never a raw scikit-learn / numpy / pandas traceback).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from toolkit import (
    EarlyFusion,
    Embeddings,
    GatedFusion,
    LateFusion,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
)
from toolkit._utils import FLOAT32_MAX
from toolkit.encoders.base import MissingItemsWarning
from toolkit.encoders.features import FeatureEncoder
from toolkit.exceptions import ReadError
from toolkit.fusion.base import TARGET_SAFE_RANGE

N = 40


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"a": rng.normal(size=N), "b": rng.normal(size=N), "c": rng.choice(["x", "y"], N)}
    )


def _labels():
    return np.repeat([0, 1], N // 2)


def _target(df):
    return 2.0 * df["a"].to_numpy() - df["b"].to_numpy()


def _mods():
    return [("a", TabularEncoder(), ["a"]), ("bc", TabularEncoder(), ["b", "c"])]


FUSIONS = {
    "early": lambda: EarlyFusion(),
    "late-stacking": lambda: LateFusion(),
    "late-mean": lambda: LateFusion(combine="mean"),
    "late-weighted": lambda: LateFusion(combine="weighted"),
    "gated": lambda: GatedFusion(max_epochs=5, random_state=0),
}


# -- class 7: regression targets that would overflow the fusion ----------------------------


@pytest.fixture(scope="module")
def plain_regressors():
    """Each strategy's regressor on the plain target, fitted once for every scale."""
    fitted = {}

    def get(fusion):
        if fusion not in fitted:
            df = _frame()
            reg = MultimodalRegressor(_mods(), fusion=FUSIONS[fusion](), random_state=0)
            fitted[fusion] = reg.fit(df, _target(df))
        return fitted[fusion]

    return get


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("scale", [1e300, 1e160, 1e-300])
def test_extreme_target_scales_predict_exactly_as_the_plain_target(fusion, scale, plain_regressors):
    """y * 1e300 (whose square overflows), y * 1e-300 (whose square underflows): every
    strategy predicts scale times what it predicts for y, never inf or NaN."""
    df = _frame()
    y = _target(df)
    plain = plain_regressors(fusion)
    ref = plain.predict(df)
    reg = MultimodalRegressor(_mods(), fusion=FUSIONS[fusion](), random_state=0).fit(df, y * scale)
    pred = reg.predict(df)
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(pred / scale, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    assert reg.prior_[0] == pytest.approx(y.mean() * scale, rel=1e-12)
    assert reg.score(df, y * scale) == pytest.approx(plain.score(df, y), abs=1e-9)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_target_whose_range_overflows_float64_is_refused_not_returned_as_inf(fusion):
    df = _frame()
    y = np.where(_target(df) > 0, 1.7e308, -1.7e308)  # y.max() - y.min() overflows
    reg = MultimodalRegressor(_mods(), fusion=FUSIONS[fusion](), random_state=0).fit(df, y)
    try:
        pred = reg.predict(df)
    except ValueError as exc:
        assert "exceed the float64 range" in str(exc) and "rescale it" in str(exc)
    else:  # a strategy whose predictions stay representable returns them, all finite
        assert np.isfinite(pred).all() and np.abs(pred).max() > 1e307


def test_target_scaling_limit_and_exponent():
    """TARGET_SAFE_RANGE: targets inside it are left alone; outside, divided by 2**e."""
    assert TARGET_SAFE_RANGE == (2.0**-64, 2.0**64)
    rng = np.random.default_rng(0)
    emb = Embeddings({"a": rng.normal(size=(30, 2))})
    y = rng.normal(size=30)
    y /= np.abs(y).max()
    inside = EarlyFusion(random_state=0).fit(emb, y * 2.0**63)
    assert inside.target_exponent_ == 0
    outside = EarlyFusion(random_state=0).fit(emb, y * 2.0**70)
    assert outside.target_exponent_ == int(np.frexp(np.abs(y * 2.0**70).max())[1])
    np.testing.assert_allclose(
        outside.predict_output(emb) / 2.0**70, inside.predict_output(emb) / 2.0**63, rtol=1e-12
    )


def test_fusion_alone_refuses_non_finite_or_complex_targets():
    emb = Embeddings({"a": np.arange(10.0)[:, None]})
    with pytest.raises(ValueError, match=r"NaN or infinite values at positions \[3\]; drop"):
        LateFusion().fit(emb, np.where(np.arange(10) == 3, np.inf, 1.0))
    with pytest.raises(TypeError, match="must hold real numbers, got dtype complex128"):
        EarlyFusion().fit(emb, np.ones(10) + 1j)


def test_gated_fusion_that_never_gets_a_finite_loss_says_so():
    emb = Embeddings({"a": np.random.default_rng(0).normal(size=(30, 2))})
    fusion = GatedFusion(max_epochs=3, learning_rate=1e300, random_state=0)
    with pytest.raises(ValueError, match="training diverged.*lower learning_rate"):
        fusion.fit(emb, np.random.default_rng(1).normal(size=30))


# -- class 7/8: values near the float limits ------------------------------------------------


@pytest.mark.parametrize("value", [1e308, 1.7e308, 1e39])
def test_tabular_value_beyond_float32_is_out_of_range_not_nan(value):
    df = _frame()
    df.loc[5, "a"] = value
    with pytest.raises(ValueError, match=r"column 'a' holds values out of range at rows \[5\]"):
        MultimodalClassifier(_mods()).fit(df, _labels())
    clf = MultimodalClassifier(_mods(), random_state=0).fit(_frame(), _labels())
    with pytest.raises(ValueError, match=r"out of range at rows \[5\].*rescale the column"):
        clf.predict(df)


def test_value_far_outside_the_training_spread_is_named_at_predict():
    enc = TabularEncoder().fit(pd.DataFrame({"dose": [-1e-20, 1e-20] * 5}))
    with pytest.raises(
        ValueError, match=r"column 'dose' rows \[1\]: the value 1e\+30 lies 1e\+50 training"
    ):
        enc.transform(pd.DataFrame({"dose": [0.0, 1e30]}))


def test_values_just_inside_float32_stay_finite_through_every_strategy():
    df = _frame()
    df["a"] = df["a"] * 1e38  # up to ~3e38: fine in float32, overflowed the old scaler
    for make in FUSIONS.values():
        clf = MultimodalClassifier(_mods(), fusion=make(), random_state=0).fit(df, _labels())
        proba = clf.predict_proba(df)
        assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_block_standardization_near_the_float32_limit_does_not_overflow(fusion):
    """(x - mean) of float32 blocks near 3.4e38 overflowed in float32; it is float64 now."""
    a = np.array([3e38] * 15 + [-3e38] * 5, dtype=np.float32)[:, None]
    emb = Embeddings({"a": a, "b": np.random.default_rng(0).normal(size=(20, 1))})
    y = (a[:, 0] > 0).astype(int)
    proba = FUSIONS[fusion]().fit(emb, y, n_classes=2).predict_output(emb)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0)
    if fusion != "gated":  # five epochs are too few for the gated unit to learn it
        assert (proba.argmax(axis=1) == y).mean() >= 0.9


def test_embeddings_refuse_values_float32_cannot_hold():
    with pytest.raises(
        ValueError, match=r"block 'img' holds values beyond the float32 range.*rows \[1\]"
    ):
        Embeddings({"img": np.array([[1.0], [1e39]])})
    with pytest.raises(ValueError, match=r"block 'img' holds NaN or infinite values in rows \[1\]"):
        Embeddings({"img": np.array([[1.0], [np.nan]])}, mask=np.ones((2, 1), bool))
    with pytest.raises(ValueError, match="block 'img' holds complex numbers"):
        Embeddings({"img": np.array([[1.0], [1j]])})
    with pytest.raises(ValueError, match="block 'img' has 0 columns"):
        Embeddings({"img": np.zeros((2, 0))})
    with pytest.raises(ValueError, match=r"mask must hold booleans \(or 0/1\).*\[0, 2\]"):
        Embeddings({"img": np.zeros((2, 1))}, mask=np.array([[2], [0]]))
    with pytest.raises(TypeError, match="blocks must be a mapping of modality name"):
        Embeddings([np.zeros((2, 1))])
    emb = Embeddings({"img": np.array([[1.0], [np.nan]])})
    assert emb.mask[:, 0].tolist() == [True, False]
    with pytest.raises(ValueError, match=r"rows \[1\], which the mask marks available"):
        emb.with_mask(np.ones((2, 1), bool))
    big = Embeddings({"img": np.array([[FLOAT32_MAX], [-FLOAT32_MAX]])})
    assert np.isfinite(big.blocks["img"]).all()


# -- FeatureEncoder ------------------------------------------------------------------------

SEQS = [np.ones((4, 3)), np.arange(6.0).reshape(2, 3)]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], "is ragged"),
        (
            (np.ones((4, 3)), -1),
            r"is a tuple of 2 parts \(array of shape \(4, 3\).*'-1'\).*seq\[-length:\]",
        ),
        (np.ones(3) + 1j, "holds complex numbers"),
        (np.array(["a", "b", "c"]), "is not numeric"),
        ({"a": 1}, "is a dict"),
        (np.full(3, 1e39), r"out of range \(e.g. 1e\+39 at frame 0, feature 0\)"),
        (np.array([[1.0, np.nan, 1.0]]), r"NaN or infinite values \(first at frame 0, feature 1\)"),
        (np.zeros((2, 2, 3)), r"not a vector \(d,\) or sequence \(T, d\)"),
        (np.zeros((3, 0)), "with d >= 1"),
    ],
)
def test_feature_item_errors_name_the_row(item, message):
    items = pd.Series([*SEQS, item], index=["s1", "s2", "s3"], name="vision", dtype=object)
    with pytest.raises(ReadError, match=rf"row 's3' of column 'vision': .*{message}"):
        FeatureEncoder().fit(items)


def test_feature_widths_that_differ_name_their_rows():
    items = pd.Series([*SEQS, np.ones((2, 4))], index=["s1", "s2", "s3"], name="vision")
    with pytest.raises(
        ValueError,
        match=r"column 'vision' have different widths \(3 features in rows \['s1', 's2'\]; "
        r"4 features in rows \['s3'\]\)",
    ):
        FeatureEncoder().fit(items)


def test_feature_encoder_refits_on_another_width():
    enc = FeatureEncoder().fit(SEQS)
    assert enc.n_features_out_ == 6
    wide = [np.ones((2, 5)), np.arange(5.0)]
    block = enc.fit(wide).transform(wide)
    assert enc.input_dim_ == 5 and block.shape == (2, 10)
    np.testing.assert_allclose(block[1, :5], np.arange(5.0))
    with pytest.raises(ReadError, match=r"row 0 of the column: .*has 3 features per frame, the "):
        enc.transform([np.ones(3)])
    with pytest.warns(MissingItemsWarning, match="row 0"):
        _, available = FeatureEncoder(on_error="missing").fit(wide).encode([np.ones(3), wide[0]])
    assert available.tolist() == [False, True]


def test_padding_and_zero_length_sequences_are_absent_and_pooling_is_float64():
    items = [*SEQS, np.zeros((3, 3)), np.zeros((0, 3)), np.array([[3e38] * 3, [-3e38] * 3])]
    block, available = FeatureEncoder().fit(items).encode(items)
    assert available.tolist() == [True, True, False, False, True]
    assert np.isfinite(block[4]).all()  # the float32 sum of +-3e38 frames overflowed
    np.testing.assert_allclose(block[4], [0, 0, 0, 3e38, 3e38, 3e38], rtol=1e-6)
    with pytest.raises(ValueError, match="without repeats"):
        FeatureEncoder(pooling=("mean", "mean")).fit(SEQS)


# -- class 8: the bad-input table for fit / predict / explain --------------------------------


def _renamed(columns):
    df = _frame()
    df.columns = columns
    return df


def _with(column, values):
    df = _frame()
    df[column] = values
    return df


FIT_CASES = {
    # X of the wrong kind
    "X is a list of lists": (
        lambda: (MultimodalClassifier(_mods()), [[1, 2]] * N, _labels()),
        TypeError,
        "X must be a pandas DataFrame .* got list",
    ),
    "X is a file name": (
        lambda: (MultimodalClassifier(_mods()), "data.csv", _labels()),
        TypeError,
        "got str",
    ),
    "X is a Series": (
        lambda: (MultimodalClassifier(_mods()), _frame()["a"], _labels()),
        TypeError,
        r"got Series; e.g. X.to_frame\(\)",
    ),
    "X is empty": (
        lambda: (MultimodalClassifier(_mods()), pd.DataFrame(), []),
        ValueError,
        "X has 0 rows",
    ),
    "X has 0 columns": (
        lambda: (MultimodalClassifier(), pd.DataFrame(index=range(N)), _labels()),
        ValueError,
        r"X has 0 columns \(40 rows\)",
    ),
    "X is 3-D": (
        lambda: (MultimodalClassifier(), np.ones((N, 2, 2)), _labels()),
        ValueError,
        r"X has 3 dimensions \(shape \(40, 2, 2\)\)",
    ),
    "X array holds strings": (
        lambda: (MultimodalClassifier(), np.array([["a", 1]] * N, dtype=object), _labels()),
        ValueError,
        r"X\[0, 0\] \(column x0\) holds 'a'.*pass a DataFrame and name the modalities",
    ),
    "X array is complex": (
        lambda: (MultimodalClassifier(), np.ones((N, 2)) + 1j, _labels()),
        ValueError,
        r"Complex data not supported: X holds complex numbers; pass real features",
    ),
    "X dict holds scalars": (
        lambda: (MultimodalClassifier(_mods()), {"a": 1, "b": 2, "c": "x"}, _labels()),
        TypeError,
        r"X\['a'\] holds a single int",
    ),
    "X dict columns of other lengths": (
        lambda: (MultimodalClassifier(_mods()), {"a": [1, 2], "b": [1]}, _labels()),
        ValueError,
        "different lengths.*one value per row",
    ),
    "duplicated column names": (
        lambda: (MultimodalClassifier(_mods()), _renamed(["a", "b", "b"]), _labels()),
        ValueError,
        "column 'b' appears more than once",
    ),
    "column names of mixed types": (
        lambda: (MultimodalClassifier(), _renamed(["a", 1, "c"]), _labels()),
        TypeError,
        r"column names mix types \['int', 'str'\].*astype\(str\)",
    ),
    "column names that collide once printed": (
        lambda: (
            MultimodalClassifier(_mods()),
            _renamed(["a", "b", 1]).assign(**{"1": 0}),
            _labels(),
        ),
        ValueError,
        "columns 1 and '1' have the same name once printed",
    ),
    # the modalities spec
    "modality name is a parameter name": (
        lambda: (MultimodalClassifier([("fusion", TabularEncoder(), ["a"])]), _frame(), _labels()),
        ValueError,
        "modality name 'fusion' is also a parameter.*rename the modality",
    ),
    "modality names collide": (
        lambda: (
            MultimodalClassifier([("a", TabularEncoder(), ["a"]), ("a", TabularEncoder(), ["b"])]),
            _frame(),
            _labels(),
        ),
        ValueError,
        "modality name 'a' is used twice",
    ),
    "encoder is a class": (
        lambda: (MultimodalClassifier([("a", TabularEncoder, ["a"])]), _frame(), _labels()),
        TypeError,
        r"got the class TabularEncoder; write TabularEncoder\(\)",
    ),
    "encoder is a scikit-learn scaler": (
        lambda: (MultimodalClassifier([("a", StandardScaler(), ["a"])]), _frame(), _labels()),
        TypeError,
        "modality 'a': encoder must be a toolkit encoder .* got StandardScaler",
    ),
    "columns given as a set": (
        lambda: (MultimodalClassifier([("a", TabularEncoder(), {"a"})]), _frame(), _labels()),
        TypeError,
        r"got set; use a list \(a set has no order\)",
    ),
    "columns listed twice": (
        lambda: (MultimodalClassifier([("a", TabularEncoder(), ["a", "a"])]), _frame(), _labels()),
        ValueError,
        r"modality 'a' lists column\(s\) \['a'\] more than once",
    ),
    "columns an empty list": (
        lambda: (MultimodalClassifier([("a", TabularEncoder(), [])]), _frame(), _labels()),
        ValueError,
        "modality 'a' selects no columns",
    ),
    "columns None": (
        lambda: (MultimodalClassifier([("a", TabularEncoder(), None)]), _frame(), _labels()),
        TypeError,
        "columns must be a column name or a list of names, got NoneType",
    ),
    "fusion misspelled": (
        lambda: (MultimodalClassifier(_mods(), fusion="erly"), _frame(), _labels()),
        ValueError,
        "unknown fusion 'erly'; use 'early', 'late', 'gated'",
    ),
    "fusion is a class": (
        lambda: (MultimodalClassifier(_mods(), fusion=EarlyFusion), _frame(), _labels()),
        TypeError,
        r"got the class EarlyFusion; write EarlyFusion\(\)",
    ),
    # cells
    "categorical column of str and int": (
        lambda: (MultimodalClassifier(_mods()), _with("c", ["x", 1] * (N // 2)), _labels()),
        TypeError,
        r"column 'c' mixes value types: number \(rows \[1, 3, 5, 7, 9\]\) and str",
    ),
    "categorical column of str and bool": (
        lambda: (MultimodalClassifier(_mods()), _with("c", ["x", True] * (N // 2)), _labels()),
        TypeError,
        "column 'c' mixes value types: bool",
    ),
    "complex column": (
        lambda: (MultimodalClassifier(_mods()), _with("b", np.ones(N) + 1j), _labels()),
        ValueError,
        "Complex data not supported: column 'b'",
    ),
    "complex cells in an object column": (
        lambda: (
            MultimodalClassifier(_mods()),
            _with("c", pd.Series([1 + 1j] * N, dtype=object)),
            _labels(),
        ),
        TypeError,
        r"column 'c' holds values of type \['complex'\] \(rows \[0, 1, 2, 3, 4\]\)",
    ),
    "date column": (
        lambda: (
            MultimodalClassifier(_mods()),
            _with("b", pd.date_range("2020", periods=N)),
            _labels(),
        ),
        TypeError,
        "column 'b' holds dates or durations",
    ),
    # y
    "class labels 1 and '1'": (
        lambda: (MultimodalClassifier(_mods()), _frame(), [1, "1"] * (N // 2)),
        TypeError,
        r"y mixes label types: number \(rows \[0, 2, 4, 6, 8\]\) and str",
    ),
    "class labels True and 1": (
        lambda: (
            MultimodalClassifier(_mods()),
            _frame(),
            pd.Series([True, 1] * (N // 2), dtype=object),
        ),
        TypeError,
        "y mixes label types: bool",
    ),
    "class label infinite": (
        lambda: (MultimodalClassifier(_mods()), _frame(), np.r_[_labels()[:-1], np.inf]),
        ValueError,
        r"y holds infinite label\(s\) at rows \[39\]",
    ),
    "class labels continuous": (
        lambda: (MultimodalClassifier(_mods()), _frame(), _labels() + 0.5),
        ValueError,
        r"Unknown label type: continuous.*0.5 at row 0.*use MultimodalRegressor",
    ),
    "y is a string": (
        lambda: (MultimodalClassifier(_mods()), _frame(), "label"),
        TypeError,
        "y must be an array-like with one value per row of X, got str",
    ),
    "y has two columns": (
        lambda: (MultimodalClassifier(_mods()), _frame(), np.c_[_labels(), _labels()]),
        ValueError,
        r"y must be 1-D .* shape \(40, 2\)",
    ),
    "regression target infinite": (
        lambda: (MultimodalRegressor(_mods()), _frame(), np.r_[np.zeros(N - 1), np.inf]),
        ValueError,
        r"y holds 1 NaN or infinite value\(s\) at rows \[39\]",
    ),
    "regression target of dates": (
        lambda: (MultimodalRegressor(_mods()), _frame(), pd.date_range("2020", periods=N)),
        TypeError,
        "y holds dates or durations",
    ),
    "regression target complex": (
        lambda: (MultimodalRegressor(_mods()), _frame(), np.ones(N) + 1j),
        ValueError,
        "y holds complex numbers; a regression target must be real",
    ),
    "regression target of words": (
        lambda: (MultimodalRegressor(_mods()), _frame(), pd.Series(["high", 1.0] * (N // 2))),
        ValueError,
        r"non-numeric values at rows \[0, 2, 4, 6, 8, 10, 12, 14, 16, 18\] \(e.g. 'high'\)",
    ),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_bad_input_to_fit_gets_an_error_that_names_it(case):
    make, error, message = FIT_CASES[case]
    model, X, y = make()
    with pytest.raises(error, match=message):
        model.fit(X, y)


PREDICT_CASES = {
    "numeric column holds words": (
        lambda df: df.assign(a=["high"] + [1.0] * (N - 1)),
        ValueError,
        r"column 'a' is numeric but holds non-numeric values at rows \[0\] \(e.g. 'high'\)",
    ),
    "categorical column now holds numbers": (
        lambda df: df.assign(c=np.arange(N)),
        TypeError,
        r"column 'c' held str values in fit but holds number values now \(rows \[0, 1, 2",
    ),
    "duplicated column": (
        lambda df: pd.concat([df, df[["a"]]], axis=1),
        ValueError,
        "column 'a' appears more than once",
    ),
    "value beyond float32": (
        lambda df: df.assign(b=np.where(np.arange(N) == 7, 1e308, df["b"])),
        ValueError,
        r"column 'b' holds values out of range at rows \[7\]",
    ),
    "a numpy array": (
        lambda df: df.to_numpy(),
        TypeError,
        "X must be a pandas DataFrame",
    ),
}


@pytest.fixture(scope="module")
def fitted_clf():
    """The classifier every bad-input case is given to (predict and explain change nothing)."""
    return MultimodalClassifier(_mods(), random_state=0).fit(_frame(), _labels())


@pytest.mark.parametrize("method", ["predict", "explain"])
@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_bad_input_to_predict_and_explain_gets_an_error_that_names_it(case, method, fitted_clf):
    clf = fitted_clf
    change, error, message = PREDICT_CASES[case]
    with pytest.raises(error, match=message):
        getattr(clf, method)(change(_frame()))


def test_duplicated_index_is_accepted_and_messages_name_positions():
    df = _frame()
    df.index = [0] * N
    clf = MultimodalClassifier(_mods(), random_state=0).fit(df, _labels())
    np.testing.assert_array_equal(clf.predict(df), clf.predict(df.reset_index(drop=True)))
    bad = df.copy()
    bad.iloc[3, bad.columns.get_loc("a")] = 1e39
    with pytest.raises(ValueError, match=r"out of range at rows \[3\]"):
        clf.predict(bad)


def test_a_list_of_mixed_labels_is_not_silently_merged():
    """numpy turns [1, '1'] into ['1', '1'] (one class); the classifier refuses instead."""
    df = _frame()
    y = [1, "1"] * (N // 2)
    assert len(np.unique(np.asarray(y))) == 1
    with pytest.raises(TypeError, match="Labels such as 1 and '1' look alike"):
        MultimodalClassifier(_mods()).fit(df, y)
    clf = MultimodalClassifier(_mods(), random_state=0).fit(
        df, [str(v) for v in y[:-2]] + ["0", "0"]
    )
    assert set(clf.classes_) == {"0", "1"}


def test_non_finite_fusion_output_is_refused():
    class Broken(EarlyFusion):
        def predict_output(self, emb):
            out = super().predict_output(emb)
            out[2] = np.nan
            return out

    clf = MultimodalClassifier(_mods(), fusion=Broken(), random_state=0).fit(_frame(), _labels())
    with pytest.raises(ValueError, match=r"produced NaN or infinite outputs for rows \[2\]"):
        clf.predict_proba(_frame())


def test_non_string_column_names_work_with_named_modalities():
    df = _renamed([0, 1, 2])
    mods = [("a", TabularEncoder(), [0]), ("bc", TabularEncoder(), [1, 2])]
    clf = MultimodalClassifier(mods, random_state=0).fit(df, _labels())
    assert list(clf.feature_names_in_) == ["0", "1", "2"]
    named = MultimodalClassifier(_mods(), random_state=0).fit(_frame(), _labels())
    np.testing.assert_array_equal(clf.predict_proba(df), named.predict_proba(_frame()))

    mixed = _renamed(["a", 1, "c"])
    mods = [("a", TabularEncoder(), ["a"]), ("bc", TabularEncoder(), [1, "c"])]
    with pytest.raises(TypeError, match=r"TabularEncoder: column names mix types"):
        MultimodalClassifier(mods).fit(mixed, _labels())
    mods = [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), [1])]
    assert MultimodalClassifier(mods, random_state=0).fit(mixed, _labels()).predict(
        mixed
    ).shape == (N,)
