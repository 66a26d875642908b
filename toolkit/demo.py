"""``python -m toolkit.demo``: fit early, late and gated fusion on generated clips and
print held-out scores and modality contributions (the ``make demo`` job)."""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-samples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from toolkit import MultimodalClassifier
    from toolkit.datasets import make_sentiment_clips
    from toolkit.explain import modality_shares

    start = time.perf_counter()
    data = make_sentiment_clips(
        args.n_samples, text_strength=3, audio_strength=3, face_strength=3, random_state=args.seed
    )
    rng = np.random.RandomState(args.seed)
    order = rng.permutation(args.n_samples)
    train, test = order[: args.n_samples // 2], order[args.n_samples // 2 :]
    df, y = data.frame, data.target
    print(
        f"SYNTHETIC sentiment clips (transcript + voice + face): {len(train)} train / {len(test)} test"
    )
    print(f"data card: {data.data_card}")
    print(f"{'model':<22}{'accuracy':>10}")
    for name, encoder, column in data.modalities:
        clf = MultimodalClassifier(
            [(name, encoder, column)], fusion="early", random_state=args.seed
        )
        clf.fit(df.iloc[train], y[train])
        print(f"{name + ' only':<22}{clf.score(df.iloc[test], y[test]):>10.3f}")
    for fusion in ("early", "late", "gated"):
        clf = MultimodalClassifier(data.modalities, fusion=fusion, random_state=args.seed)
        clf.fit(df.iloc[train], y[train])
        score = clf.score(df.iloc[test], y[test])
        shares = modality_shares(clf.explain(df.iloc[test]))
        parts = ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
        print(f"{fusion + ' fusion':<22}{score:>10.3f}   modality shares (exact Shapley): {parts}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
