"""The fusion table: every strategy against its own single-modality models and their vote.

    python benchmarks/fusion_table.py [--tasks three_view,interaction,av0,av4,av6]
                                      [--seeds 5] [--strategies early,late,...] [--data-dir DIR]

Tasks (all measured on held-out rows, in one run):

- ``three_view``: three independently noisy views of a binary label (each view's cue agrees
  with the label 80% of the time), tabular blocks of 4, 16 and 64 columns, 300 training rows,
  2,000 test rows. A majority vote of three 80% views is right 89.6% of the time (the Bayes
  accuracy given the three cues).
- ``interaction``: two blocks of 6 columns; the label is the XOR of the signs of one column of
  each, flipped with probability 0.05 (Bayes accuracy 0.95); each block alone is at chance.
  700 training rows, 2,000 test rows.
- ``av0``, ``av4``, ``av6``: AV-Digits (real recordings of 4 speakers for training, 2 unseen
  speakers for testing; digit images from disjoint pools) with image noise sd 0, 4 and 6;
  each seed is another image pairing. Training groups are the speakers.

For every task and seed the raw data are encoded once with the default encoders (fitted on the
training rows) and every model is fitted on those embeddings: each single-modality model is
the toolkit's own ``MultimodalClassifier`` default on that modality alone, the vote is a
majority vote of their predicted labels (ties broken by the summed probabilities), and each
strategy is ``MultimodalClassifier(fusion=name)`` with its defaults.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine  # noqa: E402

DEFAULT_STRATEGIES = ("early", "late", "gated", "attention", "tensor", "lowrank", "auto")


def three_view(seed: int, n_train: int = 300, n_test: int = 2000, agree: float = 0.8):
    """Three noisy views of a binary label as tabular blocks of 4, 16 and 64 columns."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 2, n)
    cols, modalities = {}, []
    for m, width in enumerate((4, 16, 64)):
        view = np.where(rng.random(n) < agree, y, 1 - y)
        block = rng.normal(size=(n, width))
        block[:, :2] += 1.5 * (2 * view[:, None] - 1)
        names = [f"v{m}_{j}" for j in range(width)]
        cols.update(dict(zip(names, block.T, strict=True)))
        modalities.append((f"view{m}", names))
    df = pd.DataFrame(cols)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    return df, y, None, split, modalities, 0.896


def interaction(seed: int, n_train: int = 700, n_test: int = 2000, flip: float = 0.05):
    """XOR of one column's sign in each of two 6-column blocks, labels flipped w.p. ``flip``."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    a, b = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    y = ((a[:, 0] > 0) ^ (b[:, 0] > 0)).astype(int)
    y = np.where(rng.random(n) < flip, 1 - y, y)
    cols = {f"a{j}": a[:, j] for j in range(6)} | {f"b{j}": b[:, j] for j in range(6)}
    df = pd.DataFrame(cols)
    split = np.array(["train"] * n_train + ["test"] * n_test)
    mods = [("a", [f"a{j}" for j in range(6)]), ("b", [f"b{j}" for j in range(6)])]
    return df, y, None, split, mods, 1 - flip


def av_digits(seed: int, noise: float, data_dir):
    from toolkit.datasets import load_av_digits

    data = load_av_digits(data_dir, image_noise=noise, random_state=seed)
    df = data.frame
    return df, data.target, df["speaker"].to_numpy(), df["split"].to_numpy(), data.modalities, None


def _encode(task, df, split, modalities, memory):
    """Embeddings of the training and test rows with the default encoders."""
    from toolkit import MultimodalClassifier, TabularEncoder

    if task.startswith("av"):
        mods = modalities
    else:
        mods = [(name, TabularEncoder(), cols) for name, cols in modalities]
    clf = MultimodalClassifier(mods, memory=memory, random_state=0)
    train, test = split == "train", split == "test"
    clf.fit_encoders(df[train])
    return clf, clf.encode(df[train]), clf.encode(df[test])


def _fit_predict(clf, fusion, emb_tr, y_tr, groups, emb_te):
    from sklearn.base import clone

    model = clone(clf).set_params(fusion=fusion)
    start = time.perf_counter()
    kwargs = {} if groups is None else {"groups": groups}
    model.fit(emb_tr, y_tr, **kwargs)
    proba = model.predict_proba(emb_te)
    return model, proba, time.perf_counter() - start


def run_task(task: str, seed: int, strategies, data_dir, memory) -> list[dict]:
    from toolkit import MultimodalClassifier

    if task == "three_view":
        df, y, groups, split, mods, bayes = three_view(seed)
    elif task == "interaction":
        df, y, groups, split, mods, bayes = interaction(seed)
    else:
        df, y, groups, split, mods, bayes = av_digits(seed, float(task[2:]), data_dir)
    clf, emb_tr, emb_te = _encode(task, df, split, mods, memory)
    train, test = split == "train", split == "test"
    y_tr, y_te = y[train], y[test]
    g_tr = None if groups is None else groups[train]
    rows = []
    singles = {}
    for name in emb_tr.names:
        single = MultimodalClassifier(random_state=0)
        start = time.perf_counter()
        kwargs = {} if g_tr is None else {"groups": g_tr}
        single.fit(emb_tr.select([name]), y_tr, **kwargs)
        proba = single.predict_proba(emb_te.select([name]))
        singles[name] = (single, proba)
        acc = float(np.mean(single.classes_[proba.argmax(1)] == y_te))
        rows.append(dict(task=task, seed=seed, model=f"only {name}", acc=acc,
                         seconds=time.perf_counter() - start))
    classes = next(iter(singles.values()))[0].classes_
    votes = np.zeros((len(y_te), len(classes)))
    summed = np.zeros_like(votes)
    for _, proba in singles.values():
        votes[np.arange(len(y_te)), proba.argmax(1)] += 1
        summed += proba
    vote = np.array([np.flatnonzero(v == v.max())[np.argmax(s[v == v.max()])]
                     for v, s in zip(votes, summed, strict=True)])
    rows.append(dict(task=task, seed=seed, model="majority vote", acc=float(np.mean(classes[vote] == y_te)),
                     seconds=float("nan")))
    for strategy in strategies:
        try:
            model, proba, seconds = _fit_predict(clf, strategy, emb_tr, y_tr, g_tr, emb_te)
        except (ValueError, KeyError) as exc:
            print(f"  {task} seed {seed} {strategy}: {exc}", file=sys.stderr)
            continue
        acc = float(np.mean(model.classes_[proba.argmax(1)] == y_te))
        extra = getattr(model.fusion_, "chosen_", "")
        rows.append(dict(task=task, seed=seed, model=strategy, acc=acc, seconds=seconds,
                         chosen=extra))
    for r in rows:
        r["bayes"] = bayes
    return rows


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    out = (
        frame.groupby(["task", "model"], sort=False)
        .agg(mean=("acc", "mean"), sd=("acc", "std"), n=("acc", "size"), seconds=("seconds", "mean"))
        .reset_index()
    )
    best_single = (
        frame[frame.model.str.startswith("only ")]
        .groupby(["task", "model"]).acc.mean().groupby("task").max()
    )
    vote = frame[frame.model == "majority vote"].groupby("task").acc.mean()
    out["vs best single"] = out["mean"] - out.task.map(best_single)
    out["vs vote"] = out["mean"] - out.task.map(vote)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="three_view,interaction,av0,av4,av6")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    parser.add_argument("--data-dir", default=os.environ.get("TOOLKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data")))
    parser.add_argument("--memory", default=None, help="embedding cache folder (speeds reruns)")
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    from toolkit.fusion import FUSIONS

    strategies = [s for s in args.strategies.split(",") if s in FUSIONS]
    skipped = set(args.strategies.split(",")) - set(strategies)
    if skipped:
        print(f"not registered (skipped): {sorted(skipped)}", file=sys.stderr)
    all_rows = []
    for task in args.tasks.split(","):
        if task.startswith("av") and not (Path(args.data_dir) / "fsdd").exists():
            print(f"{task}: skipped, no AV-Digits data under {args.data_dir}", file=sys.stderr)
            continue
        for seed in range(args.seeds):
            rows = run_task(task, seed, strategies, args.data_dir, args.memory)
            all_rows += rows
            print(" ".join(f"{r['model']}={r['acc']:.3f}" for r in rows), f"[{task} seed {seed}]",
                  flush=True)
    frame = pd.DataFrame(all_rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    table = summarize(frame)
    print(f"\n{machine()}, {datetime.date.today()}")
    print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string())
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
