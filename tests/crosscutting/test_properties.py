"""Property-based tests (hypothesis) over shapes, missingness and label sets, and a fuzz test
of the file readers with random and mutated bytes."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from toolkit import (
    AttentionFusion,
    EarlyFusion,
    Embeddings,
    LateFusion,
    LowRankFusion,
    MultimodalClassifier,
    TensorFusion,
)
from toolkit.exceptions import ReadError
from toolkit.io import read_audio, read_image, read_scan

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# strategy name -> a fresh fusion (the torch fusions with a tiny epoch budget)
FUSION_MAKERS = {
    "early": EarlyFusion,
    "late": lambda: LateFusion(cv=2),
    "attention": lambda: AttentionFusion(max_epochs=3),
    "tensor": lambda: TensorFusion(max_epochs=3),
    "lowrank": lambda: LowRankFusion(max_epochs=3),
}


@st.composite
def problems(draw):
    n = draw(st.integers(12, 40))
    m = draw(st.integers(1, 4))
    dims = draw(st.lists(st.integers(1, 5), min_size=m, max_size=m))
    k = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    mask = rng.random((n, m)) > draw(st.floats(0.0, 0.5))
    mask[~mask.any(axis=1), 0] = True
    for j in range(m):  # every modality present somewhere, every class present
        mask[j % n, j] = True
    y = np.arange(n) % k
    rng.shuffle(y)
    blocks = {
        f"m{j}": np.where(mask[:, [j]], rng.normal(size=(n, d)), np.nan) for j, d in enumerate(dims)
    }
    return Embeddings(blocks, mask), y, k


def _spans_classes(emb, y) -> bool:
    """Every modality is present in rows of 2+ classes: a modality whose availability alone
    gives the label is refused by the estimators (tests/trust/test_estimators_second_wave.py),
    so the properties below are asked of the other problems."""
    return all(len(np.unique(y[emb.mask[:, j]])) >= 2 for j in range(emb.mask.shape[1]))


@SETTINGS
@given(problems(), st.sampled_from(sorted(FUSION_MAKERS)))
def test_predictions_are_distributions_and_explanations_are_efficient(problem, strategy):
    emb, y, k = problem
    assume(_spans_classes(emb, y))
    fusion = FUSION_MAKERS[strategy]()
    model = MultimodalClassifier(fusion=fusion, random_state=0).fit(emb, y)
    assert model.modality_names_ == emb.names and list(model.classes_) == list(range(k))
    proba = model.predict_proba(emb)
    assert proba.shape == (len(y), k) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(model.prior_, np.bincount(y) / len(y))
    exp = model.explain(emb)
    target = proba[:, 1] if k == 2 else proba
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, target, atol=1e-8)
    # Dummy property: an absent modality gets exactly zero.
    absent = ~emb.mask
    values = exp.values if exp.values.ndim == 2 else np.abs(exp.values).sum(axis=2)
    assert (values[absent] == 0).all()


@SETTINGS
@given(problems(), st.sampled_from(sorted(FUSION_MAKERS)))
def test_a_class_absent_from_training_keeps_its_column(problem, strategy):
    emb, y, k = problem
    seen = y != k - 1
    assume(k >= 3 and emb[seen].mask.any(axis=0).all() and _spans_classes(emb[seen], y[seen]))
    fusion = FUSION_MAKERS[strategy]()
    model = MultimodalClassifier(fusion=fusion, classes=list(range(k)), random_state=0)
    proba = model.fit(emb[seen], y[seen]).predict_proba(emb)
    assert proba.shape == (len(y), k) and (proba[:, k - 1] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


@SETTINGS
@given(st.integers(5, 30), st.integers(1, 3), st.integers(0, 1000))
def test_embeddings_round_trip_rows(n, m, seed):
    rng = np.random.default_rng(seed)
    blocks = {f"m{j}": rng.normal(size=(n, j + 1)) for j in range(m)}
    emb = Embeddings(blocks)
    idx = rng.permutation(n)[: max(1, n // 2)]
    sub = emb[idx]
    assert sub.n_samples == len(idx) and sub.dims == emb.dims
    both = Embeddings.concat_rows([sub, sub])
    np.testing.assert_array_equal(both.blocks["m0"][: len(idx)], both.blocks["m0"][len(idx) :])


# -- fuzzing the readers -----------------------------------------------------------------


@contextmanager
def _deadline(seconds):
    def fail(*_):
        raise TimeoutError("reader hung")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _seed_files(tmp_path):
    import nibabel as nib
    import soundfile as sf
    from PIL import Image

    wav = tmp_path / "seed.wav"
    sf.write(wav, np.sin(np.arange(800) / 3).astype(np.float32), 8000, subtype="PCM_16")
    png = tmp_path / "seed.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(png)
    nii = tmp_path / "seed.nii"
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 6)).astype(np.float32), np.eye(4)),
        nii,
    )
    return {"wav": wav.read_bytes(), "png": png.read_bytes(), "nii": nii.read_bytes()}


READERS = {
    "wav": lambda p: read_audio(p),
    "png": lambda p: read_image(p),
    "nii": lambda p: read_scan(p, spatial_size=(4, 4, 4)),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_fuzzed_files_raise_clear_errors(kind, tmp_path):
    seeds = _seed_files(tmp_path)
    rng = np.random.default_rng(0)
    original = seeds[kind]
    outcomes = {"read": 0, "refused": 0}
    for trial in range(40):
        data = bytearray(original)
        if trial % 4 == 0:
            data = bytearray(rng.integers(0, 256, rng.integers(1, 400), dtype=np.uint8).tobytes())
        elif trial % 4 == 1:
            data = data[: rng.integers(1, len(data))]
        else:
            for _ in range(rng.integers(1, 20)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        path = tmp_path / f"fuzz_{trial}.{kind}"
        path.write_bytes(bytes(data))
        with _deadline(20):
            try:
                result = READERS[kind](path)
            except ReadError as exc:
                assert str(path) in str(exc) or path.name in str(exc)
                outcomes["refused"] += 1
                continue
        array = result[0] if isinstance(result, tuple) else result
        assert np.asarray(array).dtype == np.float32 and np.isfinite(array).all()
        outcomes["read"] += 1
    assert outcomes["refused"] >= 10
