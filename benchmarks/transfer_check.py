"""The transfer check (``toolkit.diagnostics.group_transfer``) on AV-Digits (issue 24):
is the audio block flagged as speaker-specific and the image block not, on every pairing?

For each pairing seed (``load_av_digits(random_state=seed)``: which digit image goes with
which recording), the training speakers' rows (or ``--rows`` of them, drawn with a fixed
seed) are checked with the default encoders, speakers as groups. The audio encoder is
fixed, so its embeddings are cached across pairings (``memory``). Prints one line per
modality and pairing and whether the goal holds. Real data: skipped without the folder.

    python benchmarks/transfer_check.py --seeds 0 1 2 --noise 4 --rows 2000 [--model] [--cnn]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np


def check_pairing(seed: int, data_dir, noise: float, rows: int, cache, model: bool, cnn: bool):
    from toolkit import ImageEncoder, MultimodalClassifier
    from toolkit.datasets import load_av_digits
    from toolkit.diagnostics import group_transfer

    data = load_av_digits(data_dir, image_noise=noise, random_state=seed)
    df = data.frame[data.frame["split"] == "train"]
    if rows < len(df):
        df = df.iloc[np.sort(np.random.default_rng(0).choice(len(df), rows, replace=False))]
    modalities = data.modalities
    if cnn:  # the trainable image CNN: cross-fitted over rows (within) and speakers (across)
        image = ImageEncoder(backend="cnn", value_range=(0.0, 16.0), progress=False)
        modalities = [modalities[0], ("image", image, "image")]
    clf = MultimodalClassifier(modalities, memory=cache, random_state=0)
    start = time.perf_counter()
    check = group_transfer(
        clf, df, df["label"], df["speaker"], cv=4, model=model, group_name="speakers"
    )
    return check, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=4.0)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--model", action="store_true", help="also the per-speaker model scores")
    parser.add_argument("--cnn", action="store_true", help="ImageEncoder(backend='cnn')")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    from toolkit.datasets.loaders import data_home

    try:
        data_home(args.data_dir, "fsdd")
    except FileNotFoundError as exc:
        print(f"skipped: {exc}")
        return 0
    met = True
    with tempfile.TemporaryDirectory(prefix="transfer-cache-") as cache:
        for seed in args.seeds:
            check, seconds = check_pairing(
                seed, args.data_dir, args.noise, args.rows, cache, args.model, args.cnn
            )
            image = "CNN image encoder" if args.cnn else "default encoders"
            print(
                f"pairing {seed}, image noise {args.noise:g}, {args.rows} rows, {image}: {seconds:.1f} s"
            )
            print(check.summary())
            flagged = set(check.flagged)
            ok = "audio" in flagged and "image" not in flagged
            met &= ok
            print(
                f"goal (audio flagged, image not) on pairing {seed}: {'met' if ok else 'MISSED'}\n"
            )
    print(f"goal on every pairing: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
