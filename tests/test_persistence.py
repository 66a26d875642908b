"""toolkit.save / toolkit.load: round trips, refusal of untrusted types and other versions."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

import toolkit
from toolkit import (
    GatedFusion,
    ImageEncoder,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
    TextEncoder,
)
from toolkit.persistence import UntrustedTypeError


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {
            "note": [f"felt {w} today" for w in np.array(["great", "awful"])[y]],
            "img": [np.clip(rng.random((8, 8)) * 0.5 + 0.3 * c, 0, 1) for c in y],
            "age": rng.normal(50, 10, n),
        }
    )
    mods = [
        ("text", TextEncoder(n_components=4), "note"),
        ("image", ImageEncoder(pixel_size=4), "img"),
        ("age", TabularEncoder(), ["age"]),
    ]
    return df, np.array(["neg", "pos"])[y], mods


@pytest.mark.parametrize(
    "fusion", ["early", "late", GatedFusion(max_epochs=20)], ids=["early", "late", "gated"]
)
def test_round_trip_gives_identical_predictions_and_explanations(tmp_path, fusion):
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
    toolkit.save(clf, tmp_path / "model")
    loaded = toolkit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    assert list(loaded.classes_) == ["neg", "pos"]
    np.testing.assert_array_equal(loaded.explain(df).values, clf.explain(df).values)


def test_regressor_and_pretrained_encoder_round_trip(tmp_path, tiny_bert):
    df, y, _ = _data()
    target = (y == "pos") * 2.0
    mods = [
        ("text", TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu"), "note")
    ]
    reg = MultimodalRegressor(mods, fusion="late", random_state=0).fit(df, target)
    folder = toolkit.save(reg, tmp_path / "reg")
    assert (folder / "encoders" / "text" / "model.safetensors").exists()
    loaded = toolkit.load(folder)
    np.testing.assert_allclose(loaded.predict(df), reg.predict(df), atol=1e-10)


def test_existing_folder_is_not_overwritten(tmp_path):
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, random_state=0).fit(df, y)
    toolkit.save(clf, tmp_path / "m")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        toolkit.save(clf, tmp_path / "m")
    toolkit.save(clf, tmp_path / "m", overwrite=True)


def test_file_referencing_an_arbitrary_callable_is_refused(tmp_path):
    df, y, mods = _data()
    folder = toolkit.save(MultimodalClassifier(mods, random_state=0).fit(df, y), tmp_path / "m")
    archive = folder / "model.skops"
    with zipfile.ZipFile(archive) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(files["schema.json"])
    schema["__module__"] = "os"
    schema["__class__"] = "system"
    files["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    with pytest.raises(UntrustedTypeError, match=r"not trusted: \['os.system'\]"):
        toolkit.load(folder)


def test_other_version_is_refused(tmp_path):
    df, y, mods = _data()
    folder = toolkit.save(MultimodalClassifier(mods, random_state=0).fit(df, y), tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["versions"]["multimodal-toolkit"] = "9.3.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="saved by multimodal-toolkit 9.3.0"):
        toolkit.load(folder)
    manifest["format"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="save format 99"):
        toolkit.load(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a saved toolkit model"):
        toolkit.load(tmp_path)
