"""Trainable encoders (issue 16): ImageEncoder and AudioEncoder with backend="cnn" learn
from the labels inside fit(X, y, groups)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from toolkit import AudioEncoder, ImageEncoder

TINY = {"widths": (4, 8), "max_epochs": 4, "device": "cpu", "progress": False}


def quadrant_images(n: int, seed: int):
    """8x8 grey images of noise with one bright quadrant; the label is the quadrant (0-3)."""
    rng = np.random.default_rng(seed)
    images, labels = [], rng.integers(0, 4, n)
    for q in labels:
        img = rng.random((8, 8)) * 0.6
        r, c = divmod(int(q), 2)
        img[4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 0.4
        images.append(img)
    return images, labels


def tone_clips(n: int, seed: int, rate: int = 8000):
    """Noisy tones of 300 Hz (label 0) or 1200 Hz (label 1), 0.2-0.4 s long."""
    rng = np.random.default_rng(seed)
    clips, labels = [], rng.integers(0, 2, n)
    for label in labels:
        t = np.arange(int(rate * rng.uniform(0.2, 0.4))) / rate
        wave = np.sin(2 * np.pi * (300, 1200)[label] * t) + 0.5 * rng.standard_normal(len(t))
        clips.append((wave.astype(np.float32), rate))
    return clips, labels


def test_cnn_image_encoder_is_supervised_and_encodes_penultimate_features():
    images, y = quadrant_images(40, 0)
    enc = ImageEncoder(backend="cnn", **TINY, random_state=0)
    assert enc.supervised and not enc.fixed
    assert not ImageEncoder().supervised and ImageEncoder().fixed
    block, present = enc.fit(images, y).encode([*images[:3], None])
    assert block.shape == (4, 32) and block.dtype == np.float32  # 8 channels x 2 x 2 cells
    assert present.tolist() == [True, True, True, False]
    assert np.isnan(block[3]).all() and np.isfinite(block[:3]).all()
    assert enc.n_features_out_ == 32 and enc.input_size_ == 16 and enc.in_channels_ == 1
    assert len(enc.history_) == enc.n_epochs_ <= 4
    assert {"train_loss", "valid_loss"} <= set(enc.history_[0])
    assert enc.get_feature_names_out()[0] == "image_emb0"


def test_cnn_needs_labels():
    images, _ = quadrant_images(10, 0)
    with pytest.raises(ValueError, match=r"learns its features from the labels: call fit\(X, y\)"):
        ImageEncoder(backend="cnn", **TINY).fit(images)
    with pytest.raises(ValueError, match="one label per item"):
        ImageEncoder(backend="cnn", **TINY).fit(images, [0, 1])
    with pytest.raises(ValueError, match=r"missing labels at rows \[2\]"):
        ImageEncoder(backend="cnn", **TINY).fit(images, [0, 1, np.nan] + [0.0] * 7)


def test_cnn_refuses_bad_settings():
    images, y = quadrant_images(10, 0)
    with pytest.raises(ValueError, match="widths must list 1 to 6 channel counts"):
        ImageEncoder(backend="cnn", widths=(4, 0)).fit(images, y)
    with pytest.raises(ValueError, match="trains its network from scratch"):
        ImageEncoder(backend="cnn", weights="w.safetensors").fit(images, y)
    with pytest.raises(ValueError, match="n_jobs=None"):
        ImageEncoder(backend="cnn", n_jobs=2).fit(images, y)


def test_cnn_same_seed_same_features_on_cpu():
    images, y = quadrant_images(60, 1)
    enc = ImageEncoder(backend="cnn", **TINY, random_state=3)
    a = clone(enc).fit(images, y).transform(images)
    b = clone(enc).fit(images, y).transform(images)
    c = clone(enc).set_params(random_state=4).fit(images, y).transform(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_cnn_validation_rows_are_whole_groups(monkeypatch):
    """With groups, the early-stopping rows are whole groups (the shared inner split)."""
    import toolkit.model_selection as inner

    images, y = quadrant_images(60, 2)
    groups = np.repeat(np.arange(12), 5)
    seen = []
    real = inner.validation_split

    def spy(n, groups_, fraction, seed, min_rows=20):
        out = real(n, groups_, fraction, seed, min_rows)
        seen.append((groups_, out))
        return out

    monkeypatch.setattr(inner, "validation_split", spy)
    ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, y, groups=groups)
    (passed, (train, valid)), = seen
    np.testing.assert_array_equal(passed, groups)
    assert len(valid) > 0
    assert not set(groups[train]) & set(groups[valid])
    with pytest.raises(ValueError, match="groups holds missing labels"):
        ImageEncoder(backend="cnn", **TINY).fit(images, y, groups=[None] + [1] * 59)


def test_cnn_missing_items_are_skipped_with_their_labels():
    images, y = quadrant_images(30, 3)
    items = pd.Series([None, *images], index=[f"r{i}" for i in range(31)])
    labels = np.array([7, *y])  # the absent row's label (a class no image has) is not used
    enc = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(items, labels)
    assert enc.network_spec_["n_out"] == 4


def test_cnn_regression_target():
    images, y = quadrant_images(40, 4)
    target = y.astype(float) * 2.5
    enc = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, target)
    assert enc.network_spec_["n_out"] == 1 and not enc.is_classifier_
    assert enc.y_scale_ > 0 and enc.transform(images).shape == (40, 32)


def test_cnn_learns_bright_quadrant_from_8x8_images():
    """Known answer: the quadrant is learnable; held-out accuracy of a linear head on the
    trained features is near perfect, far above chance (0.25)."""
    images, y = quadrant_images(240, 5)
    test_images, test_y = quadrant_images(120, 6)
    enc = ImageEncoder(
        backend="cnn", widths=(8, 16), max_epochs=25, device="cpu", progress=False, random_state=0
    ).fit(images, y)
    head = LogisticRegression(max_iter=2000).fit(enc.transform(images), y)
    assert head.score(enc.transform(test_images), test_y) >= 0.95


def test_cnn_colour_images_and_resizing():
    rng = np.random.default_rng(0)
    images = [rng.random((12, 10, 3)) for _ in range(10)] + [rng.random((20, 20))]
    y = [0, 1] * 5 + [0]
    enc = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, y)
    assert enc.in_channels_ == 3 and enc.input_size_ == 20
    assert enc.transform([rng.random((70, 70))]).shape == (1, 32)


def test_cnn_weights_round_trip_and_meta_description(tmp_path):
    """The persistence protocol: safetensors weights that fit the network described on the
    meta device, loaded back without training, give the same features."""
    from safetensors import safe_open

    from toolkit._utils import tensor_table

    images, y = quadrant_images(30, 7)
    enc = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, y)
    assert enc.weight_parameters() == ("weights",)
    params = enc.save_weights(tmp_path)
    assert params == {"weights": "weights.safetensors"}
    with safe_open(str(tmp_path / "weights.safetensors"), "pt") as f:
        saved = tensor_table({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    assert enc.expected_weights() == saved
    restored = pickle.loads(pickle.dumps(enc))
    del restored.model_
    restored.load_weights({"weights": str(tmp_path / "weights.safetensors")})
    np.testing.assert_array_equal(restored.transform(images), enc.transform(images))
    other = ImageEncoder(backend="cnn", **{**TINY, "widths": (4, 6)}, random_state=0)
    assert other.fit(images, y).expected_weights() != saved


def test_cnn_classifier_saves_and_loads(tmp_path):
    """Through a MultimodalClassifier (cross-fitted scores) and toolkit.save / load."""
    import toolkit
    from toolkit import MultimodalClassifier, TabularEncoder

    images, y = quadrant_images(60, 8)
    df = pd.DataFrame({"image": images, "x": np.random.default_rng(0).random(60)})
    clf = MultimodalClassifier(
        [
            ("image", ImageEncoder(backend="cnn", **TINY), "image"),
            ("tab", TabularEncoder(), ["x"]),
        ],
        fusion="early",
        random_state=0,
    )
    clf.fit(df, y)
    assert clf.embedding_widths_["image"] == len(clf.classes_)  # one score per class
    toolkit.save(clf, tmp_path / "model")
    loaded = toolkit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    # explanations stay exact: values add up to output - prior, per row
    exp = clf.explain(df)
    np.testing.assert_allclose(
        exp.values.sum(axis=1) + exp.base_values, clf.predict_proba(df), atol=1e-9
    )


def test_cnn_audio_encoder_learns_tone_pitch():
    clips, y = tone_clips(60, 0)
    test_clips, test_y = tone_clips(30, 1)
    enc = AudioEncoder(
        backend="cnn", sample_rate=8000, widths=(4, 8), max_epochs=15, device="cpu",
        progress=False, random_state=0,
    )  # fmt: skip
    assert enc.supervised and not enc.fixed and AudioEncoder().fixed
    enc.fit(clips, y)
    assert enc.n_samples_ == int(np.percentile([len(w) for w, _ in clips], 95))
    block = enc.transform(test_clips)
    assert block.shape == (30, 32)  # 8 channels x 4 frequency bands
    head = LogisticRegression(max_iter=2000).fit(enc.transform(clips), y)
    assert head.score(block, test_y) >= 0.9
    again = clone(enc).fit(clips, y).transform(test_clips)
    np.testing.assert_array_equal(again, block)


def test_cnn_audio_fixed_duration_and_labels_needed():
    clips, y = tone_clips(12, 2)
    enc = AudioEncoder(backend="cnn", sample_rate=8000, duration=0.5, **TINY, random_state=0)
    with pytest.raises(ValueError, match="learns its features from the labels"):
        clone(enc).fit(clips)
    enc.fit(clips, y)
    assert enc.n_samples_ == 4000
    long_clip = (np.zeros(16000, dtype=np.float32), 8000)  # cut to 0.5 s
    assert enc.transform([long_clip]).shape == (1, 32)


def test_cnn_augment_shift_moves_each_training_image_by_at_most_the_shift():
    """Known answer: each augmented image is its input moved by (dy, dx) in [-s, s]^2 with
    zeros shifted in; the draws follow the generator's seed; 0 is the identity."""
    import torch

    x = torch.rand(6, 1, 8, 8) + 1.0  # no zeros inside the images
    out = ImageEncoder(backend="cnn", augment_shift=2)._cnn_augment(
        x, torch.Generator().manual_seed(0)
    )
    for img, moved in zip(x[:, 0], out[:, 0], strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(
                moved,
                torch.nn.functional.pad(img, (2, 2, 2, 2))[2 - dy : 10 - dy, 2 - dx : 10 - dx],
            )
        ]
        assert len(matches) == 1
    again = ImageEncoder(backend="cnn", augment_shift=2)._cnn_augment(
        x, torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, again)
    assert ImageEncoder(backend="cnn")._cnn_augment(x, None) is x  # default: off
    images, y = quadrant_images(40, 9)
    shifted = ImageEncoder(backend="cnn", **TINY, augment_shift=1, random_state=0)
    a = shifted.fit(images, y).transform(images)
    b = clone(shifted).fit(images, y).transform(images)
    np.testing.assert_array_equal(a, b)
    plain = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, y)
    assert not np.allclose(a, plain.transform(images))


def test_cnn_ensemble_averages_networks_trained_apart(tmp_path):
    """n_networks=3: three networks with their own seeds; the scores are the mean of the
    members' head outputs, the features theirs side by side; weights round-trip."""
    import torch

    images, y = quadrant_images(40, 10)
    enc = ImageEncoder(backend="cnn", **TINY, n_networks=3, random_state=0).fit(images, y)
    assert enc.network_spec_["n_networks"] == 3 and len(enc.model_.members) == 3
    assert enc.transform(images).shape == (40, 3 * 32)
    assert len(enc.best_epoch_) == 3 and sorted({r["network"] for r in enc.history_}) == [0, 1, 2]
    x = enc._cnn_inputs([np.asarray(i, dtype=np.float32)[..., None] for i in images])
    with torch.no_grad():
        members = torch.stack([m(x) for m in enc.model_.members])
    np.testing.assert_allclose(enc.encode_scores(images)[0], members.mean(0).numpy(), rtol=1e-5)
    assert not torch.allclose(members[0], members[1])
    single = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, y)
    np.testing.assert_array_equal(
        enc.transform(images)[:, :32], single.transform(images)
    )  # member 0 is the single network of the same seed
    enc.save_weights(tmp_path)
    restored = pickle.loads(pickle.dumps(enc))
    del restored.model_
    restored.load_weights({"weights": str(tmp_path / "weights.safetensors")})
    np.testing.assert_array_equal(restored.transform(images), enc.transform(images))
    target = y.astype(float)
    reg = ImageEncoder(backend="cnn", **TINY, n_networks=2, random_state=0).fit(images, target)
    first = ImageEncoder(backend="cnn", **TINY, random_state=0).fit(images, target)
    assert (reg.y_mean_, reg.y_scale_) == (first.y_mean_, first.y_scale_)
