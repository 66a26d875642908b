"""CMU-MOSI training videos: leave-videos-out baselines and context variants for pipelines/mosi.yaml.

Encodes the transcripts once with the offline MiniLM (``TextEncoder(backend=
"sentence-transformers")``, the ``embed`` extra) and scores, with 5-fold GroupKFold by video
(the folds of ``pipelines/mosi.yaml``'s ``evaluation.cv: 5``, not the same assignment):

- each modality alone, a soft vote of the two and their concatenation, with
  ``StandardScaler`` + ``LogisticRegression()`` (untuned, C=1) and with C=0.003 (the best of
  0.001-0.3 for words alone on these folds: a choice made on the test folds, so optimistic);
- the context the loader offers: the video's whole transcript (``context``; the 62 distinct
  texts are encoded once each) and the speaker-normalized audio (``audio - audio_context``);
- a leak check: a window of neighbouring utterances *in file order*, which the loader does
  not offer because the file lists all positive utterances first, then all negative ones
  (measured: the 3 neighbours on each side alone score 0.834 at C=0.003, above words alone).

The strategies of the toolkit (early, late, gated) are measured by the study itself:
``TOOLKIT_DATA_DIR=../shared/data mmtk run pipelines/mosi.yaml --out runs/``.

Run: ``TOOLKIT_DATA_DIR=../shared/data python benchmarks/mosi.py``
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from toolkit.datasets import load_mosi
from toolkit.encoders import TextEncoder


def _encode(encoder, texts) -> np.ndarray:
    out = encoder.transform(list(texts))
    return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float64)


def _scores(X, y, groups, C=1.0) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    cv = GroupKFold(n_splits=5)
    return cross_val_predict(model, X, y, groups=groups, cv=cv, method="predict_proba")[:, 1]


def _neighbours(frame: pd.DataFrame, window: int = 3) -> list[str]:
    """The ``window`` utterances before and after each one among its video's rows in FILE
    order (a leak check: the file lists all positive utterances first)."""
    out = [""] * len(frame)
    for rows in frame.groupby("video_id", sort=False).indices.values():
        texts = frame["transcript"].to_numpy()[rows]
        for i, row in enumerate(rows):
            out[row] = " . ".join([*texts[max(i - window, 0) : i], *texts[i + 1 : i + 1 + window]])
    return out


def main() -> None:
    data = load_mosi()
    frame, y, groups = data.frame, data.target, data.groups
    start = time.perf_counter()
    enc = TextEncoder(backend="sentence-transformers").fit(frame["transcript"].tolist())
    words = _encode(enc, frame["transcript"])
    videos = pd.unique(frame["context"])
    by_video = dict(zip(videos, _encode(enc, videos), strict=True))
    context = np.stack([by_video[t] for t in frame["context"]])
    print(f"encoded in {time.perf_counter() - start:.0f} s")
    audio = np.stack(frame["audio_opensmile"]).astype(np.float64)
    speaker_norm = audio - np.stack(frame["audio_context"])
    blocks = {
        "words": words,
        "audio": audio,
        "words + audio": np.hstack([words, audio]),
        "video context": context,
        "words + video context": np.hstack([words, context]),
        "speaker-normalized audio": speaker_norm,
        "words + speaker-normalized audio": np.hstack([words, speaker_norm]),
        "LEAK: file-order neighbours": _encode(enc, _neighbours(frame)),
    }
    majority = np.mean(y == np.bincount(y).argmax())
    print(f"majority class: {majority:.3f}")
    print(f"{'features (5-fold GroupKFold by video)':<40}{'LR()':>8}{'LR(C=0.003)':>13}")
    for name, X in blocks.items():
        accs = [np.mean((_scores(X, y, groups, C) > 0.5) == y) for C in (1.0, 0.003)]
        print(f"{name:<40}{accs[0]:>8.3f}{accs[1]:>13.3f}")
    for C in (1.0, 0.003):
        vote = (_scores(words, y, groups, C) + _scores(audio, y, groups, C)) / 2
        print(f"soft vote of words and audio, C={C}: {np.mean((vote > 0.5) == y):.3f}")


if __name__ == "__main__":
    main()
