"""Row 1: explain(X) / predict(X) wall time, M = 4 modalities, N = 1,000 rows.

Both calls read and encode the raw items (text, waveforms, images, table) once; explain
then evaluates the fusion on the 2^M = 16 coalitions of cached embeddings. Also reports
how explain time grows with N and with M.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, timed  # noqa: E402


def _data(n, seed=0):
    from toolkit import TabularEncoder
    from toolkit.datasets import make_sentiment_clips

    data = make_sentiment_clips(
        n, text_strength=2, audio_strength=2, face_strength=2, random_state=seed
    )
    mods = data.modalities + [("context", TabularEncoder(), ["arousal"])]
    return data.frame, data.target, mods


def explain_ratio(n=1000, fusions=("early", "late", "gated")) -> list[Row]:
    from toolkit import MultimodalClassifier

    df, y, mods = _data(n)
    rows = []
    for fusion in fusions:
        clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
        t_pred, _ = timed(clf.predict_proba, df)
        t_exp, exp = timed(clf.explain, df)
        ratio = t_exp / t_pred
        rows.append(
            Row(
                "1",
                f"explain/predict, {fusion}, M=4, N={n}",
                ratio,
                "x",
                "<= 1.3",
                ratio <= 1.3,
                f"predict {t_pred:.2f} s, explain {t_exp:.2f} s",
            )  # fmt: skip
        )
    return rows


def scaling() -> list[Row]:
    """Explain time for N = 250..2000 (late fusion), and for M = 2..6 on cached embeddings."""
    from toolkit import Embeddings, ModalityExplainer, MultimodalClassifier, TabularEncoder

    rows = []
    df, y, mods = _data(2000, seed=1)
    clf = MultimodalClassifier(mods, fusion="late", random_state=0).fit(df[:500], y[:500])
    base = None
    for n in (250, 500, 1000, 2000):
        t, _ = timed(clf.explain, df[:n])
        base = base or t / n
        rows.append(
            Row(
                "1b",
                f"explain time, N={n}",
                t,
                "s",
                "linear in N",
                None,
                f"per row x{(t / n) / base:.2f} of N=250",
            )
        )
    rng = np.random.default_rng(0)
    for M in range(2, 7):
        frame = {f"x{m}": rng.normal(size=1000) for m in range(M)}
        import pandas as pd

        frame = pd.DataFrame(frame)
        target = (frame.sum(axis=1) > 0).astype(int)
        model = MultimodalClassifier(
            [(f"m{m}", TabularEncoder(), [f"x{m}"]) for m in range(M)],
            fusion="late",
            random_state=0,
        )
        model.fit(frame, target)
        emb = model.embed(frame)
        assert isinstance(emb, Embeddings)
        t, _ = timed(ModalityExplainer(model), emb)
        rows.append(
            Row(
                "1c",
                f"explain on cached embeddings, M={M}, N=1000",
                t,
                "s",
                "2^M fusion evaluations",
                None,
                f"{2**M} coalitions",
            )
        )
    return rows


if __name__ == "__main__":
    for row in explain_ratio() + scaling():
        print(row.line())
