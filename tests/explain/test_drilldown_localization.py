"""Drill-down that localizes per row: on data whose evidence moves from row to row (a lesion
anywhere in a scan, a square anywhere in an image, a tone burst at any time in a clip), the
top-ranked part of a positive row is where its evidence is; Owen values over a hierarchy of
parts checked against brute force, and each part's uncertainty against known answers.

The data of the localization tests come from seeds (11 for fitting, 12 for the explained
rows) that were not used while the maskers' baselines were chosen (0 and 100)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from toolkit import AudioEncoder, EarlyFusion, ImageEncoder, MultimodalClassifier, ScanEncoder
from toolkit.datasets.localization import REGION_MAKERS, make_moving_regions
from toolkit.explain import drill_down
from toolkit.explain import hierarchy as H
from toolkit.explain.drilldown import drill_down_cost, rank_parts
from toolkit.explain.parts import ImageGrid, ScanBlocks, TimeSegments, cells

FIT_SEED, ROWS_SEED = 11, 12

ENCODERS = {
    "scan": lambda: ScanEncoder(spatial_size=(12, 12, 12), hist_bins=8, grid=2),
    "image": lambda: ImageEncoder(pixel_size=4),
    "audio": lambda: AudioEncoder(sample_rate=8000),
}


def _model(modality: str, n: int = 60):
    data = make_moving_regions(n, modalities=(modality,), random_state=FIT_SEED)
    mods = [(modality, ENCODERS[modality](), modality)]
    clf = MultimodalClassifier(mods, fusion=EarlyFusion(estimator=LogisticRegression()))
    return clf.set_params(random_state=0).fit(data.frame, data.target)


def _positives(modality: str, n_rows: int):
    data = make_moving_regions(3 * n_rows, modalities=(modality,), random_state=ROWS_SEED)
    pos = np.flatnonzero(data.target == 1)[:n_rows]
    return data.frame.iloc[pos], [data.regions[modality][p] for p in pos]


def _overlap(region, box) -> int:
    return math.prod(
        max(0, min(a.stop, b.stop) - max(a.start, b.start))
        for a, b in zip(region, box, strict=True)
    )


def _hit_rate(explanation, masker, encoder, rows, truths, column):
    """Share of rows whose top-ranked part holds the largest share of the true region (ties
    count: a lesion across two parts equally has two true parts)."""
    hits = []
    for i, truth in enumerate(truths):
        parts = masker.split(rows[column].iloc[i], encoder)
        overlap = np.array([_overlap(region, truth) for region in parts.regions])
        top = rank_parts(explanation, i)[0]
        hits.append(overlap[top] == overlap.max())
    return float(np.mean(hits)), hits


def _check_sums(clf, rows, explanation):
    np.testing.assert_allclose(
        explanation.values.sum(axis=1), clf.explain(rows).values[:, 0], atol=1e-9
    )


def test_the_top_scan_block_is_the_lesion_among_64():
    clf = _model("scan")
    rows, truths = _positives("scan", 5)
    masker = clf.encoders_["scan"].masker()  # 2 x 2 x 2 blocks, each split in 2 x 2 x 2
    blocks = drill_down(clf, rows, "scan", n_permutations=8, random_state=0)
    assert blocks.values.shape == (5, 64) and blocks.feature_names[-1] == "z3y3x3"
    assert [len(g) for g in blocks.groups[0]] == [8] * 8 and not blocks.exact.any()
    assert (
        blocks.encoder_calls
        <= drill_down_cost(64, 1, groups=[8] * 8, n_permutations=8)["encoder_calls"]
    ).all()
    _check_sums(clf, rows, blocks)
    rate, hits = _hit_rate(blocks, masker, clf.encoders_["scan"], rows, truths, "scan")
    assert rate >= 0.8, hits
    top = [rank_parts(blocks, i)[0] for i in range(len(truths))]
    assert len(set(top)) >= 4  # the location map depends on the row
    assert blocks.resolved[np.arange(5), top].mean() >= 0.8  # the lesion's block is resolved


def test_the_top_image_cell_is_the_square():
    clf = _model("image")
    rows, truths = _positives("image", 6)
    masker = clf.encoders_["image"].masker()  # 2 x 2 quadrants, each split in 2 x 2
    cells_ = drill_down(clf, rows, "image")  # exact: 462 subsets <= 2^10
    assert cells_.values.shape == (6, 16) and [len(g) for g in cells_.groups[0]] == [4] * 4
    assert cells_.exact.all() and (cells_.encoder_calls == 462).all()
    _check_sums(clf, rows, cells_)
    rate, hits = _hit_rate(cells_, masker, clf.encoders_["image"], rows, truths, "image")
    assert rate >= 0.8, hits


def test_the_top_segment_is_the_tone_burst():
    clf = _model("audio")
    rows, truths = _positives("audio", 8)
    masker = TimeSegments(n_segments=4, subdivide=2, fill="floor")  # 8 segments in 4: exact
    segments = drill_down(clf, rows, "audio", masker)
    assert segments.exact.all() and (segments.error_std == 0).all()
    assert (segments.encoder_calls == drill_down_cost(8, 1, groups=[2] * 4)["encoder_calls"]).all()
    _check_sums(clf, rows, segments)
    rate, hits = _hit_rate(segments, masker, clf.encoders_["audio"], rows, truths, "audio")
    assert rate >= 0.8, hits
    # exact values: resolved means not exactly 0, and the interval is the value itself
    np.testing.assert_array_equal(segments.resolved, segments.values != 0)
    np.testing.assert_array_equal(segments.lower_bounds, segments.values)


def _random_game(d: int, seed: int):
    rng = np.random.default_rng(seed)
    table: dict = {}

    def U(s):
        key = tuple(np.asarray(s, dtype=int))
        if key not in table:
            table[key] = rng.normal()
        return table[key]

    return U


def _brute_owen(U, groups, d):
    def w(s, n):
        return math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)

    phi = np.zeros(d)
    for b, members in enumerate(groups):
        others = [g for k, g in enumerate(groups) if k != b]
        for r in range(len(others) + 1):
            for Q in itertools.combinations(others, r):
                base = np.zeros(d, dtype=bool)
                for group in Q:
                    base[group] = True
                for j in members:
                    rest = [k for k in members if k != j]
                    for t in range(len(rest) + 1):
                        for T in itertools.combinations(rest, t):
                            s = base.copy()
                            s[list(T)] = True
                            with_j = s.copy()
                            with_j[j] = True
                            gain = U(with_j) - U(s)
                            phi[j] += w(len(Q), len(groups)) * w(len(T), len(members)) * gain
    return phi


def test_exact_owen_values_agree_with_the_definition_and_add_up_by_group():
    d, groups = 6, [[0, 1, 2], [3, 4], [5]]
    U = _random_game(d, 0)
    subsets = H.exact_subsets(groups, d)
    assert len(subsets) == H.exact_cost([3, 2, 1]) + 2 == 40  # 2^6 = 64 without groups
    values = np.array([U(s) for s in subsets])
    phi = H.exact_owen(values, H.index_of(subsets), groups, d)
    np.testing.assert_allclose(phi, _brute_owen(U, groups, d), atol=1e-12)
    assert phi.sum() == pytest.approx(U(np.ones(d)) - U(np.zeros(d)))
    # one group of all parts: the Shapley values
    flat = H.exact_subsets([list(range(4))], 4)
    assert len(flat) == 16
    with pytest.raises(ValueError, match="each of the 4 parts exactly once"):
        H.check_groups([[0, 1], [1, 2, 3]], 4)
    # the cost of exact values over the hierarchy, and when it is sampled instead
    assert drill_down_cost(6, 1, groups=[3, 2, 1]) == {
        "exact": True, "encoder_calls": 38, "fusion_rows": 40,
    }  # fmt: skip
    assert not drill_down_cost(16, 1, groups=[4] * 4, max_parts=8)["exact"]  # 462 > 254
    with pytest.raises(ValueError, match=r"group sizes \[4, 3\] do not add up to the 8 parts"):
        drill_down_cost(8, 2, groups=[4, 3])


def test_sampled_intervals_cover_the_exact_values():
    """Known answer for the uncertainty: on random games whose exact Owen values are known,
    the sampled 95% intervals (value +- t x s.e. from 8 antithetic pairs) cover them in
    about 95% of (part, game) cases, and walks keep the groups together."""
    d, groups = 8, [[0, 1, 2, 3], [4, 5, 6, 7]]
    covered = []
    for seed in range(40):
        U = _random_game(d, seed)
        exact_subsets = H.exact_subsets(groups, d)
        truth = H.exact_owen(
            np.array([U(s) for s in exact_subsets]), H.index_of(exact_subsets), groups, d
        )
        orders = H.group_orders(groups, 8, np.random.RandomState(seed))
        first = {frozenset(o[:4]) for o in orders}
        assert first <= {frozenset(g) for g in groups}  # a group is walked as a whole
        subsets = H.walk_subsets(orders)
        marginals = H.walk_marginals(np.array([U(s) for s in subsets]), H.index_of(subsets), orders)
        values, errors = H.pair_estimate(marginals)
        assert values.sum() == pytest.approx(truth.sum())  # every walk adds up
        half = H.t_quantile(8) * errors
        covered.extend(np.abs(values - truth) <= half)
    assert 0.88 <= np.mean(covered) <= 0.995, np.mean(covered)


def test_resolved_parts_rank_first_and_a_sure_part_is_resolved():
    """A game in which only part 5 matters (value 1 whenever it is kept) plus noise on
    every subset: part 5 is resolved and ranks first; a large but unresolved value does
    not rank above a resolved one."""
    groups = [list(range(k, k + 4)) for k in range(0, 16, 4)]
    rng = np.random.default_rng(3)
    orders = H.group_orders(groups, 8, np.random.RandomState(0))
    subsets = H.walk_subsets(orders)
    U = subsets[:, 5].astype(float) + 0.01 * rng.normal(size=len(subsets))
    values, errors = H.pair_estimate(H.walk_marginals(U, H.index_of(subsets), orders))
    done = H.resolved(values, errors, 8)
    assert done[5] and abs(values[5] - 1) < 0.05 and done.sum() <= 3
    assert H.rank(values, done)[0] == 5
    assert H.rank([0.9, -0.2, 0.1], [False, True, True]).tolist() == [1, 2, 0]
    # resolved but negligible (< 1% of the row's total |value|): ranked with the noise
    assert H.rank([0.001, 0.9, -0.2], [True, False, True]).tolist() == [2, 1, 0]
    assert H.material([0.0, 0.0]).tolist() == [False, False]
    assert H.resolved([0.0, 1e-9], [0.0, 0.0], None).tolist() == [False, True]


def test_maskers_nest_fine_parts_in_coarse_ones():
    scan = ScanBlocks((2, 2, 2), subdivide=2, fill="blur").split(np.zeros((8, 8, 8)), None)
    assert len(scan.labels) == 64 and len(scan.groups) == 8
    # each coarse block's 8 fine blocks tile it
    assert sorted(scan.labels[j] for j in scan.groups[0]) == [
        f"z{i}y{j}x{k}" for i in (0, 1) for j in (0, 1) for k in (0, 1)
    ]
    assert scan.regions == cells((8, 8, 8), (4, 4, 4), "scan volume")
    image = ImageGrid(rows=2, cols=2, subdivide=2).split(np.ones((8, 8)), None)
    assert image.groups == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert ImageGrid(rows=4, cols=4).split(np.ones((8, 8)), None).groups is None  # flat
    # blur keeps the brightness around a masked region and removes its detail
    volume = np.full((12, 12, 12), 0.3, dtype=np.float32)
    volume[3:6, 3:6, 3:6] = 0.9
    parts = ScanBlocks((2, 2, 2), subdivide=2, fill="blur").split(volume, None)
    masked = ScanBlocks((2, 2, 2), subdivide=2, fill="blur").mask(parts, np.zeros(64, bool))
    assert masked.max() < 0.5 and abs(masked[0, 0, 0] - 0.3) < 0.05
    wave = np.r_[np.zeros(400), 0.5 * np.ones(400)].astype(np.float32)
    clip = TimeSegments(2, fill="floor").split((wave, 8000), None)
    assert np.abs(TimeSegments(2, fill="floor").mask(clip, [True, False])[0]).max() == 0.0
    with pytest.raises(ValueError, match="fill must be 'silence' or 'floor'"):
        TimeSegments(2, fill="blur").split((wave, 8000), None)
    with pytest.raises(ValueError, match="subdivide must be 3 positive integers"):
        ScanBlocks(subdivide=(2, 2)).split(np.zeros((8, 8, 8)), None)


def test_moving_regions_generator():
    data = make_moving_regions(10, random_state=0)
    assert list(data.frame.columns) == ["scan", "image", "audio"] == data.modalities
    assert set(REGION_MAKERS) >= {"scan", "image", "audio"}  # extendable: one maker per modality
    pos = np.flatnonzero(data.target)
    assert 0 < len(pos) < 10
    for name in data.modalities:
        regions = data.regions[name]
        assert all((r is None) == (y == 0) for r, y in zip(regions, data.target, strict=True))
    boxes = {tuple(s.start for s in data.regions["scan"][p]) for p in pos}
    assert len(boxes) == len(pos)  # the lesion moves from row to row
    volume, box = data.frame["scan"][pos[0]], data.regions["scan"][pos[0]]
    assert volume[box].mean() > volume.mean() + 0.3  # the region holds the evidence
    again = make_moving_regions(10, random_state=0)
    np.testing.assert_array_equal(again.frame["image"][3], data.frame["image"][3])
    with pytest.raises(ValueError, match=r"unknown modalities \['text'\]; choose from"):
        make_moving_regions(10, modalities=("text",))
