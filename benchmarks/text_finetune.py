"""Text fine-tuning (issue 16): the offline MiniLM frozen vs fine-tuned on UCI sentences.

    python benchmarks/text_finetune.py [--seeds 0,1] [--crossfit-seeds 0] [--encoder-cv 3]
                                       [--trainable-layers 2] [--data-dir DIR]

UCI Sentiment Labelled Sentences (3,000 real review sentences, Amazon/IMDb/Yelp, 500/500
per source), a stratified held-out split of 25% per seed. Every model is the toolkit's own
``MultimodalClassifier`` (default fusion) on one text modality, encoded by the offline
all-MiniLM-L6-v2 of the ``embed`` extra (``TextEncoder(backend="transformers")``, model=None):

- ``frozen``: the pretrained MiniLM, mean-pooled (no labels reach it);
- ``fine-tuned head``: ``fine_tune=True`` trained on the training rows alone; its head's
  argmax on the held-out rows (the encoder by itself, one training run);
- ``fine-tuned model`` (seeds in ``--crossfit-seeds``): the same encoder inside
  ``MultimodalClassifier``, which cross-fits it (``encoder_cv`` inner folds + one final fit)
  and trains the fusion on its out-of-fold head outputs.

Goal: the fine-tuned model beats the frozen one by >= 2 points of held-out accuracy. CPU
training times: wall times of the fits on this machine, and the fine-tuning's process CPU time
(one torch thread, as the encoder trains on the CPU).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine  # noqa: E402


def split(y: np.ndarray, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--crossfit-seeds", default="0")
    parser.add_argument("--encoder-cv", type=int, default=3)
    parser.add_argument("--trainable-layers", type=int, default=2)
    parser.add_argument(
        "--crossfit-only", action="store_true", help="skip the frozen and head-only rows"
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TOOLKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")),
    )
    args = parser.parse_args()

    from toolkit import MultimodalClassifier, TextEncoder
    from toolkit.datasets import load_uci_sentences

    data = load_uci_sentences(args.data_dir)
    df, y = data.frame[["sentence"]], data.target
    print(f"# {machine()}, {datetime.date.today()}, {len(y)} sentences")
    crossfit_seeds = {int(s) for s in args.crossfit_seeds.split(",") if s}
    for seed in (int(s) for s in args.seeds.split(",")):
        train, test = split(y, seed)
        tune = {
            "backend": "transformers",
            "device": "cpu",
            "max_length": 64,
            "fine_tune": True,
            "trainable_layers": args.trainable_layers,
        }
        if seed in crossfit_seeds:
            start = time.perf_counter()
            tuned = MultimodalClassifier(
                [("text", TextEncoder(**tune), "sentence")],
                random_state=seed,
                encoder_cv=args.encoder_cv,
            ).fit(df.iloc[train], y[train])
            t_model = time.perf_counter() - start
            acc_model = float(np.mean(tuned.predict(df.iloc[test]) == y[test]))
            print(
                f"seed {seed}: fine-tuned model (encoder_cv={args.encoder_cv}) {acc_model:.4f} "
                f"(fit {t_model:.0f} s)",
                flush=True,
            )
        if args.crossfit_only:
            continue
        start = time.perf_counter()
        frozen = MultimodalClassifier(
            [("text", TextEncoder(backend="transformers", device="cpu", max_length=64),
              "sentence")],
            random_state=seed,
        ).fit(df.iloc[train], y[train])  # fmt: skip
        t_frozen = time.perf_counter() - start
        acc_frozen = float(np.mean(frozen.predict(df.iloc[test]) == y[test]))

        start, cpu = time.perf_counter(), time.process_time()
        enc = TextEncoder(**tune, random_state=seed).fit(df["sentence"].iloc[train], y[train])
        t_head, cpu_head = time.perf_counter() - start, time.process_time() - cpu
        scores, _ = enc.encode_scores(df["sentence"].iloc[test])
        acc_head = float(np.mean(scores.argmax(1) == y[test]))
        print(
            f"seed {seed}: frozen {acc_frozen:.4f} (fit {t_frozen:.0f} s); fine-tuned head "
            f"{acc_head:.4f} ({acc_head - acc_frozen:+.4f}; one fine-tuning {t_head:.0f} s wall, "
            f"{cpu_head:.0f} s CPU, "
            f"{enc.n_epochs_} epochs, best {enc.best_epoch_}, history {enc.history_})",
            flush=True,
        )


if __name__ == "__main__":
    main()
