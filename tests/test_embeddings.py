"""``Embeddings``: float32 blocks by modality name, an availability mask, and their checks."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.embeddings import Embeddings


@pytest.fixture(scope="module")
def emb() -> Embeddings:
    text = np.arange(8, dtype=np.float64).reshape(4, 2)
    audio = np.array([[1.0], [np.nan], [3.0], [4.0]])
    return Embeddings({"text": text, "audio": audio})


def test_blocks_are_float32_and_the_default_mask_marks_nonfinite_rows_absent(emb):
    assert emb.names == ["text", "audio"]
    assert all(b.dtype == np.float32 for b in emb.blocks.values())
    assert emb.mask.tolist() == [[True, True], [True, False], [True, True], [True, True]]
    assert (emb.n_samples, emb.n_modalities, len(emb)) == (4, 2, 4)
    assert emb.dims == {"text": 2, "audio": 1}
    assert "n_samples=4" in repr(emb) and "text: 2" in repr(emb)


def test_a_1d_block_is_one_column_and_names_are_strings():
    out = Embeddings({1: [1.0, 2.0, 3.0]})
    assert out.names == ["1"] and out.blocks["1"].shape == (3, 1)


def test_rows_select_and_index(emb):
    rows = emb[np.array([0, 2])]
    assert rows.n_samples == 2
    np.testing.assert_array_equal(rows.blocks["text"], [[0, 1], [4, 5]])
    assert emb[emb.mask[:, 1]].n_samples == 3
    assert emb[1:3].mask.tolist() == [[True, False], [True, True]]
    only = emb.select(["audio"])
    assert only.names == ["audio"] and only.mask.tolist() == [[True], [False], [True], [True]]
    assert emb.index("audio") == 1
    with pytest.raises(
        KeyError, match="unknown modality 'video'; available: \\['text', 'audio'\\]"
    ):
        emb.index("video")


def test_with_mask_shares_blocks_and_refuses_marking_a_nan_row_available(emb):
    hidden = emb.with_mask(np.zeros((4, 2), dtype=int) + [1, 0])
    assert hidden.blocks["text"] is emb.blocks["text"]
    assert hidden.mask[:, 1].tolist() == [False] * 4 and emb.mask[:, 1].sum() == 3
    with pytest.raises(
        ValueError, match=r"block 'audio' holds NaN or infinite values in rows \[1\]"
    ):
        emb.with_mask(np.ones((4, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 2\), got \(4, 1\)"):
        emb.with_mask(np.ones((4, 1), dtype=bool))
    with pytest.raises(ValueError, match="mask must hold booleans .* values \\[0, 2\\]"):
        emb.with_mask(np.full((4, 2), 2) * np.eye(4, 2, dtype=int))


def test_concat_rows_stacks_blocks_and_masks(emb):
    both = Embeddings.concat_rows([emb, emb[:2]])
    assert both.n_samples == 6
    assert both.mask[:, 1].tolist() == [True, False, True, True, True, False]
    with pytest.raises(ValueError, match="cannot stack Embeddings with modalities"):
        Embeddings.concat_rows([emb, emb.select(["text"])])


@pytest.mark.parametrize(
    ("blocks", "mask", "error", "message"),
    [
        ([np.ones((2, 1))], None, TypeError, "blocks must be a mapping .* got list"),
        ({}, None, ValueError, "at least one modality block"),
        ({"a": np.ones((2, 1)), "b": np.ones((3, 1))}, None, ValueError,
         "block 'b' has 3 rows but the first block has 2"),
        ({"a": np.ones((2, 0))}, None, ValueError, "block 'a' has 0 columns"),
        ({"a": np.ones((2, 1, 1))}, None, ValueError, r"must be 2-D \(n_samples, d\)"),
        ({"a": np.ones((2, 1)) * 1j}, None, ValueError, "block 'a' holds complex numbers"),
        ({"a": np.array([["x"], ["y"]])}, None, TypeError, "block 'a' holds non-numeric"),
        ({"a": [[1.0], [1.0, 2.0]]}, None, ValueError, "block 'a' is not a rectangular array"),
        ({"a": np.array([[1.0], [1e39]])}, None, ValueError,
         r"block 'a' holds values beyond the float32 range .* rows \[1\]"),
        ({"a": np.array([[1.0], [np.nan]])}, [[True], [True]], ValueError,
         r"block 'a' holds NaN or infinite values in rows \[1\]"),
        ({"a": np.ones((2, 1))}, [[0.5], [1.0]], ValueError, "mask must hold booleans"),
    ],
)  # fmt: skip
def test_bad_blocks_and_masks_are_refused_with_a_message(blocks, mask, error, message):
    with pytest.raises(error, match=message):
        Embeddings(blocks, mask)


def test_an_explicit_mask_may_mark_a_finite_row_absent():
    out = Embeddings({"a": np.ones((2, 1)), "b": np.ones((2, 3))}, [[1, 0], [1, 1]])
    assert out.mask.dtype == bool and out.mask.tolist() == [[True, False], [True, True]]
