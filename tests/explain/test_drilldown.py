"""Drill-down inside text, images, audio and scans: Owen values of the parts of an item that
add up to the modality's Shapley value, checked against a brute-force computation on masked
raw rows, with known answers (one decisive word, one decisive image quadrant)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from toolkit import (
    AudioEncoder,
    EarlyFusion,
    ImageEncoder,
    LateFusion,
    MultimodalClassifier,
    MultimodalRegressor,
    ScanEncoder,
    TabularEncoder,
    TextEncoder,
)
from toolkit.encoders import FeatureEncoder
from toolkit.encoders.base import BaseEncoder
from toolkit.explain import (
    ImageGrid,
    ScanBlocks,
    TimeSegments,
    Words,
    drill_down,
    drill_down_cost,
    explain_features,
    plot_audio_parts,
    plot_image_parts,
    plot_scan_parts,
    plot_text_parts,
)

FUSIONS = {
    "early": lambda: EarlyFusion(estimator=LogisticRegression()),
    "late": lambda: LateFusion(estimator=LogisticRegression()),
}
FILLERS = ["the", "film", "was", "very"]


def _texts(n=400, seed=0):
    """Half the texts hold one decisive word ("wonderful" -> 1, "dreadful" -> 0) among 1-5
    filler words; the others hold only fillers and a coin-flip label (no information)."""
    rng = np.random.default_rng(seed)
    y, has = rng.integers(0, 2, n), rng.random(n) < 0.5
    texts = []
    for label, decisive in zip(y, has, strict=True):
        words = list(rng.choice(FILLERS, rng.integers(1 if decisive else 2, 6)))
        if decisive:
            words.insert(rng.integers(0, len(words) + 1), "wonderful" if label else "dreadful")
        texts.append(" ".join(words))
    return pd.DataFrame({"note": texts, "lab": rng.normal(size=n)}), y, has


def _text_model(fusion, df, y, encoder=None):
    mods = [
        ("note", encoder or TextEncoder(n_components=10, random_state=0), "note"),
        ("lab", TabularEncoder(), ["lab"]),
    ]
    return MultimodalClassifier(mods, fusion=FUSIONS[fusion](), random_state=0).fit(df, y)


def _owen_by_brute_force(clf, row, column, others, words):
    """Owen values from predict_proba on raw rows with parts and modalities blanked."""
    M, d = len(others) + 1, len(words)

    def w(s, n):
        return math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)

    def v(kept_others, kept_words):
        frame = row.copy()
        for name, col in others.items():
            if name not in kept_others:
                frame[col] = np.nan
        frame[column] = " ".join(words[k] for k in kept_words) if kept_words else None
        if not kept_others and not kept_words:
            return clf.prior_[1]
        return clf.predict_proba(frame)[0, 1]

    phi = np.zeros(d)
    for r in range(M):
        for S in itertools.combinations(others, r):
            for c in range(d):
                rest = [k for k in range(d) if k != c]
                for t in range(d):
                    for T in itertools.combinations(rest, t):
                        gain = v(S, tuple(sorted(T + (c,)))) - v(S, T)
                        phi[c] += w(len(S), M) * w(len(T), d) * gain
    return phi


def test_owen_values_agree_with_brute_force_on_masked_raw_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    words = ["good", "bad", "film", "plot", "very"]
    notes = [
        " ".join(rng.choice(words, rng.integers(2, 5))) + (" good" if c else " bad") for c in y
    ]
    df = pd.DataFrame({"note": notes, "x": y + rng.normal(size=120), "z": rng.normal(size=120)})
    mods = [
        ("lab", TabularEncoder(), ["x"]),
        ("note", TextEncoder(n_components=4, random_state=0), "note"),
        ("z", TabularEncoder(), ["z"]),
    ]
    clf = MultimodalClassifier(mods, fusion=FUSIONS["early"](), random_state=0).fit(df, y)
    for i in [k for k, note in enumerate(notes) if len(note.split()) == 4][:1]:
        row = df.iloc[[i]]
        ours = drill_down(clf, row, "note", Words())
        expected = _owen_by_brute_force(clf, row, "note", {"lab": "x", "z": "z"}, notes[i].split())
        np.testing.assert_allclose(ours.values[0], expected, atol=1e-12)
        assert list(ours.data[0]) == notes[i].split()


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_one_decisive_word_gets_the_text_value(fusion, tmp_path):
    df, y, has = _texts()
    clf = _text_model(fusion, df, y)
    rows = np.flatnonzero(has)[:10]
    words = drill_down(clf, df.iloc[rows], "note", Words())
    text_value = clf.explain(df.iloc[rows]).values[:, 0]
    decisive, total = [], []
    for j, i in enumerate(rows):
        values = words.values[j]
        k = list(words.data[j]).index("wonderful" if y[i] else "dreadful")
        assert np.argmax(np.abs(values)) == k  # the decisive word is the largest part
        decisive.append(values[k])
        total.append(values.sum())
    np.testing.assert_allclose(total, text_value, atol=1e-9)  # parts add up exactly
    decisive, total = np.array(decisive), np.array(total)
    share = (np.sign(total) * decisive).sum() / np.abs(total).sum()
    assert share >= 0.9, share
    assert (words.error_std[0] == 0).all()  # exact: no sampling error
    assert plot_text_parts(words, 0, tmp_path / "text.png").stat().st_size > 3000


class CountingTextEncoder(TextEncoder):
    calls = 0

    def _encode_batch(self, texts):
        type(self).calls += len(texts)
        return super()._encode_batch(texts)


def test_sampling_fallback_adds_up_and_states_its_error():
    df, y, has = _texts()
    clf = _text_model("late", df, y, CountingTextEncoder(n_components=10, random_state=0))
    rows = df.iloc[np.flatnonzero(has)[:6]]
    rows = rows.assign(note=rows["note"] + " the film was very")  # 6-10 words
    CountingTextEncoder.calls = 0
    exact = drill_down(clf, rows, "note", Words(), max_parts=10)
    sizes = [len(t.split()) for t in rows["note"]]
    assert CountingTextEncoder.calls == len(rows) + sum(
        drill_down_cost(d, 2)["encoder_calls"] for d in sizes
    )  # the rows themselves, then 2^d - 2 masked texts per row
    CountingTextEncoder.calls = 0
    sampled = drill_down(clf, rows, "note", Words(), max_parts=3, n_permutations=32, random_state=0)
    bound = sum(
        drill_down_cost(d, 2, max_parts=3, n_permutations=32)["encoder_calls"] for d in sizes
    )
    assert len(rows) < CountingTextEncoder.calls <= len(rows) + bound
    modality = clf.explain(rows).values[:, 0]
    z = []
    for j in range(len(rows)):
        assert sampled.values[j].sum() == pytest.approx(modality[j], abs=1e-12)
        assert (sampled.error_std[j] > 0).all()
        z.extend((sampled.values[j] - exact.values[j]) / sampled.error_std[j])
    z = np.abs(z)
    assert np.mean(z < 2.5) >= 0.85, np.round(z, 1)  # the stated error is the real one
    again = drill_down(clf, rows, "note", Words(), max_parts=3, n_permutations=32, random_state=0)
    np.testing.assert_array_equal(np.concatenate(again.values), np.concatenate(sampled.values))


def test_transformer_text_encoder(tiny_bert):
    df, y, has = _texts(n=80)
    encoder = TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu")
    clf = _text_model("late", df, y, encoder)
    rows = df.iloc[np.flatnonzero(has)[:3]]
    words = drill_down(clf, rows, "note", Words())
    modality = clf.explain(rows).values[:, 0]
    for j in range(3):
        assert words.values[j].shape == (len(rows["note"].iloc[j].split()),)
        assert words.values[j].sum() == pytest.approx(modality[j], abs=1e-9)


def _images(n, seed, occlude=0.0):
    """32 x 32 grey images: the top-left quadrant is bright (label 1) or dark (label 0), the
    rest uniform noise around mid-grey. ``occlude``: each 8 x 8 cell is replaced by the
    masker's mid-grey fill with this probability (training images), so that the model has
    seen masked images; without it, flattening the background moves contrast and edge
    features far outside the training range and the head's noise weights on them took
    20-40% of single rows' image value (aggregated share 0.79 instead of >= 0.96)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    images = []
    for label in y:
        image = rng.uniform(0.2, 0.8, (32, 32))
        image[:16, :16] = (0.85 if label else 0.15) + rng.normal(0, 0.05, (16, 16))
        for r, c in np.argwhere(rng.random((4, 4)) < occlude):
            image[8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 0.5
        images.append(np.clip(image, 0, 1))
    return pd.DataFrame({"image": images, "lab": rng.normal(size=n)}), y


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_one_decisive_quadrant_gets_the_image_value(fusion, tmp_path):
    df, y = _images(300, 0, occlude=0.25)
    mods = [("image", ImageEncoder(pixel_size=8), "image"), ("lab", TabularEncoder(), ["lab"])]
    clf = MultimodalClassifier(mods, fusion=FUSIONS[fusion](), random_state=0).fit(df, y)
    rows, _ = _images(2, 100)
    grid = ImageGrid(rows=2, cols=2, subdivide=2, fill=0.5)  # 16 cells in 4: sampled below
    cells = drill_down(clf, rows, "image", grid, max_parts=6, n_permutations=16, random_state=0)
    assert cells.values.shape == (2, 16) and cells.feature_names[:2] == ["r0c0", "r0c1"]
    quadrant = [
        k for k, name in enumerate(cells.feature_names) if name[1] in "01" and name[3] in "01"
    ]
    assert len(quadrant) == 4
    total = cells.values.sum(axis=1)
    np.testing.assert_allclose(total, clf.explain(rows).values[:, 0], atol=1e-9)
    share = (np.sign(total) * cells.values[:, quadrant].sum(axis=1)).sum() / np.abs(total).sum()
    assert share >= 0.9, share
    assert (cells.error_std > 0).any()
    assert plot_image_parts(cells, 0, tmp_path / "image.png").stat().st_size > 3000


def _tones(n, seed, silence=0.0):
    """1 s clips at 8 kHz: the first quarter holds a 440 Hz (label 1) or 150 Hz (label 0)
    tone, the rest faint noise; ``silence``: each quarter is silenced with this probability
    (training clips, so that the model has seen masked clips)."""
    rng = np.random.default_rng(seed)
    rate, t = 8000, np.arange(8000) / 8000
    y, clips = rng.integers(0, 2, n), []
    for label in y:
        wave = 0.05 * rng.normal(size=rate)
        wave[: rate // 4] += np.sin(2 * np.pi * (440 if label else 150) * t[: rate // 4])
        for s in np.flatnonzero(rng.random(4) < silence):
            wave[s * rate // 4 : (s + 1) * rate // 4] = 0.0
        clips.append((wave.astype(np.float32), rate))
    return pd.DataFrame({"clip": clips, "lab": rng.normal(size=n)}), y


def test_one_decisive_segment_gets_the_audio_value():
    df, y = _tones(80, 0, silence=0.3)
    mods = [
        ("voice", AudioEncoder(sample_rate=8000, n_segments=2), "clip"),
        ("lab", TabularEncoder(), ["lab"]),
    ]
    clf = MultimodalClassifier(mods, fusion=FUSIONS["late"](), random_state=0).fit(df, y)
    rows, _ = _tones(4, 5)
    segments = drill_down(clf, rows, "voice", TimeSegments(n_segments=4))
    total = segments.values.sum(axis=1)
    np.testing.assert_allclose(total, clf.explain(rows).values[:, 0], atol=1e-9)
    share = (np.sign(total) * segments.values[:, 0]).sum() / np.abs(total).sum()
    assert share >= 0.9, segments.values


def test_audio_segments_and_scan_blocks(tmp_path):
    rng = np.random.default_rng(0)
    n, rate = 40, 8000
    t = np.arange(rate) / rate
    y = rng.integers(0, 2, n)
    clips = []
    for label in y:
        wave = 0.05 * rng.normal(size=rate)
        wave[: rate // 4] += np.sin(2 * np.pi * (440 if label else 150) * t[: rate // 4])
        clips.append((wave.astype(np.float32), rate))
    volumes = [
        rng.random((12, 12, 12)) + label * np.pad(np.ones((6, 6, 6)), ((0, 6),) * 3) for label in y
    ]
    df = pd.DataFrame({"clip": clips, "scan": volumes, "lab": rng.normal(size=n)})
    mods = [
        ("voice", AudioEncoder(sample_rate=rate, n_segments=2), "clip"),
        ("scan", ScanEncoder(spatial_size=(12, 12, 12), hist_bins=8, grid=2), "scan"),
        ("lab", TabularEncoder(), ["lab"]),
    ]
    reg = MultimodalRegressor(
        mods, fusion=FUSIONS["early"]().set_params(estimator=None), random_state=0
    )
    reg.fit(df, y.astype(float))
    rows = df.iloc[:2]
    modality = reg.explain(rows).values
    voice = drill_down(reg, rows, "voice", TimeSegments(n_segments=4))
    assert list(voice.feature_names) == ["0.00-0.25 s", "0.25-0.50 s", "0.50-0.75 s", "0.75-1.00 s"]
    np.testing.assert_allclose(voice.values.sum(axis=1), modality[:, 0], atol=1e-9)
    assert voice.data.shape == (2, 4) and voice.data[0, 0] > 3 * voice.data[0, 1]  # RMS
    scan = drill_down(reg, rows, "scan", ScanBlocks())  # 8 blocks, exact
    assert scan.values.shape == (2, 8) and scan.feature_names[-1] == "z1y1x1"
    np.testing.assert_allclose(scan.values.sum(axis=1), modality[:, 1], atol=1e-9)
    assert plot_audio_parts(voice, 0, tmp_path / "audio.png").stat().st_size > 3000
    assert plot_scan_parts(scan, 1, tmp_path / "scan.png").stat().st_size > 3000


def test_tabular_modality_and_absent_rows():
    df, y, _ = _texts(n=120)
    clf = _text_model("late", df, y)
    table = drill_down(clf, df.iloc[:5], "lab")
    np.testing.assert_array_equal(table.values, explain_features(clf, df.iloc[:5], "lab").values)
    rows = df.iloc[:4].copy()
    rows.loc[rows.index[1], "note"] = None
    words = drill_down(clf, rows, "note")
    assert words.values[1].shape == (0,) and words.display_data[1] is None
    assert words.base_values[1] == pytest.approx(clf.predict_proba(rows)[1, 1])
    with pytest.raises(ValueError, match="row 1 has no text to draw"):
        plot_text_parts(words, 1)


def test_maskers():
    parts = Words().split("  not   bad at all ", None)
    assert parts.labels == ["not", "bad", "at", "all"]
    assert Words().mask(parts, [True, False, True, True]) == "not at all"
    grid = ImageGrid(rows=2, cols=2, fill=0.25)
    image = grid.split(np.ones((5, 4, 3)), None)
    masked = grid.mask(image, [False, True, True, True])
    assert masked.shape == (5, 4, 3) and (masked[:2, :2] == 0.25).all() and (masked[2:] == 1).all()
    mean_fill = ImageGrid(rows=1, cols=2, fill="mean").mask(
        ImageGrid(rows=1, cols=2).split(np.array([[0.0, 1.0]]), None), [True, False]
    )
    assert mean_fill[..., 0].tolist() == [[0.0, 0.5]]
    volume = ScanBlocks(blocks=(1, 1, 2), fill=0.0).split(np.ones((2, 2, 4)), None)
    out = ScanBlocks(blocks=(1, 1, 2)).mask(volume, [True, False])
    assert out[..., :2].min() == 1.0 and out[..., 2:].max() == 0.0


def test_drill_down_errors():
    from toolkit import Embeddings

    df, y, _ = _texts(n=120)
    clf = _text_model("late", df, y)
    with pytest.raises(KeyError, match=r"unknown modality 'face'; available: \['note', 'lab'\]"):
        drill_down(clf, df, "face")
    with pytest.raises(
        TypeError,
        match=(
            "ImageGrid splits image items; modality 'note' is encoded by TextEncoder, which "
            "reads text items"
        ),
    ):
        drill_down(clf, df, "note", ImageGrid())
    with pytest.raises(TypeError, match="needs the raw rows"):
        drill_down(clf, clf.encode(df), "note")
    with pytest.raises(ValueError, match="max_parts must be a positive integer, got 0"):
        drill_down(clf, df, "note", max_parts=0)
    with pytest.raises(ValueError, match="at most 14 is accepted"):
        drill_down(clf, df, "note", max_parts=16)
    with pytest.raises(ValueError, match="n_permutations must be a positive integer"):
        drill_down(clf, df, "note", n_permutations=0)
    with pytest.raises(ValueError, match="fill must be one of"):
        ImageGrid(fill=2.0).split(np.ones((4, 4)), None)
    with pytest.raises(ValueError, match="fewer than 4 positions along an axis"):
        ImageGrid().split(np.ones((3, 8)), None)
    emb = clf.encode(df)
    bare = MultimodalClassifier(fusion=FUSIONS["late"](), random_state=0).fit(
        Embeddings(emb.blocks, emb.mask), y
    )
    with pytest.raises(ValueError, match="no encoder for modality 'note'"):
        drill_down(bare, df, "note")


class _WordFlags(BaseEncoder):
    """An encoder the drill-down has never heard of: one flag per known word of a text. It
    declares its parts (words) and how it reads one item; nothing else is registered."""

    modality = "text"

    def __init__(self, batch_size=32, on_error="raise", progress=False):
        self.batch_size = batch_size
        self.on_error = on_error
        self.progress = progress

    def _read(self, item):
        return str(item)

    def _fit(self, decoded):
        self.n_features_out_ = 2

    def _encode_batch(self, texts):
        return np.array([[("wonderful" in t) * 1.0, ("dreadful" in t) * 1.0] for t in texts])

    def masker(self):
        return Words()


def test_a_new_encoder_is_drilled_through_what_it_declares():
    from toolkit.study.drilldown import drillable

    df, y, _ = _texts(n=120)
    clf = _text_model("early", df, y, encoder=_WordFlags())
    rows = df.iloc[:3]
    words = drill_down(clf, rows, "note", max_parts=14)
    totals = [float(np.sum(v)) for v in words.values]  # ragged: one array per row
    np.testing.assert_allclose(totals, clf.explain(rows).values[:, 0], atol=1e-9)
    assert any(abs(t) > 1e-3 for t in totals)
    assert drillable([("note", _WordFlags(), "note"), ("lab", TabularEncoder(), ["lab"])]) == (
        {"note": "text"},
        {"lab": "a table: drilled column by column in 'Inside the tables'"},
    )
    # an encoder that declares no parts is refused by what it declares, not by its class name
    plain = FeatureEncoder()
    assert plain.masker() is None


def test_encoders_declare_their_parts_and_read_one_item_as_they_encode():
    image = np.linspace(0, 1000, 48).reshape(4, 4, 3)
    enc = ImageEncoder(value_range=(0, 1000), pixel_size=2).fit([image])
    read = enc.read_item(image)
    assert read.min() == 0.0 and read.max() == 1.0  # on the encoder's [0, 1] scale
    np.testing.assert_allclose(enc.restore_item(read), image)  # back to the raw scale
    np.testing.assert_array_equal(enc.transform([enc.restore_item(read)]), enc.transform([image]))
    assert [type(e.masker()).__name__ for e in (TextEncoder(), enc, AudioEncoder())] == [
        "Clauses",
        "ImageGrid",
        "TimeSegments",
    ]
    assert all(e.masker().kind == e.modality for e in (TextEncoder(), enc, AudioEncoder()))
    assert TextEncoder().read_item(None) == ""
    wave, rate = AudioEncoder(sample_rate=8000).read_item((np.zeros(16000, np.float32), 16000))
    assert rate == 8000 and wave.shape == (8000,)
