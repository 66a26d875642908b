"""Issue 17: cost of the explanation extensions, against a baseline measured in the same run.

- interactions: ``interaction_values`` vs the Shapley values on the same cached embeddings
  (both evaluate the fusion on 2^M coalitions; the ratio is the extra arithmetic);
- intervals: the row bootstrap (2,000 resamples) vs the explanation it summarizes;
- drill-down: encoder calls per row (counted by wrapping the encoder) and wall time per row,
  against the time of ``explain`` per row on the same rows.

Run: ``python benchmarks/explain_extensions.py`` (prints a markdown table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HEADER, Row, machine, timed  # noqa: E402


def _clips(n, seed=0):
    from toolkit import TabularEncoder
    from toolkit.datasets import make_sentiment_clips

    data = make_sentiment_clips(
        n, text_strength=2, audio_strength=2, face_strength=2, random_state=seed
    )
    return data.frame, data.target, data.modalities + [("context", TabularEncoder(), ["arousal"])]


def interactions(n=1000) -> list[Row]:
    from toolkit import MultimodalClassifier
    from toolkit.explain import interaction_values

    df, y, mods = _clips(n)
    rows = []
    for fusion in ("early", "late"):
        clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
        emb = clf.encode(df)
        t_phi, _ = timed(clf.explain, emb, repeat=3)
        t_int, inter = timed(interaction_values, clf, emb, repeat=3)
        M = inter.values.shape[1]
        rows.append(
            Row("17a", f"interactions/Shapley on cached embeddings, {fusion}, M={M}, N={n}",
                t_int / t_phi, "x", "2^M fusion evaluations (same as Shapley)", None,
                f"Shapley {t_phi * 1e3:.1f} ms, interactions {t_int * 1e3:.1f} ms, {2**M} coalitions each")
        )  # fmt: skip
        if fusion == "late":
            from toolkit.explain import contribution_intervals

            exp = clf.explain(emb)
            t_ci, _ = timed(contribution_intervals, exp, n_resamples=2000, random_state=0)
            groups = np.arange(n) // 5
            t_cl, _ = timed(contribution_intervals, exp, groups=groups, n_resamples=2000, random_state=0)
            rows.append(
                Row("17b", f"row bootstrap of mean abs(phi), shares, means, M={M}, N={n}, 2,000 resamples",
                    t_ci, "s", "reported", None,
                    f"cluster bootstrap over {n // 5} groups: {t_cl:.3f} s; explain on cached embeddings {t_phi * 1e3:.1f} ms")
            )  # fmt: skip
    return rows


def _counting(encoder_class):
    class Counting(encoder_class):
        calls = 0

        def encode(self, X):
            type(self).calls += len(X)
            return super().encode(X)

    Counting.__name__ = encoder_class.__name__
    return Counting


def drill_down_cost(n_rows=5) -> list[Row]:
    from toolkit import (
        AudioEncoder,
        ImageEncoder,
        MultimodalClassifier,
        TabularEncoder,
        TextEncoder,
    )
    from toolkit.explain import ImageGrid, TimeSegments, drill_down

    df, y, _ = _clips(300)
    Text, Image, Audio = (_counting(c) for c in (TextEncoder, ImageEncoder, AudioEncoder))
    mods = [
        ("text", Text(n_components=32, random_state=0), "transcript"),
        ("audio", Audio(sample_rate=8000), "audio"),
        ("face", Image(), "face"),
        ("context", TabularEncoder(), ["arousal"]),
    ]
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)
    rows_df = df.iloc[:n_rows]
    t_exp, _ = timed(clf.explain, rows_df)
    cases = [
        ("text", None, Text, "words (exact up to 10, else 64 sampled orders)"),
        ("audio", TimeSegments(n_segments=8), Audio, "8 time segments, exact"),
        ("face", ImageGrid(rows=2, cols=2), Image, "2x2 cells, exact"),
        ("face", ImageGrid(rows=4, cols=4), Image, "4x4 cells, sampled, 64 orders"),
    ]
    out = []
    for modality, masker, counter, label in cases:
        counter.calls = 0
        t, exp = timed(drill_down, clf, rows_df, modality, masker, random_state=0)
        calls = (counter.calls - n_rows) / n_rows  # minus the rows' own encoding
        parts = [np.shape(v)[0] for v in exp.values]
        errors = np.concatenate([np.ravel(e) for e in exp.error_std])
        err = float(errors.mean())
        out.append(
            Row("17c", f"drill-down {modality}: {label}", calls, "encoder calls/row", "2^d - 2 exact; <= 64 (d - 1) sampled", None,
                f"d = {min(parts)}-{max(parts)}; {t / n_rows:.2f} s/row vs explain {t_exp / n_rows * 1e3:.0f} ms/row; mean error_std {err:.4f}")
        )  # fmt: skip
    return out


def main():
    import datetime

    print(f"Machine: {machine()}. Date: {datetime.date.today()}.\n")
    print(HEADER, flush=True)
    for rows in (drill_down_cost, interactions):
        for row in rows():
            print(row.line(), flush=True)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
