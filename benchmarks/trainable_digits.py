"""AV-Digits with the trainable image CNN (issue 16): image-only and fused accuracy on the
two unseen speakers (image noise 4), for one or more pairing seeds.

The encoders are fitted once per seed with ``fit_encode`` on the training rows (the CNN
cross-fitted over speaker-grouped inner folds, as ``fit`` does), the test rows are encoded
with the encoders trained on every training row, and each model (one modality, or a fusion
strategy) is fitted on those embeddings. Real data: skipped without the data folder.

    python benchmarks/trainable_digits.py --seeds 0 1 --image '{"augment_shift": 0}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def run_seed(seed: int, data_dir, image_kwargs: dict, fusions, noise: float) -> list[dict]:
    from sklearn.base import clone

    from toolkit import AudioEncoder, ImageEncoder, MultimodalClassifier
    from toolkit.datasets import load_av_digits

    data = load_av_digits(data_dir, image_noise=noise, random_state=seed)
    df, y = data.frame, data.target
    train, test = (df["split"] == "train").to_numpy(), (df["split"] == "test").to_numpy()
    groups = df["speaker"].to_numpy()[train]
    image = ImageEncoder(backend="cnn", value_range=(0.0, 16.0), progress=False, **image_kwargs)
    mods = [
        ("audio", AudioEncoder(sample_rate=8000, progress=False), "audio"),
        ("image", image, "image"),
    ]
    clf = MultimodalClassifier(mods, random_state=0)
    start = time.perf_counter()
    emb_tr = clf.fit_encode(df[train], y[train], groups=groups)
    emb_te = clf.encode(df[test])
    encode_s = time.perf_counter() - start
    rows = []

    def score(model, tr, te, name, seconds):
        proba = model.predict_proba(te)
        acc = float(np.mean(model.classes_[proba.argmax(1)] == y[test]))
        rows.append(dict(seed=seed, model=name, acc=round(acc, 4), seconds=round(seconds, 1)))

    # the image encoder's own head (trained on every training row), without a fusion model
    head = emb_te.blocks["image"]
    acc = float(np.mean(np.unique(y[train])[head.argmax(1)] == y[test]))
    rows.append(dict(seed=seed, model="image CNN head argmax", acc=round(acc, 4), seconds=0.0))
    for name in ("image", "audio"):
        start = time.perf_counter()
        single = MultimodalClassifier(random_state=0).fit(
            emb_tr.select([name]), y[train], groups=groups
        )
        score(single, None, emb_te.select([name]), f"only {name}", time.perf_counter() - start)
    for fusion in fusions:
        start = time.perf_counter()
        model = clone(clf).set_params(fusion=fusion).fit(emb_tr, y[train], groups=groups)
        score(model, None, emb_te, f"fusion {fusion}", time.perf_counter() - start)
    rows.append(dict(seed=seed, model="encoders (fit_encode + encode)", acc=None,
                     seconds=round(encode_s, 1)))  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--image", default="{}", help="ImageEncoder keyword arguments (JSON)")
    parser.add_argument("--fusions", nargs="+", default=["late", "early", "gated", "auto"])
    parser.add_argument("--noise", type=float, default=4.0)
    args = parser.parse_args(argv)
    if not (Path(args.data_dir) / "fsdd").exists():
        print(f"skipped: no AV-Digits data under {args.data_dir}", file=sys.stderr)
        return 0
    kwargs = json.loads(args.image)
    for seed in args.seeds:
        for row in run_seed(seed, args.data_dir, kwargs, args.fusions, args.noise):
            print(json.dumps({**row, "image": kwargs}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
