"""The scikit-learn contract of every encoder on the inputs it accepts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    parametrize_with_checks,
)

from toolkit import AudioEncoder, ImageEncoder, ScanEncoder, TabularEncoder, TextEncoder

COLUMN_ENCODERS = [
    (TextEncoder(n_components=2, random_state=0), ["good film", "bad film", "fine acting"]),
    (ImageEncoder(), [np.eye(6), np.ones((6, 6))]),
    (AudioEncoder(), [(np.sin(np.arange(4000) / 5).astype("float32"), 8000)]),
    (ScanEncoder(spatial_size=(8, 8, 8)), [np.random.default_rng(0).random((10, 10, 10))]),
]


@parametrize_with_checks([TabularEncoder()])
def test_tabular_encoder_passes_sklearn_checks(estimator, check):
    """TabularEncoder takes 2-D numeric input, so scikit-learn's full check suite applies."""
    check(estimator)


@pytest.mark.parametrize(("encoder", "items"), COLUMN_ENCODERS, ids=lambda e: type(e).__name__)
def test_column_encoder_contract(encoder, items):
    """Column encoders take a 1-D column of items, so the checks that need no 2-D numeric
    input are run, plus clone / pickle / determinism on their own inputs."""
    name = type(encoder).__name__
    check_parameters_default_constructible(name, encoder)
    check_no_attributes_set_in_init(name, encoder)
    check_get_params_invariance(name, encoder)
    check_set_params(name, encoder)
    fitted = clone(encoder).fit(items)
    out = fitted.transform(items)
    assert out.shape == (len(items), fitted.n_features_out_) and out.dtype == np.float32
    assert len(fitted.get_feature_names_out()) == out.shape[1]
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(items), out)
    with pytest.raises(Exception, match="not fitted"):
        clone(encoder).transform(items)


def test_invalid_parameter_is_reported():
    with pytest.raises(ValueError, match="'on_error' parameter"):
        ImageEncoder(on_error="ignore").fit([np.eye(3)])


def test_corrupt_safetensors_weights_name_the_file(tmp_path):
    from toolkit.encoders._torch import load_state_dict

    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"w.safetensors' is not a readable safetensors file"):
        load_state_dict(bad)
