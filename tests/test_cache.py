"""The per-item embedding cache: reuse across instances, invalidation on file changes."""

from __future__ import annotations

import os

import numpy as np

from toolkit import ImageEncoder
from toolkit.cache import EmbeddingCache, encoder_key, item_key


class CountingImageEncoder(ImageEncoder):
    calls = 0

    def _encode_batch(self, images):
        type(self).calls += len(images)
        return super()._encode_batch(images)


def test_items_are_encoded_once_across_cache_instances(tmp_path):
    images = [np.eye(4), np.ones((4, 4)) * 0.5, None]
    CountingImageEncoder.calls = 0
    first, available = EmbeddingCache(tmp_path).encode(CountingImageEncoder(pixel_size=4), images)
    again, _ = EmbeddingCache(tmp_path).encode(CountingImageEncoder(pixel_size=4), images[::-1])
    assert CountingImageEncoder.calls == 2  # the None is missing, never encoded
    assert available.tolist() == [True, True, False]
    np.testing.assert_array_equal(again[::-1][:2], first[:2])
    # Other parameters are another encoder: encoded again.
    EmbeddingCache(tmp_path).encode(CountingImageEncoder(pixel_size=2), images)
    assert CountingImageEncoder.calls == 4


def test_changed_files_get_new_keys(tmp_path):
    item = tmp_path / "a.png"
    item.write_bytes(b"12345")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"abc")
    k1, e1 = item_key(str(item)), encoder_key(ImageEncoder(weights=str(weights)))
    item.write_bytes(b"123456")
    weights.write_bytes(b"abcd")
    os.utime(weights, ns=(1, 1))
    assert item_key(str(item)) != k1
    assert encoder_key(ImageEncoder(weights=str(weights))) != e1
    assert item_key("just some text") == item_key("just some text") != item_key("other text")
    assert item_key(None) is None and item_key("") is None


def test_errors_through_the_cache_name_row_and_column(tmp_path):
    import pandas as pd
    import pytest

    items = pd.Series([np.eye(3), np.zeros((2, 2, 2, 2))], name="xray", index=["p1", "p2"])
    with pytest.raises(ValueError, match="row 'p2' of column 'xray'"):
        EmbeddingCache(tmp_path).encode(ImageEncoder(), items)


def test_features_version_is_part_of_the_key_and_n_jobs_is_not(monkeypatch):
    from toolkit import AudioEncoder, ScanEncoder

    for cls in (AudioEncoder, ScanEncoder):
        key = encoder_key(cls())
        assert encoder_key(cls(n_jobs=2)) == key  # same output, same cached blocks
        # A cache written by another version of the features is never served.
        monkeypatch.setattr(cls, "features_version", cls.features_version + 1)
        assert encoder_key(cls()) != key


def test_encoder_key_includes_the_backend_class(monkeypatch):
    from toolkit.encoders.backends import IMAGE_BACKENDS
    from toolkit.encoders.backends.descriptors import Descriptors

    enc = ImageEncoder()
    before = encoder_key(enc)
    assert encoder_key(ImageEncoder()) == before

    class EditedDescriptors(Descriptors):
        """The same backend name, defined by other code: its blocks must not be reused."""

    monkeypatch.setitem(IMAGE_BACKENDS._backends, "descriptors", EditedDescriptors())
    assert encoder_key(enc) != before
    # a backend the registry does not hold is keyed too (the encoder refuses it on fitting)
    assert encoder_key(ImageEncoder(backend="nope")).startswith("ImageEncoder-")
