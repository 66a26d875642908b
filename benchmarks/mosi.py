"""CMU-MOSI training videos: leave-videos-out baselines and context variants for pipelines/mosi.yaml.

Encodes the transcripts once with the offline MiniLM (``TextEncoder(backend=
"sentence-transformers")``, the ``embed`` extra) and scores, with 5-fold GroupKFold by video
(the folds of ``pipelines/mosi.yaml``'s ``evaluation.cv: 5``, not the same assignment):

- each modality alone (``StandardScaler`` + ``LogisticRegression()``, untuned);
- a soft vote of the two single-modality models and an untuned concatenation + LR;
- the context the loader offers: the video's whole transcript (``context``; the 62 distinct
  texts are encoded once each) and the speaker-normalized audio (``audio - audio_context``);
- a leak check: a window of neighbouring utterances *in file order*, which the loader does
  not offer because the file lists each video's positive utterances first.

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


def _scores(X, y, groups) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = GroupKFold(n_splits=5)
    return cross_val_predict(model, X, y, groups=groups, cv=cv, method="predict_proba")[:, 1]


def _neighbours(frame: pd.DataFrame, window: int = 3) -> list[str]:
    """The ``window`` utterances before and after each one in FILE order (a leak check)."""
    out = []
    for _, rows in frame.groupby("video_id", sort=False):
        texts = rows["transcript"].tolist()
        for i in range(len(texts)):
            out.append(" . ".join(texts[max(i - window, 0) : i] + texts[i + 1 : i + 1 + window]))
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
    p_words, p_audio = _scores(words, y, groups), _scores(audio, y, groups)
    rows = {
        "majority class": np.full(len(y), np.bincount(y).argmax(), dtype=float),
        "words alone": p_words,
        "audio alone": p_audio,
        "soft vote words + audio": (p_words + p_audio) / 2,
        "concatenation words + audio + LR": _scores(np.hstack([words, audio]), y, groups),
        "video context alone": _scores(context, y, groups),
        "words + video context": _scores(np.hstack([words, context]), y, groups),
        "speaker-normalized audio alone": _scores(speaker_norm, y, groups),
        "words + speaker-normalized audio": _scores(np.hstack([words, speaker_norm]), y, groups),
    }
    leak = _encode(enc, _neighbours(frame))
    rows["LEAK: file-order neighbours alone"] = _scores(leak, y, groups)
    print(f"{'model (5-fold GroupKFold by video, 62 videos)':<48}accuracy")
    for name, p in rows.items():
        print(f"{name:<48}{np.mean((p > 0.5) == y):.3f}")


if __name__ == "__main__":
    main()
