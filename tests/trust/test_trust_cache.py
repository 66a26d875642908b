"""Caches never serve stale or corrupt data: content fingerprints of file and folder items
and of weights, shard checks in the embedding cache, and the fingerprinted index of
``encode_manifest`` / ``load_embeddings``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import ImageEncoder
from toolkit.cache import (
    CacheShardWarning,
    EmbeddingCache,
    encoder_key,
    fingerprint_path,
    item_key,
)
from toolkit.distributed import encode_manifest, encode_partition, load_embeddings
from toolkit.encoders.base import BaseEncoder

KIB = 1024


class BytesEncoder(BaseEncoder):
    """A fixed encoder of files and folders: the first ``width`` bytes of a SHA-256 of the
    content (a folder: its files' names and bytes). Counts the items it reads."""

    reads = 0

    def __init__(self, width=4, weights=None, on_error="raise", batch_size=16, progress=False):
        self.width = width
        self.weights = weights
        self.on_error = on_error
        self.batch_size = batch_size
        self.progress = progress

    def _read(self, item):
        type(self).reads += 1
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return b"".join(str(p.relative_to(path)).encode() + p.read_bytes() for p in files)
        return path.read_bytes()

    def _fit(self, decoded) -> None:
        self.n_features_out_ = self.width

    def _encode_batch(self, decoded):
        digests = [hashlib.sha256(d).digest()[: self.width] for d in decoded]
        return np.array([np.frombuffer(d, dtype=np.uint8) for d in digests], dtype=np.float32)


def _expected(paths, width=4):
    return BytesEncoder(width=width).fit([]).transform([str(p) for p in paths])


def _write(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


def _rewrite_keeping_stat(path: Path, offset: int, *, pause: float = 0.0) -> None:
    """Flip one byte in place and restore size, atime and mtime (as cp -p, rsync -t do)."""
    st = path.stat()
    time.sleep(pause)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


# -- stale file items ----------------------------------------------------------------------


@pytest.mark.parametrize("fingerprint", ["sampled", "full"])
@pytest.mark.parametrize("offset", [0, 150 * KIB, 300 * KIB - 1])  # start, middle, end
def test_file_rewritten_with_old_size_and_mtime_is_encoded_again(tmp_path, fingerprint, offset):
    item = _write(tmp_path / "data" / "a.bin", 300 * KIB, seed=0)
    cache = EmbeddingCache(tmp_path / "cache", fingerprint=fingerprint)
    first, _ = cache.encode(BytesEncoder(), [str(item)])
    _rewrite_keeping_stat(item, offset)
    BytesEncoder.reads = 0
    again, available = EmbeddingCache(tmp_path / "cache", fingerprint=fingerprint).encode(
        BytesEncoder(), [str(item)]
    )
    assert BytesEncoder.reads == 1 and available.tolist() == [True]
    np.testing.assert_array_equal(again, _expected([item]))
    assert not np.array_equal(again, first)


def test_rewrite_outside_the_sampled_blocks_is_caught_by_ctime(tmp_path):
    # 400 KiB: samples cover [0, 64K), [168K, 232K), [336K, 400K); byte 100K is outside.
    item = _write(tmp_path / "a.bin", 400 * KIB, seed=1)
    before, content = item_key(str(item)), fingerprint_path(item)[1][-1]
    full = item_key(str(item), fingerprint="full")
    _rewrite_keeping_stat(item, 100 * KIB, pause=0.05)
    assert item_key(str(item)) != before
    assert fingerprint_path(item)[1][-1] == content  # the sampled blocks did not see it
    assert item_key(str(item), fingerprint="full") != full  # the full hash does


def test_file_replaced_by_copy_with_preserved_times_gets_a_new_key(tmp_path):
    item = _write(tmp_path / "a.bin", 10 * KIB, seed=2)
    other = _write(tmp_path / "b.bin", 10 * KIB, seed=3)
    st = item.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = item_key(str(item))
    shutil.copy2(other, item)  # cp -p: same size, same mtime, other bytes
    assert item.stat().st_mtime_ns == st.st_mtime_ns
    assert item_key(str(item)) != before
    # rsync -t style: a new file renamed over the old one
    tmp = _write(tmp_path / ".a.bin.tmp", 10 * KIB, seed=4)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    key = item_key(str(item))
    tmp.replace(item)
    assert item_key(str(item)) != key


def test_full_fingerprint_ignores_metadata_sampled_does_not(tmp_path):
    item = _write(tmp_path / "a.bin", 5 * KIB, seed=5)
    sampled, full = item_key(str(item)), item_key(str(item), fingerprint="full")
    time.sleep(0.02)
    os.utime(item, ns=(1_000_000_000, 2_000_000_000))  # touch: content unchanged
    assert item_key(str(item), fingerprint="full") == full
    assert item_key(str(item)) != sampled


# -- stale weights ---------------------------------------------------------------------------


def test_weights_file_rewritten_with_old_stat_gets_a_new_encoder_key(tmp_path):
    weights = _write(tmp_path / "w.pt", 200 * KIB, seed=6)
    key = encoder_key(BytesEncoder(weights=str(weights)))
    full = encoder_key(BytesEncoder(weights=str(weights)), fingerprint="full")
    _rewrite_keeping_stat(weights, 70 * KIB)  # outside the samples: ctime catches it
    assert encoder_key(BytesEncoder(weights=str(weights))) != key
    assert encoder_key(BytesEncoder(weights=str(weights)), fingerprint="full") != full
    # the cache keeps them apart: the items are encoded again under the new weights
    item = _write(tmp_path / "x.bin", 100, seed=7)
    cache = EmbeddingCache(tmp_path / "cache")
    cache.encode(BytesEncoder(weights=str(weights)), [str(item)])
    _rewrite_keeping_stat(weights, 0)
    BytesEncoder.reads = 0
    EmbeddingCache(tmp_path / "cache").encode(BytesEncoder(weights=str(weights)), [str(item)])
    assert BytesEncoder.reads == 1


@pytest.mark.parametrize("change", ["nested file rewritten", "file renamed", "file added"])
def test_weights_folder_keys_on_the_files_inside_it(tmp_path, change):
    folder = tmp_path / "model"
    inner = _write(folder / "sub" / "weights.bin", 4 * KIB, seed=8)
    _write(folder / "config.json", 64, seed=9)
    key = encoder_key(BytesEncoder(weights=str(folder)))
    if change == "nested file rewritten":
        _rewrite_keeping_stat(inner, 10)
    elif change == "file renamed":
        inner.rename(inner.with_name("other.bin"))
    else:
        _write(folder / "sub" / "extra.bin", 1, seed=10)
    assert encoder_key(BytesEncoder(weights=str(folder))) != key


def test_weights_named_inside_nested_parameters_are_fingerprinted(tmp_path):
    weights = _write(tmp_path / "w.pt", 100, seed=11)
    key = encoder_key(BytesEncoder(weights=[str(weights)]))
    _rewrite_keeping_stat(weights, 0)
    assert encoder_key(BytesEncoder(weights=[str(weights)])) != key
    key = encoder_key(BytesEncoder(weights={"head": str(weights)}))
    _rewrite_keeping_stat(weights, 1)
    assert encoder_key(BytesEncoder(weights={"head": str(weights)})) != key


def test_encoder_key_follows_the_encoder_source(tmp_path, monkeypatch):
    import importlib
    import sys

    source = (
        "from toolkit.encoders.base import BaseEncoder\n\n"
        "class EditedEncoder(BaseEncoder):\n"
        "    def __init__(self, on_error='raise'):\n"
        "        self.on_error = on_error\n"
        "    def _fit(self, decoded):\n"
        "        self.n_features_out_ = {width}\n"
    )
    module = tmp_path / "edited_encoder_mod.py"
    module.write_text(source.format(width=2))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edited_encoder_mod", raising=False)
    mod = importlib.import_module("edited_encoder_mod")
    key = encoder_key(mod.EditedEncoder())
    assert encoder_key(mod.EditedEncoder()) == key
    module.write_text(source.format(width=30))  # the class edited in place, same version
    mod = importlib.reload(mod)
    assert encoder_key(mod.EditedEncoder()) != key


# -- folder items ----------------------------------------------------------------------------


def _series(tmp_path, n=3):
    folders = []
    for s in range(n):
        for k in range(3):
            _write(tmp_path / f"series{s}" / f"slice{k}.dcm", 2 * KIB, seed=100 * s + k)
        folders.append(tmp_path / f"series{s}")
    return folders


@pytest.mark.parametrize("change", ["rewritten in place", "added", "removed", "renamed"])
def test_folder_item_keys_on_its_files_and_is_encoded_again(tmp_path, change):
    folders = _series(tmp_path / "data")
    items = pd.Series([str(f) for f in folders], name="ct", index=["p1", "p2", "p3"])
    EmbeddingCache(tmp_path / "cache").encode(BytesEncoder(), items)
    target = folders[1] / "slice2.dcm"
    if change == "rewritten in place":
        _rewrite_keeping_stat(target, 5)
    elif change == "added":
        _write(folders[1] / "nested" / "slice3.dcm", 10, seed=50)
    elif change == "removed":
        target.unlink()
    else:
        target.rename(folders[1] / "slice9.dcm")
    BytesEncoder.reads = 0
    block, available = EmbeddingCache(tmp_path / "cache").encode(BytesEncoder(), items)
    assert BytesEncoder.reads == 1 and available.all()
    np.testing.assert_array_equal(block, _expected(folders))


def test_folder_item_limit_names_row_column_and_folder(tmp_path):
    folders = _series(tmp_path / "data", n=1)
    items = pd.Series([str(folders[0])], name="ct", index=["p7"])
    with pytest.raises(ValueError, match=r"row 'p7' of column 'ct': folder .*series0' holds more"):
        EmbeddingCache(tmp_path / "c", max_folder_files=2).encode(BytesEncoder(), items)
    block, _ = EmbeddingCache(tmp_path / "c", max_folder_files=3).encode(BytesEncoder(), items)
    np.testing.assert_array_equal(block, _expected(folders))
    with pytest.raises(ValueError, match="max_folder_files must be a positive integer, got 0"):
        EmbeddingCache(tmp_path, max_folder_files=0)
    with pytest.raises(ValueError, match="sample_bytes must be a positive integer, got True"):
        EmbeddingCache(tmp_path, sample_bytes=True)
    assert EmbeddingCache(tmp_path).max_folder_files == 100_000


def test_sample_bytes_sets_what_the_sampled_hash_reads(tmp_path):
    item = _write(tmp_path / "a.bin", 100, seed=12)  # default: 100 bytes hashed whole
    small, default = fingerprint_path(item, sample_bytes=4), fingerprint_path(item)
    _rewrite_keeping_stat(item, 20)  # outside [0,4), [48,52), [96,100)
    assert fingerprint_path(item, sample_bytes=4)[1][-1] == small[1][-1]
    assert fingerprint_path(item)[1][-1] != default[1][-1]
    _rewrite_keeping_stat(item, 50)
    assert fingerprint_path(item, sample_bytes=4)[1][-1] != small[1][-1]
    assert EmbeddingCache(tmp_path).sample_bytes == 64 * KIB
    with pytest.raises(ValueError, match="sample_bytes must be a positive integer, got 0"):
        fingerprint_path(item, sample_bytes=0)


def test_symlink_loops_fifos_and_text_items_are_not_walked_or_opened(tmp_path):
    folder = tmp_path / "series"
    _write(folder / "a.dcm", 10, seed=13)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    assert [rel for rel, _ in fingerprint_path(folder)[1]] == ["a.dcm"]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(key=item_key(str(fifo))), daemon=True)
    worker.start()
    worker.join(5)
    assert "key" in result  # a FIFO is keyed on its inode, never opened (no hang)
    # A text encoder's items are text: "." is not the working directory's files.
    from toolkit.cache import encoder_reads_paths
    from toolkit.encoders.text import TextEncoder

    assert not encoder_reads_paths(TextEncoder())
    assert item_key(".", reads_paths=False) == item_key(".", reads_paths=False)
    assert item_key(".", reads_paths=False, max_folder_files=1) is not None


def test_fingerprint_choice_is_validated(tmp_path):
    with pytest.raises(
        ValueError, match=r"fingerprint must be one of \['sampled', 'full'\], got 'md5'"
    ):
        EmbeddingCache(tmp_path, fingerprint="md5")
    with pytest.raises(ValueError, match="fingerprint must be one of"):
        encode_manifest(pd.DataFrame({"a": [1]}), [], tmp_path, fingerprint=None)
    assert "fingerprint='full'" in repr(EmbeddingCache(tmp_path, "full"))


def test_estimator_memory_with_full_fingerprint_sees_rewritten_files(tmp_path):
    from PIL import Image

    from toolkit import MultimodalClassifier

    rng = np.random.default_rng(14)
    paths = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path, compress_level=0)
        paths.append(str(path))
    X, y = pd.DataFrame({"img": paths}), np.array([0, 1] * 3)
    for memory in (tmp_path / "cache", EmbeddingCache(tmp_path / "full", fingerprint="full")):
        clf = MultimodalClassifier([("img", ImageEncoder(pixel_size=8), "img")], memory=memory)
        before = clf.fit(X, y).embed(X).blocks["img"]
        st = Path(paths[0]).stat()
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
            paths[0], compress_level=0
        )
        os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
        assert Path(paths[0]).stat().st_size == st.st_size  # size and mtime as before
        after = clf.fit(X, y).embed(X).blocks["img"]
        fresh = ImageEncoder(pixel_size=8).fit([]).transform(paths)
        np.testing.assert_allclose(after, fresh, rtol=1e-6)
        assert not np.allclose(after[0], before[0]) and np.allclose(after[1:], before[1:])


# -- corrupt cache shards ------------------------------------------------------------------


def _npy_member(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _corrupt(shard: Path, kind: str) -> None:
    with np.load(shard) as data:
        keys, values = data["keys"], data["values"]
    if kind == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif kind == "garbage":
        shard.write_bytes(np.random.default_rng(0).bytes(300))
    elif kind == "wrong width":
        np.savez(shard, keys=keys, values=np.zeros((len(keys), 5), np.float32))
    elif kind == "length mismatch":
        np.savez(shard, keys=keys, values=values[:-1])
    elif kind == "non-finite":
        bad = values.copy()
        bad[0, 0] = np.inf
        np.savez(shard, keys=keys, values=bad)
    elif kind == "wrong dtype":
        np.savez(shard, keys=keys, values=values.astype(np.float64))
    elif kind == "duplicate keys":
        np.savez(shard, keys=np.r_[keys[:1], keys[:1]], values=values[:2])
    elif kind == "pickled keys":
        np.savez(shard, keys=keys.astype(object), values=values)
    elif kind == "compressed":
        np.savez_compressed(shard, keys=keys, values=values)
    elif kind == "extra member":
        np.savez(shard, keys=keys, values=values, more=values)
    elif kind == "header lies":  # declares 10**9 rows but stores a few: nothing allocated
        import io

        lie = io.BytesIO()
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 4)}
        np.lib.format.write_array_header_1_0(lie, header)
        lie.write(values.tobytes())
        with zipfile.ZipFile(shard, "w") as zf:
            zf.writestr("keys.npy", _npy_member(keys))
            zf.writestr("values.npy", lie.getvalue())
    elif kind == "duplicate members":  # a second values.npy that a naive reader would take
        with pytest.warns(UserWarning, match="Duplicate name"):
            with zipfile.ZipFile(shard, "a") as zf:
                zf.writestr("values.npy", _npy_member(np.zeros_like(values)))
    elif kind == "fifo":
        shard.unlink()
        os.mkfifo(shard)


KINDS = [
    "truncated",
    "garbage",
    "wrong width",
    "length mismatch",
    "non-finite",
    "wrong dtype",
    "duplicate keys",
    "pickled keys",
    "compressed",
    "extra member",
    "header lies",
    "duplicate members",
    "fifo",
]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_shard_is_set_aside_warned_about_and_recomputed(tmp_path, kind):
    items = [str(_write(tmp_path / "data" / f"{i}.bin", 50, seed=20 + i)) for i in range(3)]
    EmbeddingCache(tmp_path / "cache").encode(BytesEncoder(), items)
    [shard] = (tmp_path / "cache").glob("*/*.npz")
    _corrupt(shard, kind)
    BytesEncoder.reads = 0
    with pytest.warns(CacheShardWarning, match=rf"shard '.*{shard.name}' is not used: .*"):
        block, available = EmbeddingCache(tmp_path / "cache").encode(BytesEncoder(), items)
    assert available.all() and BytesEncoder.reads == 3
    np.testing.assert_array_equal(block, _expected(items))
    assert (shard.parent / f"{shard.name}.rejected").exists()
    assert len(list(shard.parent.glob("*.npz"))) == 1  # the recomputed shard, valid
    BytesEncoder.reads = 0
    EmbeddingCache(tmp_path / "cache").encode(BytesEncoder(), items)
    assert BytesEncoder.reads == 0


class CountingFits(BytesEncoder):
    fits = 0

    def _fit(self, decoded):
        type(self).fits += 1
        super()._fit(decoded)


@pytest.mark.parametrize("record", ["kept", "deleted", "garbage"])
def test_entries_of_different_widths_never_mix(tmp_path, record):
    items = [str(_write(tmp_path / "data" / f"{i}.bin", 50, seed=30 + i)) for i in range(4)]
    EmbeddingCache(tmp_path / "cache").encode(CountingFits(), items[:2])
    folder = next((tmp_path / "cache").iterdir())
    assert (folder / "width").read_text() == "4"
    keys = np.asarray([item_key(p) for p in items[2:]])
    np.savez(folder / "zzz.npz", keys=keys, values=np.ones((2, 7), np.float32))
    if record == "deleted":
        (folder / "width").unlink()
    elif record == "garbage":
        (folder / "width").write_text("7; rm -rf /")
    CountingFits.fits = 0
    with pytest.warns(CacheShardWarning) as caught:
        block, _ = EmbeddingCache(tmp_path / "cache").encode(CountingFits(), items[2:])
    messages = [str(w.message) for w in caught]
    assert any(
        "zzz.npz' is not used: its entries are 7 wide, the encoder's 4" in m for m in messages
    )
    np.testing.assert_array_equal(block, _expected(items[2:]))
    assert CountingFits.fits == 1  # loaded to encode the rejected items again (or to decide)
    assert (folder / "width").read_text() == "4"
    if record == "garbage":
        assert any("width record" in m and "is not a positive integer" in m for m in messages)


def test_fully_cached_items_do_not_load_the_encoder(tmp_path):
    items = [str(_write(tmp_path / "data" / f"{i}.bin", 50, seed=40 + i)) for i in range(4)]
    EmbeddingCache(tmp_path / "cache").encode(CountingFits(), items)
    CountingFits.fits = 0
    block, _ = EmbeddingCache(tmp_path / "cache").encode(CountingFits(), items)
    assert CountingFits.fits == 0  # all cached: the encoder is not loaded
    np.testing.assert_array_equal(block, _expected(items))


# -- encode_manifest / load_embeddings -------------------------------------------------------


def _manifest(tmp_path, n=10, ids=None):
    files = [_write(tmp_path / "items" / f"{i}.bin", 40, seed=200 + i) for i in range(n)]
    frame = pd.DataFrame({"item": [str(f) for f in files], "other": [str(f) for f in files]})
    frame["rid"] = [f"r{i:02d}" for i in range(n)] if ids is None else ids
    return frame


MODS = [("bytes", BytesEncoder(), "item")]


def test_same_job_resumes_and_recomputes_only_missing_or_bad_shards(tmp_path):
    frame = _manifest(tmp_path)
    out = tmp_path / "emb"
    encode_manifest(frame, MODS, out, partition_size=4, id_column="rid")
    (out / "part-00001.npz").unlink()
    _corrupt_manifest_shard(out / "part-00002.npz")
    BytesEncoder.reads = 0
    with pytest.warns(CacheShardWarning, match=r"part-00002.npz' was encoded again: .*cannot be"):
        encode_manifest(frame, MODS, out, partition_size=4, id_column="rid")
    assert BytesEncoder.reads == 4 + 2  # partitions 1 and 2 only
    emb, ids = load_embeddings(out)
    np.testing.assert_array_equal(emb.blocks["bytes"], _expected(frame["item"]))
    assert ids.tolist() == frame["rid"].tolist()


def _corrupt_manifest_shard(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_changed_input_file_is_recomputed_on_rerun(tmp_path):
    frame = _manifest(tmp_path)
    out = tmp_path / "emb"
    encode_manifest(frame, MODS, out, partition_size=5, id_column="rid")
    _rewrite_keeping_stat(Path(frame["item"][7]), 3)
    BytesEncoder.reads = 0
    with pytest.warns(CacheShardWarning, match="part-00001.npz' was encoded again: its finger"):
        encode_manifest(frame, MODS, out, partition_size=5, id_column="rid")
    assert BytesEncoder.reads == 5
    emb, _ = load_embeddings(out)
    np.testing.assert_array_equal(emb.blocks["bytes"], _expected(frame["item"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("frame", r"another frame \(differing: n_rows \(index 10, now 8\), the row id values\)"),
        ("ids", r"another frame \(differing: the row id values\)"),
        ("partition_size", r"another frame \(differing: partition_size \(index 4, now 5\)\)"),
        (
            "modalities",
            r"other modalities \(differing: modalities \(index \['bytes'\], now \['b2'\]",
        ),
        ("columns", r"other columns \(differing: columns of modalities \['bytes'\]\)"),
        ("params", r"other encoders, encoder parameters or weights \(differing: encoders of mo"),
        (
            "fingerprint",
            r"fingerprint choice \(differing: fingerprint \(index 'sampled', now 'full'",
        ),
        (
            "weights rewritten",
            r"parameters or weights \(differing: encoders of modalities \['bytes'",
        ),
    ],
)
def test_folder_of_another_job_is_refused(tmp_path, change, message):
    frame = _manifest(tmp_path)
    out = tmp_path / "emb"
    weights = _write(tmp_path / "w.bin", 100, seed=60)
    mods = [("bytes", BytesEncoder(weights=str(weights)), "item")]
    encode_manifest(frame, mods, out, partition_size=4, id_column="rid")
    kwargs = {"partition_size": 4, "id_column": "rid"}
    if change == "frame":
        frame = frame.iloc[:8]
    elif change == "ids":
        frame = frame.assign(rid=[f"s{i:02d}" for i in range(10)])
    elif change == "partition_size":
        kwargs["partition_size"] = 5
    elif change == "modalities":
        mods = [("b2", BytesEncoder(), "item")]
    elif change == "columns":
        mods = [("bytes", BytesEncoder(), "other")]
    elif change == "params":
        mods = [("bytes", BytesEncoder(width=3), "item")]
    elif change == "weights rewritten":
        _rewrite_keeping_stat(weights, 0)
    else:
        kwargs["fingerprint"] = "full"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match=message) as info:
        encode_manifest(frame, mods, out, **kwargs)
    assert "Encode into another folder" in str(info.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("corrupt index", r"index.json' cannot be read \(JSONDecodeError"),
        ("old index", r"not an index of this toolkit version .* records no fingerprint"),
        ("shards without index", r"holds shards \['part-00000.npz'.* but no index.json"),
    ],
)
def test_folder_whose_shards_cannot_be_checked_is_refused(tmp_path, state, message):
    frame = _manifest(tmp_path)
    out = tmp_path / "emb"
    encode_manifest(frame, MODS, out, partition_size=4, id_column="rid")
    index = out / "index.json"
    if state == "corrupt index":
        index.write_text("{not json")
    elif state == "old index":
        index.write_text(json.dumps({"modalities": ["bytes"], "partitions": ["part-00000.npz"]}))
    else:
        index.unlink()
    with pytest.raises(ValueError, match=message):
        encode_manifest(frame, MODS, out, partition_size=4, id_column="rid")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("swapped", r"part-00000.npz' does not match .*index.json': its fingerprint differs"),
        ("truncated", r"part-00001.npz' does not match .*cannot be read"),
        ("non-finite", r"part-00000.npz' does not match .*block 'bytes' holds non-finite"),
        ("incomplete", r"the encoding did not finish; re-run encode_manifest"),
        ("escaping name", r"is malformed .*not a plain .npz file name"),
        ("no partitions", r"is malformed \(a field has the wrong type"),
        ("missing field", r"is malformed \(missing 'widths'\)"),
    ],
)
def test_load_embeddings_refuses_shards_that_do_not_match_the_index(tmp_path, tamper, message):
    frame = _manifest(tmp_path, n=8)
    out = tmp_path / "emb"
    encode_manifest(frame, MODS, out, partition_size=4, id_column="rid")
    index = json.loads((out / "index.json").read_text())
    if tamper == "swapped":
        shutil.copy(out / "part-00001.npz", out / "part-00000.npz")
    elif tamper == "truncated":
        _corrupt_manifest_shard(out / "part-00001.npz")
    elif tamper == "non-finite":
        with np.load(out / "part-00000.npz") as data:
            arrays = dict(data)
        arrays["block__bytes"][1, 0] = np.nan
        np.savez(out / "part-00000.npz", **arrays)
    elif tamper == "incomplete":
        (out / "index.json").write_text(json.dumps({**index, "complete": False}))
    elif tamper == "no partitions":
        (out / "index.json").write_text(json.dumps({**index, "partitions": []}))
    elif tamper == "missing field":
        del index["widths"]
        (out / "index.json").write_text(json.dumps(index))
    else:
        index["partitions"][0]["name"] = "../part-00000.npz"
        (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=message):
        load_embeddings(out)


@pytest.mark.parametrize(
    ("ids", "dtype"),
    [
        (list(range(100, 110)), np.int64),
        (pd.Series(list(range(10)), dtype=object), np.int64),  # ints in an object column
        ([f"p{i}" for i in range(10)], np.str_),
        ([0.5 * i for i in range(10)], np.float64),
        (pd.date_range("2024-01-01", periods=10).to_numpy(), np.datetime64),
    ],
)
def test_ids_come_back_as_they_were_written(tmp_path, ids, dtype):
    frame = _manifest(tmp_path, ids=ids)
    encode_manifest(frame, MODS, tmp_path / "emb", partition_size=3, id_column="rid")
    _, got = load_embeddings(tmp_path / "emb")
    assert np.issubdtype(got.dtype, dtype)
    assert got.tolist() == pd.Series(ids).tolist() or (got == np.asarray(ids)).all()
    # the frame's own index too (a RangeIndex of ints)
    encode_manifest(frame.set_index("rid"), MODS, tmp_path / "emb2", partition_size=3)
    _, got = load_embeddings(tmp_path / "emb2")
    assert list(got) == list(frame["rid"]) and np.issubdtype(got.dtype, dtype)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1, "a", 2, 3, 4, 5, 6, 7, 8, 9], r"row ids \(column 'rid'\) mix types \['int', 'str'\]"),
        (
            ["a", None] + [f"r{i}" for i in range(8)],
            r"row ids \(column 'rid'\) are missing at positions \[1\]",
        ),
        ([0.0, np.nan] + list(range(8)), r"are missing at positions \[1\]"),
        (["a", "a"] + [f"r{i}" for i in range(8)], r"must be unique, found duplicates \['a'\]"),
    ],
)
def test_ids_that_cannot_round_trip_are_refused(tmp_path, ids, message):
    with pytest.raises(ValueError, match=message):
        encode_manifest(_manifest(tmp_path, ids=ids), MODS, tmp_path / "emb", id_column="rid")
    assert not (tmp_path / "emb" / "index.json").exists()


def test_naive_datetime_and_timedelta_objects_come_back_as_written(tmp_path):
    stamps = list(pd.date_range("2024-01-01", periods=10, freq="h"))  # pandas Timestamps
    frame = _manifest(tmp_path, ids=pd.Series(stamps, dtype=object))
    encode_manifest(frame, MODS, tmp_path / "emb", partition_size=4, id_column="rid")
    _, got = load_embeddings(tmp_path / "emb")
    assert got.dtype.kind == "M" and list(pd.to_datetime(got)) == stamps
    deltas = pd.Series(list(pd.to_timedelta(range(10), unit="s")), dtype=object)
    encode_manifest(_manifest(tmp_path, ids=deltas), MODS, tmp_path / "emb2", id_column="rid")
    _, got = load_embeddings(tmp_path / "emb2")
    assert got.dtype.kind == "m" and list(pd.to_timedelta(got)) == list(deltas)


@pytest.mark.parametrize("as_index", [False, True])
def test_timezone_aware_ids_are_refused_saying_how_to_convert(tmp_path, as_index):
    # Used to fail with "mix types ['Timestamp']" although datetimes are supported.
    ids = pd.date_range("2024-01-01", periods=10, freq="h", tz="Europe/Paris")
    frame = _manifest(tmp_path, ids=ids)
    frame = frame.set_index("rid") if as_index else frame
    where = r"row ids \(the frame's index\)" if as_index else r"row ids \(column 'rid'\)"
    with pytest.raises(
        ValueError,
        match=where + r" are timezone-aware datetimes \(e\.g\. 2024-01-01 00:00:00\+01:00 at "
        r"position 0\); .*tz_convert\('UTC'\)",
    ):
        encode_manifest(frame, MODS, tmp_path / "emb", id_column=None if as_index else "rid")
    converted = _manifest(tmp_path, ids=ids.tz_convert("UTC").tz_localize(None))
    encode_manifest(converted, MODS, tmp_path / "emb", id_column="rid")
    _, got = load_embeddings(tmp_path / "emb")
    assert list(pd.to_datetime(got)) == list(ids.tz_convert("UTC").tz_localize(None))


@pytest.mark.parametrize(
    ("ids", "position"),
    [(["a", "a\x00"], 1), (["a\x00b", "c"], 0), (["\x00"], 0)],
)
def test_ids_with_nul_are_refused_not_reported_as_duplicates(tmp_path, ids, position):
    ids = ids + [f"r{i}" for i in range(10 - len(ids))]
    with pytest.raises(
        ValueError,
        match=rf"row ids \(column 'rid'\) contain a NUL character \('\\x00'\) at positions "
        rf"\[{position}\]",
    ):
        encode_manifest(_manifest(tmp_path, ids=ids), MODS, tmp_path / "emb", id_column="rid")
    assert not (tmp_path / "emb" / "index.json").exists()


def test_bytes_ids_are_refused(tmp_path):
    ids = np.array([f"r{i}".encode() for i in range(10)])
    with pytest.raises(ValueError, match=r"row ids .* are bytes \(\|S2\); numpy drops"):
        encode_manifest(_manifest(tmp_path, ids=ids), MODS, tmp_path / "emb", id_column="rid")


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [100_000, 40])
def test_deeply_nested_index_is_refused_naming_the_file(tmp_path, depth):
    frame = _manifest(tmp_path, n=4)
    out = tmp_path / "emb"
    encode_manifest(frame, MODS, out, partition_size=2, id_column="rid")
    (out / "index.json").write_text(_deep_json(depth))
    message = "too deeply to parse" if depth > 1000 else "more than 16 deep"
    with pytest.raises(ValueError, match=rf"emb/index\.json' nests lists or objects {message}"):
        load_embeddings(out)
    with pytest.raises(ValueError, match=rf"emb/index\.json' nests lists or objects {message}"):
        encode_manifest(frame, MODS, out, partition_size=2, id_column="rid")


def test_index_size_limit_is_a_parameter(tmp_path):
    from toolkit import distributed

    assert distributed.MAX_INDEX_BYTES == 64 * 2**20 and distributed.MAX_INDEX_DEPTH == 16
    frame = _manifest(tmp_path, n=4)
    out = tmp_path / "emb"
    index = encode_manifest(frame, MODS, out, partition_size=2, id_column="rid")
    size = index.stat().st_size
    load_embeddings(out, max_index_bytes=size)
    with pytest.raises(
        ValueError, match=rf"is {size:,} bytes, above the max_index_bytes={size - 1:,}"
    ):
        load_embeddings(out, max_index_bytes=size - 1)
    with pytest.raises(ValueError, match=rf"above the max_index_bytes={size - 1:,} limit"):
        encode_manifest(
            frame, MODS, out, partition_size=2, id_column="rid", max_index_bytes=size - 1
        )
    with pytest.raises(ValueError, match="max_index_bytes must be a positive integer, got 0"):
        load_embeddings(out, max_index_bytes=0)


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_partition_size_is_validated(tmp_path, size):
    with pytest.raises(ValueError, match=f"partition_size must be a positive integer, got {size}"):
        encode_manifest(_manifest(tmp_path, n=2), MODS, tmp_path / "emb", partition_size=size)


def test_partition_function_called_directly_keeps_a_valid_shard(tmp_path):
    frame = _manifest(tmp_path, n=4)
    rec = encode_partition(frame, MODS, frame["rid"], tmp_path, 3)
    assert rec["name"] == "part-00003.npz" and rec["recomputed"] is None
    assert rec["widths"] == {"bytes": 4} and rec["n_rows"] == 4
    BytesEncoder.reads = 0
    again = encode_partition(frame, MODS, frame["rid"], tmp_path, 3)
    assert again == rec and BytesEncoder.reads == 0
    other = encode_partition(frame.iloc[::-1], MODS, frame["rid"][::-1], tmp_path, 3)
    assert other["recomputed"].startswith("its fingerprint differs") and BytesEncoder.reads == 4


def test_manifest_folder_items_are_limited_and_keyed_on_their_files(tmp_path):
    folders = _series(tmp_path / "data", n=3)
    frame = pd.DataFrame({"ct": [str(f) for f in folders]}, index=["p1", "p2", "p3"])
    mods = [("ct", BytesEncoder(), "ct")]
    with pytest.raises(ValueError, match=r"row 'p1' of column 'ct': folder .* max_folder_files=2"):
        encode_manifest(frame, mods, tmp_path / "emb", max_folder_files=2)
    with pytest.raises(ValueError, match="max_folder_files must be a positive integer, got -5"):
        encode_manifest(frame, mods, tmp_path / "emb", max_folder_files=-5)
    encode_manifest(frame, mods, tmp_path / "emb", partition_size=1, max_folder_files=3)
    _rewrite_keeping_stat(folders[2] / "slice0.dcm", 0)
    BytesEncoder.reads = 0
    with pytest.warns(CacheShardWarning, match="part-00002.npz' was encoded again"):
        encode_manifest(frame, mods, tmp_path / "emb", partition_size=1, max_folder_files=3)
    assert BytesEncoder.reads == 1
    emb, ids = load_embeddings(tmp_path / "emb")
    np.testing.assert_array_equal(emb.blocks["ct"], _expected(folders))
    assert ids.tolist() == ["p1", "p2", "p3"]


# -- items read from several files: Analyze/NIfTI pairs ---------------------------------------


def _pair(folder: Path, stem: str, seed: int, suffix: str = ".hdr") -> Path:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    vol = np.random.default_rng(seed).random((6, 6, 6)).astype(np.float32)
    path = folder / f"{stem}{suffix}"
    nib.save(nib.Nifti1Pair(vol, np.eye(4)), path)
    return path


def _replace_data_half(header: Path, seed: int) -> None:
    """Rewrite the data half of a pair with other voxels; the header file is untouched."""
    import nibabel as nib

    donor = _pair(header.parent / "donor", header.name.split(".")[0], seed, header.name[2:])
    half = {".hdr": ".img", ".hdr.gz": ".img.gz"}[header.name[2:]]
    target = header.with_name(header.name.split(".")[0] + half)
    stat_before = header.stat()
    shutil.copyfile(donor.with_name(donor.name.split(".")[0] + half), target)
    assert header.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert nib.load(str(header)).get_fdata().shape == (6, 6, 6)


@pytest.mark.parametrize("suffix", [".hdr", ".hdr.gz"])
def test_analyze_pair_is_encoded_again_when_only_its_data_half_changes(tmp_path, suffix):
    from toolkit import ScanEncoder

    items = [str(_pair(tmp_path / "scans", f"v{i}", seed=i, suffix=suffix)) for i in range(2)]
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = ScanEncoder(spatial_size=(8, 8, 8))
    before, _ = cache.encode(encoder, items)
    _replace_data_half(Path(items[0]), seed=7)
    after, available = EmbeddingCache(tmp_path / "cache").encode(encoder, items)
    fresh = ScanEncoder(spatial_size=(8, 8, 8)).fit(items).transform(items)
    assert available.all() and not np.allclose(before[0], after[0])
    np.testing.assert_array_equal(after, fresh)
    np.testing.assert_array_equal(after[1], before[1])


@pytest.mark.parametrize(
    ("item", "changed"),
    [
        ("v.hdr", "v.img"),
        ("v.img", "v.hdr"),
        ("v.hdr.gz", "v.img.gz"),
        ("v.IMG", "v.HDR"),
        ("v.hdr", "v.mat"),  # an SPM .mat beside an Analyze header changes the affine
    ],
)
def test_item_key_covers_every_file_of_a_pair(tmp_path, item, changed):
    path = tmp_path / item
    path.write_bytes(b"h" * 348)
    other = tmp_path / changed
    before = item_key(str(path))
    other.write_bytes(b"x" * 10)  # created
    created = item_key(str(path))
    other.write_bytes(b"y" * 10)  # rewritten
    assert len({before, created, item_key(str(path))}) == 3
    assert item_key(str(path)) == item_key(str(path))


def test_manifest_resume_recomputes_a_pair_whose_data_half_changed(tmp_path):
    from toolkit import ScanEncoder

    items = [str(_pair(tmp_path / "scans", f"v{i}", seed=i)) for i in range(4)]
    frame = pd.DataFrame({"scan": items, "rid": [f"r{i}" for i in range(4)]})
    mods = [("scan", ScanEncoder(spatial_size=(4, 4, 4)), "scan")]
    out = tmp_path / "emb"
    encode_manifest(frame, mods, out, partition_size=2, id_column="rid")
    _replace_data_half(Path(items[3]), seed=9)
    with pytest.warns(CacheShardWarning, match="part-00001.npz' was encoded again: its finger"):
        encode_manifest(frame, mods, out, partition_size=2, id_column="rid")
    emb, _ = load_embeddings(out)
    expected = ScanEncoder(spatial_size=(4, 4, 4)).fit(items).transform(items)
    np.testing.assert_array_equal(emb.blocks["scan"], expected)


# -- models named rather than given as files ------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _hub_cache(root: Path, repo_id: str, commit: str, weights: bytes) -> Path:
    """A local Hugging Face cache holding one snapshot of ``repo_id`` (as the hub writes it)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text('{"model_type": "bert"}')
    (snapshot / "model.safetensors").write_bytes(weights)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_is_keyed_on_its_local_snapshot_without_the_network(
    tmp_path, monkeypatch, no_network
):
    from huggingface_hub import constants

    from toolkit import AudioEncoder, TextEncoder

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = TextEncoder(backend="transformers", model="org/tiny")
    unresolved = encoder_key(encoder)  # not cached: keyed on the id alone
    snapshot = _hub_cache(tmp_path / "hub", "org/tiny", "a" * 40, b"weights v1")
    first = encoder_key(encoder)
    assert first != unresolved and first == encoder_key(encoder)
    _rewrite_keeping_stat(snapshot / "model.safetensors", 0)  # the cached weights changed
    second = encoder_key(encoder)
    _hub_cache(tmp_path / "hub", "org/tiny", "b" * 40, b"weights v2")  # a new revision
    third = encoder_key(encoder)
    assert len({unresolved, first, second, third}) == 4
    audio = AudioEncoder(backend="transformers", model="org/tiny")
    audio_key = encoder_key(audio)
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    assert encoder_key(audio) != audio_key


def test_sentence_transformers_short_id_resolves_with_the_library_prefix(
    tmp_path, monkeypatch, no_network
):
    from huggingface_hub import constants

    from toolkit import TextEncoder

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = TextEncoder(backend="sentence-transformers", model="mini")
    before = encoder_key(encoder)
    snapshot = _hub_cache(tmp_path / "hub", "sentence-transformers/mini", "c" * 40, b"w")
    after = encoder_key(encoder)
    (snapshot / "model.safetensors").write_bytes(b"other weights")
    assert len({before, after, encoder_key(encoder)}) == 3


@pytest.mark.parametrize("backend", ["sentence-transformers", "transformers"])
def test_default_sentence_model_is_keyed_on_its_folder(
    tmp_path, monkeypatch, no_network, backend
):
    import toolkit.encoders.backends.hub as text_module
    from toolkit import TextEncoder

    folder = tmp_path / "default_model"
    _write(folder / "model.safetensors", 300, seed=1)
    _write(folder / "config.json", 20, seed=2)
    monkeypatch.setattr(text_module, "default_sentence_model", lambda: str(folder))
    encoder = TextEncoder(backend=backend)  # model=None: the embed extra's MiniLM
    first = encoder_key(encoder)
    assert first == encoder_key(encoder)
    _rewrite_keeping_stat(folder / "model.safetensors", 5)  # the package was upgraded
    second = encoder_key(encoder)
    _write(folder / "tokenizer.json", 10, seed=3)
    third = encoder_key(encoder)
    assert len({first, second, third}) == 3

    def absent():
        raise ImportError("embed extra not installed")

    monkeypatch.setattr(text_module, "default_sentence_model", absent)
    assert encoder_key(encoder) not in {first, second, third}  # no error: fit reports it


def test_model_folder_given_with_a_tilde_is_fingerprinted(tmp_path, monkeypatch):
    from toolkit import TextEncoder

    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path / "models" / "bert" / "model.safetensors", 50, seed=4)
    encoder = TextEncoder(backend="transformers", model="~/models/bert")
    first = encoder_key(encoder)
    _rewrite_keeping_stat(tmp_path / "models" / "bert" / "model.safetensors", 1)
    assert encoder_key(encoder) != first
