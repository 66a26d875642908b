"""A saved model records the ``features_version`` of each encoder class (what it computes);
loading refuses a model whose encoder now computes another version, and warns for a model
saved before the record existed (its features may have changed since)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import toolkit
from toolkit import ImageEncoder, MultimodalClassifier, TabularEncoder
from toolkit.persistence import ModelFileError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    frame = pd.DataFrame({"img": [rng.random((8, 8)) + c for c in y], "a": rng.normal(size=40)})
    mods = [("image", ImageEncoder(pixel_size=8, progress=False), "img"),
            ("labs", TabularEncoder(), ["a"])]  # fmt: skip
    model = MultimodalClassifier(mods, random_state=0).fit(frame, y)
    return toolkit.save(model, tmp_path_factory.mktemp("fv") / "model"), frame


def _edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_the_manifest_records_each_versioned_encoder(saved):
    folder, frame = saved
    manifest = json.loads((folder / "manifest.json").read_text())
    # TabularEncoder declares no features_version; ImageEncoder computes version 1
    assert manifest["features_versions"] == {"image": {"class": "ImageEncoder", "version": 1}}
    assert toolkit.load(folder).predict(frame).shape == (40,)


def test_a_model_fitted_on_another_features_version_is_refused(saved, tmp_path):
    import shutil

    folder = shutil.copytree(saved[0], tmp_path / "old")
    _edit_manifest(folder, lambda m: m["features_versions"]["image"].update(version=0))
    with pytest.raises(
        ModelFileError,
        match=re.escape(
            f"model '{folder}': its 'image' encoder (ImageEncoder) was fitted on features "
            "version 0; this toolkit computes version 1, so its predictions would come from "
            "other features. Refit the model"
        ),
    ):
        toolkit.load(folder)
    _edit_manifest(folder, lambda m: m.update(features_versions=[1]))
    with pytest.raises(ModelFileError, match="manifest 'features_versions' is malformed"):
        toolkit.load(folder)


def test_a_model_saved_before_the_record_loads_with_a_warning_naming_the_versions(saved, tmp_path):
    import shutil

    folder = shutil.copytree(saved[0], tmp_path / "before")
    _edit_manifest(folder, lambda m: m.pop("features_versions"))
    with pytest.warns(
        UserWarning,
        match=r"saved before encoders recorded their features versions; this toolkit computes "
        r"ImageEncoder features version 1\. .*refit it if it predates them",
    ):
        model = toolkit.load(folder)
    np.testing.assert_array_equal(model.predict(saved[1]), toolkit.load(saved[0]).predict(saved[1]))
