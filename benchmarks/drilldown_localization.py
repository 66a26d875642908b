"""Drill-down localization (issue 27): does the top-ranked part of a positive row hold its
evidence, when the evidence moves from row to row?

Part 1, known answers: for each of scan, image and audio, a one-modality model (early
fusion, logistic regression) is fitted on 60 rows of
``toolkit.datasets.localization.make_moving_regions`` (seed 21) and 20 positive rows of
another draw (seed 22) are drilled with the encoder's own masker, with drill_down's
defaults and with the study's settings (max_parts 8, 16 walks). A row is a hit when its
top-ranked part (resolved first, then |value|) holds the largest share of the true region.

Part 2, the issue's case: late fusion on ``make_clinical_cohort(300, scan_size=24)``; the
scan drill-down of the 4 positives with the strongest scan signal and 4 negatives, with the
old masker (8 blocks filled with 0) and the new default (64 blocks in 8, blurred, 16 walks):
cosine similarity of the rows' block vectors, and each row's top block.

Part 3, the cohort's intensity scaling: a scan-only model (late fusion, the patients as
``groups`` as in the study; ``--no-groups``: without) fitted on 200 rows of
``make_clinical_cohort(300, scan_size=24, random_state=seed)``; the first 24 positives of the
other 100 rows drilled (64 blurred blocks in 8, 8 walks) with the encoder's default per-volume
1st/99th-percentile scaling and with the fixed window ``intensity_range=(0, 1)``. For each
row holding lesion voxels (> 0.7 in the raw volume; body 0.4, lesions 0.9): whether the
top-ranked block holds any (chance: the share of blocks that do), whether it is the densest,
and the correlation of the block values with the blocks' lesion voxel counts.

Run: ``python benchmarks/drilldown_localization.py [--skip-cohort] [--scaling-seeds 0,1,2,3]
[--only-scaling]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def _overlap(region, box) -> int:
    return math.prod(
        max(0, min(a.stop, b.stop) - max(a.start, b.start))
        for a, b in zip(region, box, strict=True)
    )


def known_answers(modality: str, **settings) -> dict:
    from sklearn.linear_model import LogisticRegression

    from toolkit import AudioEncoder, EarlyFusion, ImageEncoder, MultimodalClassifier, ScanEncoder
    from toolkit.datasets.localization import make_moving_regions
    from toolkit.explain import drill_down, rank_parts

    encoder = {
        "scan": lambda: ScanEncoder(spatial_size=(12, 12, 12), hist_bins=8, grid=2),
        "image": lambda: ImageEncoder(pixel_size=4),
        "audio": lambda: AudioEncoder(sample_rate=8000),
    }[modality]()
    fit = make_moving_regions(60, modalities=(modality,), random_state=21)
    clf = MultimodalClassifier(
        [(modality, encoder, modality)],
        fusion=EarlyFusion(estimator=LogisticRegression()),
        random_state=0,
    ).fit(fit.frame, fit.target)
    data = make_moving_regions(60, modalities=(modality,), random_state=22)
    pos = np.flatnonzero(data.target == 1)[:20]
    rows = data.frame.iloc[pos]
    start = time.perf_counter()
    explanation = drill_down(clf, rows, modality, random_state=0, **settings)
    seconds = time.perf_counter() - start
    encoder = clf.encoders_[modality]
    masker, hits, resolved = encoder.masker(), [], []
    for i, p in enumerate(pos):
        parts = masker.split(rows[modality].iloc[i], encoder)
        overlap = np.array([_overlap(r, data.regions[modality][p]) for r in parts.regions])
        top = rank_parts(explanation, i)[0]
        hits.append(overlap[top] == overlap.max())
        resolved.append(bool(explanation.resolved[i][top]))
    return {
        "modality": modality, "settings": settings, "rows": len(pos),
        "hits": int(np.sum(hits)), "top_resolved": int(np.sum(resolved)),
        "exact": bool(explanation.exact.all()),
        "encoder_calls_per_row": float(explanation.encoder_calls.mean()), "seconds": seconds,
    }  # fmt: skip


def cohort() -> list[dict]:
    from sklearn.base import clone

    from toolkit import LateFusion, MultimodalClassifier
    from toolkit.datasets import make_clinical_cohort
    from toolkit.explain import ScanBlocks, drill_down, rank_parts

    data = make_clinical_cohort(300, scan_size=24, random_state=0)
    mods = [(n, clone(e), c) for n, e, c in data.modalities]
    clf = MultimodalClassifier(mods, fusion=LateFusion(), random_state=0)
    clf.fit(data.frame, data.target)
    y, signal = np.asarray(data.target), data.frame["signal_scan"].to_numpy()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    X = data.frame.iloc[list(pos[np.argsort(-signal[pos])[:4]]) + list(neg[:4])]
    out = []
    for name, masker, settings in [
        ("8 blocks, fill 0 (before)", ScanBlocks(), {}),
        ("64 blocks in 8, blur, 16 walks", None, {"max_parts": 8, "n_permutations": 16}),
    ]:
        e = drill_down(clf, X, "scan", masker, random_state=0, **settings)
        unit = e.values / np.linalg.norm(e.values, axis=1, keepdims=True)
        cos = unit @ unit.T
        out.append({
            "masker": name,
            "cosine_all_pairs": [float(cos[np.triu_indices(8, 1)].min()),
                                 float(cos[np.triu_indices(8, 1)].max())],
            "cosine_positive_negative": [float(cos[:4, 4:].min()), float(cos[:4, 4:].max())],
            "top_parts": [str(e.feature_names[rank_parts(e, i)[0]]) for i in range(8)],
            **_lesion_hits(e, X["scan"], rank_parts),
        })  # fmt: skip
    return out


def _lesion_hits(e, scans, rank_parts) -> dict:
    """For the 4 positives (rows 0-3) of a 64-block drill-down: whether the top-ranked block
    is the block holding most lesion voxels (> 0.8; body 0.4, lesions 0.9), and whether it
    holds any; the lesion voxels of the top block and of the densest block."""
    if len(e.feature_names) != 64:
        return {}
    out = {"top_is_densest": [], "top_has_lesion": [], "lesion_voxels_top_densest": []}
    for i in range(4):
        vol = np.asarray(scans.iloc[i]) > 0.8
        side = vol.shape[0] // 4
        counts = vol[: 4 * side, : 4 * side, : 4 * side].reshape(
            4, side, 4, side, 4, side).sum(axis=(1, 3, 5)).ravel()  # fmt: skip
        top = int(rank_parts(e, i)[0])
        out["top_is_densest"].append(bool(counts[top] == counts.max()))
        out["top_has_lesion"].append(bool(counts[top] > 0))
        out["lesion_voxels_top_densest"].append([int(counts[top]), int(counts.max())])
    return out


def scaling(seed: int, window, grouped: bool = True) -> dict:
    from sklearn.metrics import roc_auc_score

    from toolkit import MultimodalClassifier, ScanEncoder
    from toolkit.datasets import make_clinical_cohort
    from toolkit.explain import drill_down, rank_parts

    data = make_clinical_cohort(300, scan_size=24, random_state=seed)
    frame, y = data.frame, np.asarray(data.target)
    enc = ScanEncoder(spatial_size=(24, 24, 24), intensity_range=window, progress=False)
    clf = MultimodalClassifier([("scan", enc, "scan")], fusion="late", random_state=0)
    groups = frame["patient_id"].to_numpy()[:200] if grouped else None  # as the study does
    clf.fit(frame.iloc[:200], y[:200], **({"groups": groups} if grouped else {}))
    auroc = roc_auc_score(y[200:], clf.predict_proba(frame.iloc[200:])[:, 1])
    test = frame.iloc[200:]
    rows = np.flatnonzero(y[200:] == 1)[:24]
    e = drill_down(clf, test.iloc[rows], "scan", n_permutations=8, random_state=0)
    masker = enc.masker()
    hits, densest, chance, corr = [], [], [], []
    for i, r in enumerate(rows):
        vol = np.asarray(test["scan"].iloc[r])
        counts = np.array([(vol[g] > 0.7).sum() for g in masker.split(vol, None).regions])
        if counts.sum() == 0:
            continue
        top = int(rank_parts(e, i)[0])
        hits.append(bool(counts[top] > 0))
        densest.append(bool(counts[top] == counts.max()))
        chance.append(float((counts > 0).mean()))
        corr.append(float(np.corrcoef(e.values[i], counts)[0, 1]))
    return {
        "seed": seed, "intensity_range": window, "groups": grouped,
        "scan_auroc": round(float(auroc), 3),
        "rows_with_lesion": len(hits), "top_holds_lesion": int(sum(hits)),
        "top_is_densest": int(sum(densest)), "chance": round(float(np.mean(chance)), 3),
        "mean_corr": round(float(np.mean(corr)), 3),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cohort", action="store_true")
    parser.add_argument("--scaling-seeds", default="0,1,2,3")
    parser.add_argument("--only-scaling", action="store_true")
    parser.add_argument("--no-groups", action="store_true",
                        help="part 3 without the patients as groups (pseudo-groups inferred)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.scaling_seeds.split(",") if s]
    for seed in seeds:
        for window in (None, (0.0, 1.0)):
            print(scaling(seed, window, grouped=not args.no_groups), flush=True)
    if args.only_scaling:
        return
    study = {"max_parts": 8, "n_permutations": 16}
    for modality, settings in [
        ("image", {}), ("image", study), ("audio", {}), ("audio", study),
        ("scan", {"n_permutations": 8}), ("scan", study),
    ]:  # fmt: skip
        print(known_answers(modality, **settings), flush=True)
    if not args.skip_cohort:
        for row in cohort():
            print(row, flush=True)


if __name__ == "__main__":
    main()
