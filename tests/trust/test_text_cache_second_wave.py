"""Trust, second wave (issue 25): the text encoder, the embedding cache and the datasets.

Bounded cost (text length per cell, the cache's width record, generated arrays, FIFOs never
opened), nothing silently wrong (a blank cache folder, a path holding a newline, a column of
file paths given as texts, a saved TF-IDF vocabulary) and clear errors (``max_length`` above
the model's, a tokenizer that panics, the cache's OS, pickling and memory errors).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import toolkit
from toolkit import MultimodalClassifier, TextEncoder
from toolkit.cache import CacheShardWarning, EmbeddingCache, as_cache, encoder_key
from toolkit.datasets import (
    load_mimic_iv_demo,
    load_pneumoniamnist,
    load_uci_sentences,
    make_clinical_cohort,
    make_sentiment_clips,
)
from toolkit.encoders.base import BaseEncoder
from toolkit.exceptions import ReadError

TEXTS = ["the film was good", "the plot was bad", "not great at all", "a lovely story"]


class DigestEncoder(BaseEncoder):
    """A fixed encoder of files: the first 3 bytes of a SHA-256 of the content."""

    def __init__(self, on_error="raise", batch_size=8, progress=False):
        self.on_error = on_error
        self.batch_size = batch_size
        self.progress = progress

    def _read(self, item):
        return Path(item).read_bytes()

    def _fit(self, decoded) -> None:
        self.n_features_out_ = 3

    def _encode_batch(self, decoded):
        return np.array([list(hashlib.sha256(d).digest()[:3]) for d in decoded], np.float32)


def _no_hang(call, fifos, seconds=30.0):
    """Run ``call`` in a thread; if it is still blocked after ``seconds`` (a FIFO opened for
    reading waits for a writer), release it by opening the FIFOs for writing, and fail."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(5)
        pytest.fail(f"blocked on a FIFO for {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture
def bert_copy(tiny_bert, tmp_path) -> Path:
    """A copy of the tiny BERT folder that a test may alter."""
    return Path(shutil.copytree(tiny_bert, tmp_path / "bert"))


# -- blow-ups and hangs ---------------------------------------------------------------------


def test_a_text_cell_over_max_chars_is_refused_at_fit_and_at_predict():
    long = "word " * 300  # 1,500 characters
    column = pd.Series(TEXTS + [long], index=list("abcde"), name="note")
    with pytest.raises(ReadError) as err:
        TextEncoder(n_components=2, max_chars=1000).fit(column)
    message = str(err.value)
    for part in ("row 'e' of column 'note'", "1,500 characters", "max_chars=1,000",
                 "TextEncoder(max_chars=1500)"):  # fmt: skip
        assert part in message
    enc = TextEncoder(n_components=2, max_chars=1000, random_state=0).fit(column[:4])
    with pytest.raises(ReadError, match=r"row 'e' of column 'note': text of 1,500 characters"):
        enc.transform(column)
    with pytest.warns(UserWarning, match="1,500 characters"):
        block, present = enc.set_params(on_error="missing").encode(column)
    assert present.tolist() == [True] * 4 + [False] and np.isnan(block[4]).all()


def test_the_default_text_limit_holds_at_predict_time():
    enc = TextEncoder(n_components=2, random_state=0).fit(TEXTS)
    assert enc.max_chars == 100_000
    with pytest.raises(ReadError, match=r"100,001 characters is longer than max_chars=100,000"):
        enc.transform(["x" * 100_001])  # refused before the vectorizer sees it


def test_tfidf_vectorizes_long_batches_in_bounded_groups_with_the_same_values(monkeypatch):
    from toolkit.encoders.backends import tfidf

    texts = [f"{w} film number {i}" for i, w in enumerate(["good", "bad", "fine", "odd"] * 5)]
    enc = TextEncoder(n_components=3, random_state=0).fit(texts)
    whole = enc.transform(texts)
    assert tfidf.char_groups([5, 5, 5, 30, 1], 10) == [[0, 1], [2], [3], [4]]
    monkeypatch.setattr(tfidf, "TRANSFORM_CHARS", 40)  # about two texts per group
    np.testing.assert_allclose(enc.transform(texts), whole, atol=1e-6)


def test_a_huge_width_record_is_a_miss_with_a_warning_never_read(tmp_path):
    item = tmp_path / "a.bin"
    item.write_bytes(b"abc")
    first, _ = EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), [str(item)])
    [record] = (tmp_path / "cache").glob("*/width")
    record.unlink()
    with open(record, "wb") as fh:  # sparse: 64 MiB on paper, nothing on disk
        fh.truncate(64 * 1024**2)
    with pytest.warns(CacheShardWarning, match=r"width record '.*' is not used .*67,108,864"):
        again, present = EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), [str(item)])
    np.testing.assert_array_equal(again, first)
    assert present.tolist() == [True]


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("loader", "relative"),
    [
        (load_uci_sentences, "uci_sentences/amazon_cells_labelled.txt"),
        (load_pneumoniamnist, "pneumoniamnist/pneumoniamnist.npz"),
        (load_mimic_iv_demo, "mimic_iv_demo/hosp/admissions.csv.gz"),
    ],
)
def test_dataset_loaders_refuse_a_fifo_without_opening_it(tmp_path, loader, relative):
    fifo = _fifo(tmp_path / relative)
    with pytest.raises(ValueError, match=r"dataset file '.*' is a FIFO \(named pipe\), not a"):
        _no_hang(lambda: loader(tmp_path), [fifo])


def test_weights_on_a_fifo_are_refused_without_opening(tmp_path):
    import torchvision  # noqa: F401  (imported first: slow on a loaded machine)

    from toolkit import ImageEncoder

    fifo = _fifo(tmp_path / "weights.pt")
    enc = ImageEncoder(backend="torchvision", model="resnet18", weights=str(fifo), device="cpu")
    with pytest.raises(ReadError, match=r"weights path '.*weights.pt' is a FIFO"):
        _no_hang(lambda: enc.fit([np.zeros((8, 8))]), [fifo])


def test_a_model_folder_holding_a_fifo_is_refused_before_loading(bert_copy):
    import transformers  # noqa: F401  (imported first: slow on a loaded machine)

    (bert_copy / "config.json").unlink()
    fifo = _fifo(bert_copy / "config.json")
    enc = TextEncoder(backend="transformers", model=str(bert_copy), device="cpu")
    with pytest.raises(ReadError, match=r"model path '.*config.json' is a FIFO"):
        _no_hang(lambda: enc.fit(TEXTS), [fifo])


def test_generators_bound_the_bytes_they_generate():
    with pytest.raises(ValueError, match=r"above max_bytes=1,073,741,824 \(1.0 GiB\)"):
        make_clinical_cohort(10**6, scan_size=32, max_bytes=2**30)
    with pytest.raises(ValueError) as err:
        make_clinical_cohort(10**6, scan_size=32)  # the default 4 GiB
    assert "make_clinical_cohort(n_samples=1000000, scan_size=32" in str(err.value)
    assert "131,072,000,000 bytes (122.1 GiB)" in str(err.value)
    assert "pass a larger max_bytes" in str(err.value)
    with pytest.raises(ValueError, match=r"make_sentiment_clips\(n_samples=1000000.*21.7 GiB"):
        make_sentiment_clips(10**6)
    exact = 4 * 3 * 8**3  # three 8^3 float32 scans
    assert len(make_clinical_cohort(3, scan_size=8, max_bytes=exact, random_state=0).frame) == 3
    with pytest.raises(ValueError, match="6,144 bytes"):
        make_clinical_cohort(3, scan_size=8, max_bytes=exact - 1)


# -- silently wrong -------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["", "   ", "cache\nfolder"])
def test_a_blank_or_control_character_cache_folder_is_refused(location):
    with pytest.raises(ValueError, match="blank|control character"):
        as_cache(location)
    with pytest.raises(ValueError, match="blank|control character"):
        EmbeddingCache(location)


def test_a_memory_that_is_no_cache_is_refused_not_ignored():
    with pytest.raises(TypeError, match=r"memory must be None, a folder path, .* got int"):
        as_cache(123)
    import joblib

    assert as_cache(joblib.Memory(None)) is None  # caching turned off on purpose


def test_a_path_holding_a_newline_is_keyed_on_its_file_not_served_stale(tmp_path):
    item = tmp_path / "scan\n01.bin"
    item.write_bytes(b"first content")
    first, _ = EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), [str(item)])
    item.write_bytes(b"second content, longer")
    again, _ = EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), [str(item)])
    expected = DigestEncoder().fit([]).transform([str(item)])
    np.testing.assert_array_equal(again, expected)
    assert not np.array_equal(again, first)


def test_a_column_of_text_file_paths_is_refused_with_the_fix(tmp_path):
    paths = []
    for i, text in enumerate(TEXTS):
        paths.append(tmp_path / f"note{i}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    column = pd.Series([str(p) for p in paths], name="note")
    with pytest.raises(ValueError) as err:
        TextEncoder(n_components=2).fit(column)
    assert "every cell of column 'note' names a file (e.g. row 0:" in str(err.value)
    assert "read_text(encoding='utf-8')" in str(err.value)
    with pytest.raises(ValueError, match="names a file"):  # paths that do not exist yet
        TextEncoder(n_components=2).fit(["notes/a.txt", "notes/b.txt", None])
    enc = TextEncoder(n_components=2, random_state=0).fit(TEXTS)
    with pytest.raises(ValueError, match="names a file"):  # at predict time too
        enc.transform(column)
    # Texts mentioning a file, and a column with one path among texts, are texts.
    mixed = ["saved it as notes.txt", str(paths[0]), "the plot was bad", "a lovely story"]
    assert enc.transform(mixed).shape == (4, 2)


def _saved_bytes(folder: Path) -> bytes:
    """Every byte of a saved model, zip members (model.skops) unpacked."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                out += [zf.read(name) for name in zf.namelist()]
        else:
            out.append(path.read_bytes())
    return b"\n".join(out)


@pytest.fixture(scope="module")
def notes():
    words = ["zanzibarite", "quokkaphile", "brontosaurine", "xylophagous"]
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 6)
    text = [f"patient {words[i % 4]} today {i}" for i in range(len(y))]
    return pd.DataFrame({"note": text, "age": rng.normal(50, 10, 12)}), y, words


@pytest.mark.parametrize(("backend", "keeps"), [("hashing", False), ("tfidf", True)])
def test_the_hashing_backend_saves_no_training_words(tmp_path, notes, backend, keeps):
    df, y, words = notes
    enc = TextEncoder(backend=backend, n_components=3, random_state=0)
    clf = MultimodalClassifier([("text", enc, "note")], random_state=0).fit(df, y)
    assert clf.encoders_["text"].keeps_vocabulary_ is keeps
    folder = toolkit.save(clf, tmp_path / "model")
    stored = _saved_bytes(folder)
    found = [w for w in words if w.encode() in stored]
    assert found == (words if keeps else [])
    loaded = toolkit.load(folder)
    np.testing.assert_allclose(loaded.predict_proba(df), clf.predict_proba(df), atol=1e-6)


def test_keeps_vocabulary_needs_a_fitted_encoder():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TextEncoder().keeps_vocabulary_  # noqa: B018
    assert getattr(TextEncoder(), "keeps_vocabulary_", None) is None


# -- unclear errors -------------------------------------------------------------------------


def test_max_length_above_the_models_is_refused_naming_both(tiny_bert):
    enc = TextEncoder(backend="transformers", model=str(tiny_bert), max_length=100, device="cpu")
    with pytest.raises(ValueError) as err:
        enc.fit(TEXTS)
    assert "TextEncoder(max_length=100) is above the 64 tokens the model" in str(err.value)
    assert "pass max_length<=64" in str(err.value)
    default = TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu").fit(TEXTS)
    assert default.max_length_ == 64  # min(256, the model's 64)
    long = " ".join(["good"] * 200)  # 200+ tokens: truncated to the model's limit
    assert np.isfinite(default.transform([long])).all()


def _crash_the_tokenizer(folder: Path) -> None:
    """A post-processor naming a special token it does not define: the tokenizers library
    panics (PanicException, a BaseException) on the first text it encodes."""
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "[NOPE]", "type_id": 0}},
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {},
    }
    path.write_text(json.dumps(spec), encoding="utf-8")


def test_a_tokenizer_that_panics_is_a_clear_error_naming_it(bert_copy):
    _crash_the_tokenizer(bert_copy)
    enc = TextEncoder(backend="transformers", model=str(bert_copy), device="cpu")
    with pytest.raises(ValueError) as err:
        enc.fit(TEXTS)
    assert f"the tokenizer of '{bert_copy}' (its tokenizer.json) crashed" in str(err.value)
    assert "PanicException" in str(err.value) and "re-save the tokenizer" in str(err.value)


def test_a_sentence_model_whose_tokenizer_panics_is_a_clear_error(bert_copy, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(bert_copy), max_seq_length=16)
    pooling = models.Pooling(word.get_embedding_dimension())
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(tmp_path / "sbert"))
    _crash_the_tokenizer(tmp_path / "sbert")
    enc = TextEncoder(backend="sentence-transformers", model=str(tmp_path / "sbert"))
    enc.set_params(device="cpu").fit(TEXTS)
    with pytest.raises(ValueError, match=r"tokenizer of '.*sbert' \(its tokenizer.json\) crashed"):
        enc.transform(TEXTS)


def test_rust_panic_guard_lets_interrupts_through():
    from toolkit.encoders.backends.hub import rust_panics

    for exc in (KeyboardInterrupt(), SystemExit(3)):
        with pytest.raises(type(exc)), rust_panics("m", "tokenizing"):
            raise exc


def test_cache_os_errors_name_the_file_and_what_to_do(tmp_path):
    item = tmp_path / "a.bin"
    item.write_bytes(b"abc")
    (tmp_path / "taken").write_text("a file where the cache folder should be")
    with pytest.raises(OSError) as err:
        EmbeddingCache(tmp_path / "taken").encode(DigestEncoder(), [str(item)])
    message = str(err.value)
    assert "the embedding cache could not write" in message and "taken" in message
    assert "memory=None" in message and "[Errno" not in message


def test_cache_unpicklable_items_name_the_row(tmp_path):
    items = pd.Series([b"ok", threading.Lock()], index=["p1", "p2"], name="blob")
    with pytest.raises(TypeError) as err:
        EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), items)
    message = str(err.value)
    assert message.startswith("row 'p2' of column 'blob': the embedding cache cannot key a")
    assert "memory=None" in message


def test_cache_memory_error_reading_a_shard_names_it(tmp_path, monkeypatch):
    import toolkit.cache as cache_module

    item = tmp_path / "a.bin"
    item.write_bytes(b"abc")
    EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), [str(item)])

    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr(cache_module, "_read_npy", no_memory)
    with pytest.raises(MemoryError, match=r"shard '.*\.npz' does not fit in memory .*delete"):
        EmbeddingCache(tmp_path / "cache").encode(DigestEncoder(), [str(item)])


def test_encoder_key_of_an_unpicklable_parameter_is_a_clear_error():
    enc = DigestEncoder(on_error=threading.Lock())
    with warnings.catch_warnings(), pytest.raises(TypeError, match="cannot key DigestEncoder"):
        encoder_key(enc)
