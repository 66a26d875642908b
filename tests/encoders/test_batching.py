"""Device-aware batching (toolkit/encoders/_batching.py): the budget planner, the prefetcher,
and automatic batch sizes giving the same blocks as fixed ones in every network backend.

The GPU path is exercised on the CPU by pretending the device is CUDA (small budgets, no
pinning): the planner, the background threads and the padded batches then run exactly as on
a GPU. Tolerance of "same block": 1e-5 absolute (float32 rounding of differently shaped
batches; ``benchmarks/gpu.py --device cpu --quick`` measured at most 1.1e-6 on MiniLM).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from toolkit.encoders import _batching
from toolkit.encoders._batching import (
    GPU_BUDGETS,
    MAX_AUTO_ITEMS,
    Prefetcher,
    check_batch_size,
    gpu_budget,
    items_per_batch,
    plan_batches,
)

TOL = 1e-5


# -- the budget planner -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_covers_every_item_once_in_order_within_budget(seed):
    rng = np.random.default_rng(seed)
    costs = np.sort(rng.integers(1, 60, size=200))[::-1]
    costs[[5, 77]] = [500, 300]  # two items over the budget on their own
    budget = 128
    plan = plan_batches(costs, budget, max_items=16)
    np.testing.assert_array_equal(np.concatenate(plan), np.arange(len(costs)))
    for b in plan:
        padded = len(b) * costs[b].max()
        assert padded <= budget or len(b) == 1
        assert len(b) <= 16
    alone = [b.tolist() for b in plan if costs[b].max() > budget]
    assert alone == [[5], [77]]
    # Greedy: a batch stops only where the next item would break the budget or the cap.
    for b, nxt in zip(plan[:-1], plan[1:], strict=True):
        grown = np.append(b, nxt[0])
        assert len(grown) > 16 or len(grown) * costs[grown].max() > budget
    again = plan_batches(costs, budget, max_items=16)
    assert [b.tolist() for b in again] == [b.tolist() for b in plan]


def test_plan_known_answer_and_edge_cases():
    assert [b.tolist() for b in plan_batches([5, 4, 4, 2, 1], budget=8)] == [[0], [1, 2], [3, 4]]
    assert plan_batches([], budget=8) == []
    # Zero-cost items (empty inputs) still count as one unit each.
    assert [b.tolist() for b in plan_batches([0, 0, 0], budget=2)] == [[0, 1], [2]]
    assert [len(b) for b in plan_batches([1] * 10, budget=100, max_items=None)] == [10]


@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "many", None])
def test_plan_rejects_bad_budgets(budget):
    with pytest.raises(ValueError, match="budget must be a positive integer number of padded"):
        plan_batches([1, 2], budget)


def test_plan_rejects_bad_costs_and_caps():
    with pytest.raises(ValueError, match="non-negative integers"):
        plan_batches([1, -2], 8)
    with pytest.raises(ValueError, match="non-negative integers"):
        plan_batches([1.5, 2.0], 8)
    with pytest.raises(ValueError, match="one number per item"):
        plan_batches([[1, 2]], 8)
    with pytest.raises(ValueError, match="max_items must be a positive integer"):
        plan_batches([1, 2], 8, max_items=0)


@pytest.mark.parametrize("value", [0, -1, 1.5, "big", True, None])
def test_bad_batch_sizes_are_refused(value):
    with pytest.raises(ValueError, match="must be 'auto' or a positive integer"):
        check_batch_size(value)


@pytest.mark.parametrize("value", [0, "big", 2.0, True, "auto "])
def test_encoders_refuse_bad_batch_sizes_when_fitting(value):
    from toolkit import ImageEncoder, ScanEncoder, TextEncoder

    for enc in (TextEncoder(batch_size=value), ImageEncoder(batch_size=value),
                ScanEncoder(batch_size=value)):  # fmt: skip
        with pytest.raises(ValueError, match="'batch_size' parameter .* must be"):
            enc.fit(["a text"] if isinstance(enc, TextEncoder) else [np.zeros((8, 8, 8))])


def test_items_per_batch_by_device():
    import torch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert gpu_budget(cpu, "tokens") is None and gpu_budget(None, "pixels") is None
    assert gpu_budget(cuda, "voxels") == GPU_BUDGETS["voxels"]
    assert items_per_batch("auto", cuda, "voxels", 64**3, 4) == GPU_BUDGETS["voxels"] // 64**3
    assert items_per_batch("auto", cpu, "voxels", 64**3, 4) == 4  # the CPU size, unchanged
    assert items_per_batch(7, cuda, "voxels", 64**3, 4) == 7  # an integer overrides
    assert items_per_batch("auto", cuda, "pixels", 10**12, 64) == 1  # too big: alone
    assert items_per_batch("auto", cuda, "pixels", 1, 64) == MAX_AUTO_ITEMS
    with pytest.raises(ValueError, match="unknown batch budget unit 'bytes'"):
        gpu_budget(cuda, "bytes")


# -- the prefetcher -----------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [True, False])
def test_prefetcher_keeps_order_whatever_the_preparation_time(threaded):
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.004, size=30)

    def prepare(i):
        time.sleep(delays[i])
        return i * i

    assert list(Prefetcher(range(30), prepare, threaded=threaded)) == [i * i for i in range(30)]


@pytest.mark.parametrize("threaded", [True, False])
def test_prefetcher_raises_a_workers_error_with_the_items_name_in_place(threaded):
    def prepare(i):
        if i == 3:
            raise KeyError("input_ids")
        return i

    got = []
    names = [f"batch of texts {i}" for i in range(6)]
    with pytest.raises(KeyError, match="while preparing batch of texts 3: 'input_ids'") as info:
        for value in Prefetcher(range(6), prepare, names=names, threaded=threaded):
            got.append(value)
    assert got == [0, 1, 2]  # the items before the failure were delivered, in order
    assert isinstance(info.value.__cause__, KeyError)


def test_prefetcher_wraps_exceptions_that_take_other_arguments():
    def prepare(i):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    with pytest.raises(_batching.PrefetchError, match="while preparing batch 0: 'utf-8' codec"):
        list(Prefetcher(range(2), prepare))


def test_prefetcher_stops_its_thread_when_the_caller_stops_early():
    started = threading.active_count()
    it = iter(Prefetcher(range(1000), lambda i: i, depth=2))
    assert next(it) == 0
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > started and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == started


def test_prefetcher_prepares_ahead_in_a_background_thread():
    seen = []

    def prepare(i):
        seen.append((i, threading.current_thread().name))
        return i

    it = iter(Prefetcher(range(5), prepare, depth=2))
    assert next(it) == 0
    deadline = time.time() + 5
    while len(seen) < 3 and time.time() < deadline:  # item 0 taken, 1 and 2 queued
        time.sleep(0.01)
    assert [i for i, _ in seen][:3] == [0, 1, 2]
    assert {name for _, name in seen} == {"toolkit-prefetch"}
    assert list(it) == [1, 2, 3, 4]


def test_prefetcher_passes_on_a_failure_of_the_work_itself():
    def work():
        yield 1
        yield 2
        raise OSError("listing the items failed")

    got = []
    with pytest.raises(OSError, match="listing the items failed"):
        for value in Prefetcher(work(), lambda i: 10 * i):
            got.append(value)
    assert got == [10, 20]


def test_prefetcher_refuses_a_bad_depth():
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        Prefetcher(range(3), lambda i: i, depth=0)


# -- automatic batch sizes in the network backends -----------------------------------------


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Run the GPU path on the CPU: budgets apply, prefetch threads run, nothing is pinned.
    Returns the budgets dict, which tests shrink to force several batches."""
    budgets = dict(GPU_BUDGETS)
    monkeypatch.setattr(_batching, "gpu_budget", lambda device, unit: budgets[unit])
    monkeypatch.setattr(_batching, "is_cuda", lambda device: True)
    monkeypatch.setattr(_batching, "pin", lambda obj: obj)
    return budgets


def _texts(n, seed=0):
    rng = np.random.default_rng(seed)
    words = "the film was good bad not great at all a lovely story plot".split()
    return [" ".join(rng.choice(words, rng.integers(1, 25))) for _ in range(n)]


def test_text_auto_on_cpu_is_todays_batch_size(tiny_bert):
    from toolkit import TextEncoder

    texts = _texts(40)
    auto = TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu").fit(texts)
    assert auto.batch_size == "auto" and auto._chunk_size() == 32 * 64
    fixed = TextEncoder(backend="transformers", model=str(tiny_bert), batch_size=32, device="cpu")
    np.testing.assert_array_equal(auto.transform(texts), fixed.fit(texts).transform(texts))


def test_text_token_budget_gives_the_same_block_as_fixed_batches(tiny_bert, pretend_gpu):
    from toolkit import TextEncoder

    pretend_gpu["tokens"] = 50
    texts = _texts(40, seed=1)
    texts[7] = " ".join(["good"] * 80)  # 60 tokens once truncated: over the budget, alone
    kwargs = dict(backend="transformers", model=str(tiny_bert), max_length=60, device="cpu")
    # One text per pass: no padding at all.
    ref = TextEncoder(batch_size=1, **kwargs).fit(texts).transform(texts)
    fixed = TextEncoder(batch_size=5, **kwargs).fit(texts).transform(texts)
    enc = TextEncoder(**kwargs).fit(texts)
    shapes = []
    enc.model_.register_forward_hook(
        lambda m, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    auto = enc.transform(texts)
    assert sum(s[0] for s in shapes) == len(texts) and shapes[0] == (1, 60)
    assert all(n * width <= 50 for n, width in shapes[1:])
    assert len({n for n, _ in shapes}) > 2  # the budget, not a fixed count, sized them
    assert np.abs(auto - ref).max() < TOL
    assert np.abs(fixed - ref).max() < TOL


def test_text_padding_matches_the_tokenizer(tiny_bert):
    from toolkit import TextEncoder

    enc = TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu").fit(["x"])
    texts = ["the film", "a lovely story was not great at all", "bad"]
    ours = enc._pad(enc._finish_reads(texts))
    theirs = enc.tokenizer_(texts, padding=True, truncation=True, return_tensors="pt")
    assert set(ours) == set(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())


def test_text_batches_do_not_depend_on_a_left_padding_tokenizer(tiny_bert, pretend_gpu):
    from toolkit import TextEncoder

    pretend_gpu["tokens"] = 64
    texts = _texts(12, seed=4)
    kwargs = dict(backend="transformers", model=str(tiny_bert), max_length=60, device="cpu")
    ref = TextEncoder(batch_size=1, **kwargs).fit(texts).transform(texts)
    for batch_size in ("auto", 4):
        enc = TextEncoder(batch_size=batch_size, **kwargs).fit(texts)
        enc.tokenizer_.padding_side = "left"  # would shift BERT's absolute positions
        assert np.abs(enc.transform(texts) - ref).max() < TOL


def test_text_auto_keeps_missing_rows_and_order(tiny_bert, pretend_gpu):
    import pandas as pd

    from toolkit import TextEncoder

    pretend_gpu["tokens"] = 40
    texts = pd.Series(_texts(12, seed=2), index=[f"r{i}" for i in range(12)], name="review")
    texts.iloc[[2, 9]] = [None, ""]
    enc = TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu")
    block, available = enc.fit(texts).encode(texts)
    assert available.tolist() == [i not in (2, 9) for i in range(12)]
    alone = TextEncoder(backend="transformers", model=str(tiny_bert), batch_size=1, device="cpu")
    ref = alone.fit(texts).transform(texts)
    assert np.isnan(block[~available]).all()
    assert np.abs(block[available] - ref[available]).max() < TOL


@pytest.fixture(scope="module")
def image_weights(tmp_path_factory):
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("image_weights") / "mobilenet.pt"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    return path


def _image_encoder(path, **kwargs):
    from toolkit import ImageEncoder

    return ImageEncoder(
        backend="torchvision", model="mobilenet_v3_small", weights=path, input_size=32,
        device="cpu", **kwargs,
    )  # fmt: skip


def test_image_pixel_budget_gives_the_same_block_as_fixed_batches(image_weights, pretend_gpu):
    pretend_gpu["pixels"] = 32 * 32 * 5  # five resized images per batch
    rng = np.random.default_rng(0)
    images = [rng.random((int(rng.integers(20, 50)), 40, 3)) for _ in range(13)]
    images[4] = rng.random((30, 30))  # grey
    fixed = _image_encoder(image_weights, batch_size=3).fit(images[:1]).transform(images)
    enc = _image_encoder(image_weights).fit(images[:1])
    sizes = []
    enc.model_.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    auto = enc.transform(images)
    assert enc._batch_items() == 5 and sizes == [5, 5, 3]
    assert np.abs(auto - fixed).max() < TOL


def test_image_auto_with_an_unreadable_item_marks_only_that_row(
    image_weights, tmp_path, pretend_gpu
):
    pretend_gpu["pixels"] = 32 * 32 * 4
    rng = np.random.default_rng(1)
    images = [rng.random((24, 24, 3)) for _ in range(9)]
    images[5] = tmp_path / "absent.png"
    enc = _image_encoder(image_weights, on_error="missing").fit(images[:1])
    with pytest.warns(UserWarning, match="row 5"):
        block, available = enc.encode(images)
    assert available.tolist() == [i != 5 for i in range(9)]
    ref = _image_encoder(image_weights, batch_size=1).fit(images[:1])
    kept = [im for i, im in enumerate(images) if i != 5]
    assert np.abs(block[available] - ref.transform(kept)).max() < TOL
    with pytest.raises(FileNotFoundError, match="row 5"):  # on_error="raise": the row named
        _image_encoder(image_weights).fit(images[:1]).transform(images)


def test_scan_voxel_budget_gives_the_same_block_as_fixed_batches(tmp_path, pretend_gpu):
    import torch
    from monai.networks.nets import DenseNet

    from toolkit import ScanEncoder

    pretend_gpu["voxels"] = 16**3 * 3
    net = dict(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
               block_config=(2, 2))  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path / "densenet.pt"
    torch.save(DenseNet(**net).state_dict(), path)
    rng = np.random.default_rng(0)
    vols = [rng.random((14 + 2 * (i % 3), 16, 16)).astype(np.float32) for i in range(7)]
    kwargs = dict(backend="monai", model="DenseNet", model_kwargs=net, weights=path,
                  spatial_size=(16, 16, 16), device="cpu")  # fmt: skip
    fixed = ScanEncoder(batch_size=2, **kwargs).fit(vols[:1]).transform(vols)
    enc = ScanEncoder(**kwargs).fit(vols[:1])
    sizes = []
    enc.model_.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    auto = enc.transform(vols)
    assert sizes == [3, 3, 1]
    assert np.abs(auto - fixed).max() < TOL


def _clips(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=n).astype(np.float32) * 0.1, 16000) for n in lengths]


def test_audio_auto_batches_equal_lengths_only_for_a_group_norm_model(tiny_wav2vec2, pretend_gpu):
    from toolkit import AudioEncoder

    pretend_gpu["samples"] = 16000 * 8  # chunks of 8 clips, one planned pass of <= 8 s
    clips = _clips([8000, 12000, 8000, 4000, 12000, 8000, 16000, 4000])
    one = AudioEncoder(backend="transformers", model=str(tiny_wav2vec2), device="cpu")
    ref = one.fit(clips[:1]).transform(clips)  # today's CPU path: one clip per pass
    enc = AudioEncoder(backend="transformers", model=str(tiny_wav2vec2), device="cpu")
    enc.fit(clips[:1])
    shapes = []
    enc.model_.register_forward_hook(
        lambda m, args, kwargs, out: shapes.append(tuple(kwargs["input_values"].shape)),
        with_kwargs=True,
    )
    auto = enc.transform(clips)
    # Sorted longest first: 16000 | 12000 x2 | 8000 x3 | 4000 x2, never mixed lengths.
    assert shapes == [(1, 16000), (2, 12000), (3, 8000), (2, 4000)]
    assert np.abs(auto - ref).max() < TOL


def test_audio_padded_batches_with_a_layer_norm_model(tmp_path, pretend_gpu):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from toolkit import AudioEncoder

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, num_feat_extract_layers=2, feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )  # fmt: skip
    Wav2Vec2Model(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(
        tmp_path
    )
    pretend_gpu["samples"] = 16000 * 4  # chunks of 4 clips, passes of <= 4 s padded
    clips = _clips([8000, 12100, 7000, 4000, 11900, 8800, 16000, 4321], seed=3)
    ref = AudioEncoder(backend="transformers", model=str(tmp_path), device="cpu")
    ref = ref.fit(clips[:1]).transform(clips)
    for batch_size in ("auto", 3):
        enc = AudioEncoder(
            backend="transformers", model=str(tmp_path), device="cpu", batch_size=batch_size
        ).fit(clips[:1])
        shapes: list = []
        enc.model_.register_forward_hook(
            lambda m, args, kwargs, out, seen=shapes: seen.append(kwargs["input_values"].shape),
            with_kwargs=True,
        )
        out = enc.transform(clips)
        assert sum(n for n, _ in shapes) == len(clips) and max(n for n, _ in shapes) > 1
        assert np.abs(out - ref).max() < TOL, batch_size


def test_audio_clip_too_short_for_the_model_is_named_not_pooled_to_zeros(tiny_wav2vec2):
    from toolkit import AudioEncoder

    clips = _clips([8000, 20, 4000])
    for batch_size in ("auto", 4):
        enc = AudioEncoder(
            backend="transformers", model=str(tiny_wav2vec2), device="cpu", batch_size=batch_size
        ).fit(clips[:1])
        with pytest.raises(ValueError, match="row 1 .*clip of 20 samples at 16000 Hz is shorter"):
            enc.transform(clips)
        enc.set_params(on_error="missing")
        with pytest.warns(UserWarning, match="row 1"):
            block, available = enc.encode(clips)
        assert available.tolist() == [True, False, True]
        assert np.isnan(block[1]).all() and np.isfinite(block[[0, 2]]).all()
