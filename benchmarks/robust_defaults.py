"""Fusion defaults on unseen speakers, with and without ``groups`` (issue 24, items 1 and 4).

AV-Digits (FSDD recordings paired by label with scikit-learn digit images, image noise 4
or 6), default encoders, trained on four speakers and tested on the two held out. For each
image pairing (``load_av_digits(random_state=...)``), noise level and held-out speaker
pair it fits every default strategy (early, late, gated, auto), each modality alone (the
default late fusion on one block) and an untuned concatenation + ``LogisticRegression()``,
without and with the training speakers as ``groups``, and records accuracy on the unseen
speakers and wall time. ``auto``'s time is compared with its slowest candidate's single fit
on the same rows.

Embeddings are computed once per (pairing, noise, held-out pair) and kept as ``.npz``
under ``--cache`` (the audio through the toolkit's embedding cache as well), so reruns only
fit fusions::

    TOOLKIT_DATA_DIR=../shared/data python benchmarks/robust_defaults.py \
        --pairings 0 1 --noise 4 6 --test-speakers george,lucas --cache /tmp/rd
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

STRATEGIES = ("early", "late", "gated", "auto")


def embeddings(pairing: int, noise: float, test_speakers: tuple, cache: Path):
    """(Embeddings of all rows, labels, speakers, is_test) for one AV-Digits variant."""
    from toolkit import Embeddings, MultimodalClassifier
    from toolkit.datasets import load_av_digits

    path = cache / f"av_p{pairing}_n{noise:g}_{'-'.join(test_speakers)}.npz"
    if not path.exists():
        data = load_av_digits(image_noise=noise, random_state=pairing, test_speakers=test_speakers)
        df = data.frame
        clf = MultimodalClassifier(data.modalities, memory=cache / "items", random_state=0)
        clf.fit_encoders(df[df["split"] == "train"])
        emb = clf.encode(df)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            audio=emb.blocks["audio"],
            image=emb.blocks["image"],
            y=data.target,
            speaker=df["speaker"].to_numpy().astype(str),
            test=(df["split"] == "test").to_numpy(),
        )
    z = np.load(path)
    emb = Embeddings({"audio": z["audio"], "image": z["image"]})
    return emb, z["y"], z["speaker"], z["test"]


def concat_baseline(emb_tr, y_tr, emb_te) -> np.ndarray:
    """Untuned concatenation: standardized blocks side by side + ``LogisticRegression()``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_tr = np.hstack([emb_tr.blocks[n] for n in emb_tr.names])
    X_te = np.hstack([emb_te.blocks[n] for n in emb_te.names])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return model.fit(X_tr, y_tr).predict(X_te)


def fit_one(fusion, emb_tr, y_tr, groups, emb_te):
    """(predictions, seconds, fitted model) of one default strategy."""
    from toolkit import MultimodalClassifier

    model = MultimodalClassifier(fusion=fusion, random_state=0)
    start = time.perf_counter()
    kwargs = {} if groups is None else {"groups": groups}
    model.fit(emb_tr, y_tr, **kwargs)
    seconds = time.perf_counter() - start
    return model.predict(emb_te), seconds, model


def run_variant(pairing, noise, test_speakers, cache, strategies, modes, singles=True):
    """Rows (one per model and mode) for one pairing, noise level and held-out speaker pair."""
    emb, y, speaker, test = embeddings(pairing, noise, test_speakers, cache)
    emb_tr, emb_te, y_tr, y_te = emb[~test], emb[test], y[~test], y[test]
    base = dict(pairing=pairing, noise=noise, test="-".join(test_speakers))
    rows = []

    def record(row):
        rows.append(row)
        print(row, flush=True)

    start = time.perf_counter()
    pred = concat_baseline(emb_tr, y_tr, emb_te)
    record(
        dict(
            base,
            groups=False,
            model="concat+LR",
            acc=float(np.mean(pred == y_te)),
            seconds=time.perf_counter() - start,
        )
    )
    for use_groups in modes:
        groups = speaker[~test] if use_groups else None
        for name in emb.names if singles else ():
            pred, seconds, _ = fit_one(
                "late", emb_tr.select([name]), y_tr, groups, emb_te.select([name])
            )
            record(
                dict(
                    base,
                    groups=use_groups,
                    model=f"only {name}",
                    acc=float(np.mean(pred == y_te)),
                    seconds=seconds,
                )
            )
        for strategy in strategies:
            pred, seconds, model = fit_one(strategy, emb_tr, y_tr, groups, emb_te)
            row = dict(
                base,
                groups=use_groups,
                model=strategy,
                acc=float(np.mean(pred == y_te)),
                seconds=seconds,
            )
            if strategy == "auto":
                row["chosen"] = model.fusion_.chosen_
                res = model.fusion_.cv_results_
                row["cv_fit_time"] = dict(
                    zip(res["candidate"], np.round(res["mean_fit_time"], 2), strict=True)
                )
            record(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairings", type=int, nargs="+", default=[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[4.0])
    parser.add_argument(
        "--test-speakers",
        nargs="+",
        default=["george,lucas"],
        help="held-out speaker pairs, each 'a,b'",
    )
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["none", "speakers"],
        choices=["none", "speakers"],
        help="fit without / with groups",
    )
    parser.add_argument("--no-singles", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(".robust_defaults_cache"))
    parser.add_argument("--out", type=Path, default=None, help="CSV of all rows")
    args = parser.parse_args(argv)
    rows = []
    for pairing in args.pairings:
        for noise in args.noise:
            for pair in args.test_speakers:
                speakers = tuple(pair.split(","))
                modes = [m == "speakers" for m in args.modes]
                new = run_variant(
                    pairing,
                    noise,
                    speakers,
                    args.cache,
                    args.strategies,
                    modes,
                    singles=not args.no_singles,
                )
                rows += new
    frame = pd.DataFrame(rows)
    if args.out:
        frame.to_csv(args.out, index=False)
    table = frame.pivot_table(index=["groups", "model"], values=["acc", "seconds"], aggfunc="mean")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
