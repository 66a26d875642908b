"""Scale-out on a real dask.distributed LocalCluster (2 worker processes on loopback)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed", reason="the 'distributed' extra is not installed")
import cloudpickle  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402

from toolkit import ImageEncoder, MultimodalClassifier, TabularEncoder  # noqa: E402
from toolkit.distributed import encode_manifest, explain_partitions, load_embeddings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Workers cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class DyingImageEncoder(ImageEncoder):
    """Kills its worker process the first time it encodes (when ``flag`` does not exist yet)."""

    def __init__(self, flag="", pixel_size=8):
        super().__init__(pixel_size=pixel_size, progress=False)
        self.flag = flag

    def _encode_batch(self, images):
        if self.flag and not os.path.exists(self.flag):
            Path(self.flag).write_text("died once")
            os._exit(1)
        return super()._encode_batch(images)


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    images = [np.clip(0.3 + 0.4 * c + rng.normal(0, 0.1, (8, 8)), 0, 1) for c in y]
    return pd.DataFrame(
        {"image": images, "age": rng.normal(50, 5, n), "rid": [f"r{i:03d}" for i in range(n)]}
    ), y


@pytest.fixture(scope="module")
def client():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        with Client(cluster) as c:
            yield c


def test_distributed_encoding_equals_in_process(client, tmp_path):
    frame, _ = _frame()
    mods = [("image", ImageEncoder(pixel_size=8, progress=False), "image")]
    encode_manifest(
        frame, mods, tmp_path / "remote", client=client, partition_size=7, id_column="rid"
    )
    encode_manifest(frame, mods, tmp_path / "local", partition_size=60, id_column="rid")
    remote, ids = load_embeddings(tmp_path / "remote")
    local, local_ids = load_embeddings(tmp_path / "local")
    order = np.argsort(ids)
    assert list(ids[order]) == list(local_ids) == list(frame["rid"])
    np.testing.assert_array_equal(remote.blocks["image"][order], local.blocks["image"])
    index = json.loads((tmp_path / "remote" / "index.json").read_text())
    assert len(index["partitions"]) == 9 and index["n_rows"] == 60


def test_learned_encoders_must_be_fitted_first(tmp_path):
    frame, _ = _frame()
    with pytest.raises(ValueError, match="TabularEncoder learns from data; fit it first"):
        encode_manifest(frame, [("t", TabularEncoder(), ["age"])], tmp_path)
    fitted = TabularEncoder().fit(frame[["age"]])
    encode_manifest(frame, [("t", fitted, ["age"])], tmp_path, partition_size=25)
    emb, _ = load_embeddings(tmp_path)
    np.testing.assert_allclose(emb.blocks["t"], fitted.transform(frame[["age"]]))


def test_explanations_over_partitions_equal_local(client):
    frame, y = _frame()
    mods = [
        ("image", ImageEncoder(pixel_size=8, progress=False), "image"),
        ("age", TabularEncoder(), ["age"]),
    ]
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(frame, y)
    emb = clf.embed(frame)
    remote = explain_partitions(clf, emb, client=client, partition_size=16)
    local = clf.explain(emb)
    np.testing.assert_allclose(remote.values, local.values, atol=1e-12)
    np.testing.assert_allclose(remote.base_values, local.base_values)


def test_study_on_the_cluster_matches_in_process(client, tmp_path):
    from toolkit.study import load_config, run_study

    overrides = [
        "data.params.n_samples=60",
        "evaluation.bootstrap=20",
        "output.save_model=false",
        "output.report=false",
        "fusion=[early,late]",
    ]
    config = load_config(ROOT / "pipelines" / "sentiment.yaml", overrides)
    remote = run_study(
        config, tmp_path / "remote", progress=False, scheduler=client.scheduler.address
    )
    local = run_study(config, tmp_path / "local", progress=False)
    assert (remote / "metrics.json").read_text() == (local / "metrics.json").read_text()
    assert sorted(p.name for p in (remote / "folds").iterdir()) == [
        "fold_0.json",
        "fold_1.json",
        "fold_2.json",
    ]


def test_fit_predict_explain_from_stored_embeddings(tmp_path):
    frame, y = _frame()
    mods = [("image", ImageEncoder(pixel_size=8, progress=False), "image")]
    encode_manifest(frame, mods, tmp_path, partition_size=20, id_column="rid")
    emb, ids = load_embeddings(tmp_path)
    target = y[np.searchsorted(frame["rid"].to_numpy(), ids)]
    clf = MultimodalClassifier(
        [("image", ImageEncoder(pixel_size=8), "image")], random_state=0
    ).fit(emb, target)
    direct = MultimodalClassifier(mods, random_state=0).fit(frame, y)
    np.testing.assert_allclose(clf.predict_proba(emb), direct.predict_proba(frame), atol=1e-12)
    assert clf.explain(emb).values.shape == (60, 1)
    with pytest.raises(ValueError, match="fitted on precomputed Embeddings and has no encoders"):
        clf.predict(frame)


def test_killed_worker_loses_and_duplicates_no_row(client, tmp_path):
    # Last in this module: a worker of the shared cluster dies here (its nanny restarts it).
    frame, _ = _frame()
    flag = tmp_path / "died.txt"
    mods = [("image", DyingImageEncoder(flag=str(flag)), "image")]
    encode_manifest(frame, mods, tmp_path / "out", client=client, partition_size=10, id_column="rid")
    assert flag.read_text() == "died once"  # a worker really died mid-encode
    emb, ids = load_embeddings(tmp_path / "out")
    assert sorted(ids) == list(frame["rid"]) and len(set(ids)) == 60
    expected = ImageEncoder(pixel_size=8).fit([]).transform(list(frame["image"]))
    np.testing.assert_array_equal(emb.blocks["image"][np.argsort(ids)], expected)
