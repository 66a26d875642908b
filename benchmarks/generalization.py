"""The generalization table (issue 24): every model judged on people it has never seen.

    python benchmarks/generalization.py [--datasets av,av_cnn,mosi,uci,mimic] [--quick]
        [--pairings 0,1,2] [--noises 4,6] [--cnn-pairings 0] [--cnn-noises 4]
        [--strategies early,late,gated,auto] [--folds 5] [--data-dir DIR] [--out JSON]

One run prints one table and writes every measured number to a JSON file
(``benchmarks/results/generalization.json`` by default). Each table row is one task; its
models are, on the same embeddings (each dataset is encoded once per split and every model
is fitted on those ``Embeddings``):

- ``only <m>``: the toolkit's own single-modality model, ``MultimodalClassifier()`` on that
  block alone;
- ``vote``: a majority vote of those single-modality models (ties broken by their summed
  probabilities);
- ``concat+LR``: the blocks concatenated, standardized, and an untuned
  ``LogisticRegression()`` (default C; ``max_iter=5000`` so that it converges);
- each strategy: ``MultimodalClassifier(fusion=name, random_state=0)`` with its defaults.

Tasks (rows are skipped, with a message, when their data folder is absent):

- ``av``: AV-Digits (``load_av_digits``), training speakers vs the two unseen test speakers,
  for each image pairing (the loader's ``random_state``) and image noise sd, fitted without
  groups (``fit(X, y)``) and with the training speakers as ``groups``; default encoders.
- ``av_cnn``: the same with ``ImageEncoder(backend="cnn")`` for the image (cross-fitted by
  ``fit_encode``, with row-level folds without groups and speaker folds with them). Slow on
  a CPU, so it runs fewer pairings and noises (``--cnn-pairings``, ``--cnn-noises``).
- ``mosi``: CMU-MOSI training videos (``../shared/data/mosi_poria/train.npz``),
  leave-videos-out (stratified grouped ``--folds``-fold CV by ``video_id``, out-of-fold
  predictions pooled), videos as ``groups``; transcripts through the offline MiniLM
  ``TextEncoder(backend="transformers")``, the 73 openSMILE audio statistics through
  ``TabularEncoder``. The two blocks trained on these labels by the dataset's authors
  (``text_cnn``, ``video_3dcnn``) are never used.
- ``uci``: UCI sentences, trained on two of Amazon / IMDb / Yelp, tested on the third (3 rows),
  no groups; two views of the sentence: the default TF-IDF ``TextEncoder`` (``words``) and
  the offline MiniLM (``minilm``).
- ``mimic``: the MIMIC-IV demo (``load_mimic_iv_demo``, ``--mimic-task``), grouped CV by
  patient as for MOSI, patients as ``groups``; its two tabular modalities.

Times are wall seconds of each model's ``fit`` on the embeddings (summed over folds);
``auto / slowest`` is ``fusion="auto"``'s fit time over the slowest of its candidates
(the strategies of ``AutoFusion``'s default list and each single-modality model) fitted
alone on the same rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine  # noqa: E402

STRATEGIES = ("early", "late", "gated", "auto")
DATASETS = ("av", "av_cnn", "mosi", "uci", "mimic")
UCI_SOURCES = ("amazon", "imdb", "yelp")
MINILM = {"backend": "transformers", "model": None, "progress": False}


# -- fitting every model on one split's embeddings ------------------------------------


def _fit(model, emb, y, groups):
    start = time.perf_counter()
    model.fit(emb, y, **({} if groups is None else {"groups": groups}))
    return model, time.perf_counter() - start


def _singles(emb_tr, y_tr, groups, emb_te, classes) -> dict:
    """Each modality alone, fitted on the training rows that have it; a test row without it
    gets the model's prior (``output``)."""
    from toolkit import MultimodalClassifier

    out = {}
    for name in emb_tr.names:
        has = emb_tr.mask[:, emb_tr.index(name)]
        model, seconds = _fit(
            MultimodalClassifier(classes=classes, random_state=0),
            emb_tr.select([name])[has],
            y_tr[has],
            None if groups is None else groups[has],
        )
        proba = model.output(emb_te.select([name]))
        out[f"only {name}"] = (classes[proba.argmax(1)], proba, seconds, "")
    return out


def _vote(singles: dict, classes) -> tuple:
    """Majority vote of the single-modality models' labels, ties broken by their summed
    probabilities. Its scores (for AUROC) rank rows by votes, then by summed probability:
    votes + summed / (n_models + 1), normalized (their argmax is the vote)."""
    probas = [entry[1] for entry in singles.values()]
    votes = np.zeros_like(probas[0])
    for p in probas:
        votes[np.arange(len(p)), p.argmax(1)] += 1
    scores = votes + np.sum(probas, axis=0) / (len(probas) + 1)
    scores /= scores.sum(axis=1, keepdims=True)
    return classes[scores.argmax(1)], scores, float("nan"), ""


def _concat(emb, gaps: list[int], means: list) -> np.ndarray:
    """The blocks side by side; a block missing from a row is set to its training mean
    (``means``, filled in on the training rows) and flagged in an indicator column for each
    modality in ``gaps``."""
    parts = []
    for j, name in enumerate(emb.names):
        block, has = np.array(emb.blocks[name], dtype=np.float64), emb.mask[:, j]
        if means[j] is None:
            means[j] = block[has].mean(axis=0)
        block[~has] = means[j]
        parts.append(block)
    return np.hstack(parts + [~emb.mask[:, gaps]])


def _concat_lr(emb_tr, y_tr, emb_te) -> tuple:
    """Standardized concatenated blocks + an untuned LogisticRegression (default C)."""
    gaps = [
        j
        for j in range(len(emb_tr.names))
        if not (emb_tr.mask[:, j].all() and emb_te.mask[:, j].all())
    ]
    means = [None] * len(emb_tr.names)
    X_tr = _concat(emb_tr, gaps, means)
    X_te = _concat(emb_te, gaps, means)
    start = time.perf_counter()
    scaler = StandardScaler().fit(X_tr)
    head = LogisticRegression(max_iter=5000).fit(scaler.transform(X_tr), y_tr)
    seconds = time.perf_counter() - start
    proba = head.predict_proba(scaler.transform(X_te))
    return head.classes_[proba.argmax(1)], proba, seconds, ""


def fit_all(emb_tr, y_tr, groups, emb_te, strategies, on_model=None) -> dict:
    """Model name -> (test labels, test probabilities, fit seconds, auto's choice) on one
    split. For ``auto``'s time bound, any of its default candidates not in ``strategies`` is
    also fitted and timed (``"(candidate) <name>"``, no predictions). ``on_model(out)`` is
    called after each strategy (to record a row in progress)."""
    from toolkit import MultimodalClassifier

    classes = np.unique(y_tr)
    out = _singles(emb_tr, y_tr, groups, emb_te, classes)
    out["vote"] = _vote(out, classes)
    out["concat+LR"] = _concat_lr(emb_tr, y_tr, emb_te)
    for name in strategies:
        if on_model is not None:
            on_model(out)
        model, seconds = _fit(
            MultimodalClassifier(fusion=name, classes=classes, random_state=0), emb_tr, y_tr, groups
        )
        chosen = getattr(model.fusion_, "chosen_", "")
        proba = model.predict_proba(emb_te)
        out[name] = (model.classes_[proba.argmax(1)], proba, seconds, chosen)
    if "auto" in strategies:
        for cand in _auto_candidates(out):
            model, seconds = _fit(
                MultimodalClassifier(fusion=cand, classes=classes, random_state=0),
                emb_tr,
                y_tr,
                groups,
            )
            out[f"(candidate) {cand}"] = (None, None, seconds, "")
    return out


def _auto_candidates(out: dict) -> list[str]:
    from toolkit.fusion.auto import DEFAULT_CANDIDATES

    return [c for c in DEFAULT_CANDIDATES if c not in out]


# -- one task row: a single split or pooled grouped-CV folds --------------------------


def summarize_split(task: dict, y_true: list, results: list[dict]) -> dict:
    """Accuracy (and AUROC for two classes) of each model over the pooled test rows of
    ``results`` (one dict per split, from :func:`fit_all`; ``y_true`` its test labels)."""
    y_all = np.concatenate(y_true)
    row = {"metric": "acc", **task}
    models = {}
    for name in results[0]:
        entry = {"seconds": float(sum(r[name][2] for r in results))}
        if results[0][name][0] is not None:
            pred = np.concatenate([r[name][0] for r in results])
            entry["acc"] = float(np.mean(pred == y_all))
            proba = np.concatenate([r[name][1] for r in results])
            if proba.shape[1] == 2:
                entry["auroc"] = float(roc_auc_score(y_all, proba[:, 1]))
        chosen = [r[name][3] for r in results if r[name][3]]
        if chosen:
            entry["chosen"] = chosen
        models[name] = entry
    row["models"] = models
    row["auto_ratio"] = auto_ratio(models)
    return row


def auto_ratio(models: dict) -> float:
    """auto's fit time / the slowest of its candidates fitted alone on the same rows."""
    from toolkit.fusion.auto import DEFAULT_CANDIDATES

    if "auto" not in models:
        return float("nan")
    cands = [m for m in models if m.startswith("only ")]
    cands += [c if c in models else f"(candidate) {c}" for c in DEFAULT_CANDIDATES]
    slowest = max(models[c]["seconds"] for c in cands if c in models)
    return models["auto"]["seconds"] / slowest


def holdout_row(task, emb_tr, y_tr, groups, emb_te, y_te, strategies, rec=None) -> dict:
    def on_model(out):
        rec.in_progress(summarize_split(task, [y_te], [out]))

    results = fit_all(emb_tr, y_tr, groups, emb_te, strategies, None if rec is None else on_model)
    return summarize_split(task, [y_te], [results])


def grouped_cv_row(task, clf, df, y, groups, strategies, folds) -> dict:
    """Stratified grouped CV: encoders fitted on each training fold (cached fixed encoders
    read each item once), out-of-fold predictions pooled."""
    from sklearn.base import clone

    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    results, y_true, encode_s = [], [], 0.0
    for tr, te in cv.split(df, y, groups):
        start = time.perf_counter()
        fold = clone(clf).fit_encoders(df.iloc[tr])
        emb_tr, emb_te = fold.encode(df.iloc[tr]), fold.encode(df.iloc[te])
        encode_s += time.perf_counter() - start
        results.append(fit_all(emb_tr, y[tr], groups[tr], emb_te, strategies))
        y_true.append(y[te])
    row = summarize_split(task, y_true, results)
    row["encode_seconds"] = encode_s
    return row


# -- datasets -------------------------------------------------------------------------


def _quiet(modalities):
    """The loader's modalities with progress bars off."""
    out = []
    for name, enc, cols in modalities:
        if "progress" in enc.get_params():
            enc = enc.set_params(progress=False)
        out.append((name, enc, cols))
    return out


def av_rows(args, memory, rec, cnn: bool) -> None:
    from toolkit import ImageEncoder, MultimodalClassifier
    from toolkit.datasets import load_av_digits

    pairings = args.cnn_pairings if cnn else args.pairings
    noises = args.cnn_noises if cnn else args.noises
    for noise in noises:
        for pairing in pairings:
            data = load_av_digits(args.data_dir, image_noise=noise, random_state=pairing)
            df, y = data.frame, data.target
            train, test = (df.split == "train").to_numpy(), (df.split == "test").to_numpy()
            mods = _quiet(data.modalities)
            if cnn:
                image = ImageEncoder(
                    backend="cnn", value_range=(0.0, 16.0), random_state=0, progress=False
                )
                mods = [mods[0], ("image", image, "image")]
            clf = MultimodalClassifier(mods, memory=memory, random_state=0)
            speakers = df["speaker"].to_numpy()[train]
            emb_te = None
            for grouped in args.groupings:
                g = speakers if grouped else None
                start = time.perf_counter()
                if cnn:
                    emb_tr = clf.fit_encode(df[train], y[train], groups=g)
                    emb_te = clf.encode(df[test])
                elif emb_te is None:
                    emb_tr = clf.fit_encoders(df[train]).encode(df[train])
                    emb_te = clf.encode(df[test])
                task = dict(
                    dataset="av_cnn" if cnn else "av",
                    task=f"AV-Digits{' CNN' if cnn else ''}, noise {noise:g}, pairing {pairing}, "
                    f"{'speaker groups' if grouped else 'no groups'}",
                    noise=noise, pairing=pairing, groups=grouped,
                    encode_seconds=time.perf_counter() - start,
                )  # fmt: skip
                rec.add(
                    holdout_row(task, emb_tr, y[train], g, emb_te, y[test], args.strategies, rec)
                )


def _mosi_frame(data_dir):
    """CMU-MOSI training videos: transcript, the 73 openSMILE statistics, label, video."""
    path = Path(data_dir) / "mosi_poria" / "train.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as npz:
        audio = np.asarray(npz["audio_opensmile"], dtype=np.float64)
        frame = pd.DataFrame(audio, columns=[f"opensmile_{j}" for j in range(audio.shape[1])])
        frame.insert(0, "transcript", [str(t) for t in npz["transcript"]])
        frame["label"] = npz["label"]
        frame["video_id"] = npz["video_id"]
    return frame


def mosi_rows(args, memory, rec) -> None:
    from toolkit import MultimodalClassifier, TabularEncoder, TextEncoder

    df = _mosi_frame(args.data_dir)
    if df is None:
        return _skip("mosi", f"no {Path(args.data_dir) / 'mosi_poria' / 'train.npz'}")
    audio_cols = [c for c in df.columns if c.startswith("opensmile_")]
    mods = [
        ("text", TextEncoder(**MINILM), "transcript"),
        ("audio", TabularEncoder(), audio_cols),
    ]
    clf = MultimodalClassifier(mods, memory=memory, random_state=0)
    y, groups = df["label"].to_numpy(), df["video_id"].to_numpy()
    task = dict(
        dataset="mosi",
        task=f"MOSI training videos, leave-videos-out ({args.folds} folds), video groups",
        groups=True,
    )
    row = grouped_cv_row(task, clf, df, y, groups, args.strategies, args.folds)
    rec.add(row)


def uci_rows(args, memory, rec) -> None:
    from toolkit import MultimodalClassifier, TextEncoder
    from toolkit.datasets import load_uci_sentences

    if not (Path(args.data_dir) / "uci_sentences").is_dir():
        return _skip("uci", f"no {Path(args.data_dir) / 'uci_sentences'}")
    data = load_uci_sentences(args.data_dir)
    df, y = data.frame, data.target
    mods = [
        ("words", TextEncoder(progress=False, random_state=0), "sentence"),
        ("minilm", TextEncoder(**MINILM), "sentence"),
    ]
    for held_out in args.uci_sources:
        test = (df["source"] == held_out).to_numpy()
        start = time.perf_counter()
        clf = MultimodalClassifier(mods, memory=memory, random_state=0).fit_encoders(df[~test])
        emb_tr, emb_te = clf.encode(df[~test]), clf.encode(df[test])
        trained = "+".join(s for s in UCI_SOURCES if s != held_out)
        task = dict(
            dataset="uci", task=f"UCI sentences, {trained} -> {held_out}", held_out=held_out,
            groups=False, encode_seconds=time.perf_counter() - start,
        )  # fmt: skip
        rec.add(holdout_row(task, emb_tr, y[~test], None, emb_te, y[test], args.strategies, rec))


def mimic_rows(args, memory, rec) -> None:
    from toolkit import MultimodalClassifier
    from toolkit.datasets import load_mimic_iv_demo

    if not (Path(args.data_dir) / "mimic_iv_demo" / "hosp").is_dir():
        return _skip("mimic", f"no {Path(args.data_dir) / 'mimic_iv_demo' / 'hosp'}")
    data = load_mimic_iv_demo(args.data_dir, task=args.mimic_task)
    clf = MultimodalClassifier(_quiet(data.modalities), random_state=0)
    task = dict(
        dataset="mimic",
        metric="auroc",
        task=f"MIMIC-IV demo, {args.mimic_task}, by patient ({args.folds} folds), patient groups",
        groups=True,
    )
    row = grouped_cv_row(
        task, clf, data.frame, data.target, data.groups, args.strategies, args.folds
    )
    rec.add(row)


def _skip(dataset: str, why: str) -> None:
    print(f"{dataset}: skipped, {why}", file=sys.stderr, flush=True)


# -- table and goals ------------------------------------------------------------------


def score(row: dict, name: str) -> float:
    """The row's metric (accuracy, or AUROC where the task says so) of model ``name``."""
    return row["models"][name][row["metric"]]


def _fmt(row: dict, name: str) -> str:
    if name not in row["models"] or row["metric"] not in row["models"][name]:
        return "—"
    return f"{score(row, name):.3f}"


def table(rows: list[dict], strategies) -> str:
    head = ["task", "single modalities", "vote", "concat+LR", *strategies, "auto chose",
            "auto s / slowest cand. s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        m = row["models"]
        singles = ", ".join(f"{k[5:]} {score(row, k):.3f}" for k in m if k.startswith("only "))
        chosen = m.get("auto", {}).get("chosen", [])
        chosen_s = ", ".join(sorted(set(chosen), key=chosen.index)) if chosen else "—"
        ratio = row["auto_ratio"]
        slow = (
            f"{m['auto']['seconds']:.1f} / {m['auto']['seconds'] / ratio:.1f} = {ratio:.2f}x"
            if "auto" in m
            else "—"
        )
        task = row["task"] + (" (AUROC)" if row["metric"] == "auroc" else "")
        cells = [task, singles, _fmt(row, "vote"), _fmt(row, "concat+LR")]
        cells += [_fmt(row, s) for s in strategies] + [chosen_s, slow]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best_single(row: dict) -> float:
    return max(score(row, k) for k in row["models"] if k.startswith("only "))


def goals(rows: list[dict], strategies) -> list[str]:
    """The issue's goals that this table measures, each with its numbers."""
    out = []
    fixed = [s for s in strategies if s != "auto"]
    cut = [r for r in rows if not all(s in r["models"] for s in strategies)]
    if cut:
        out.append(f"({len(cut)} row(s) without every strategy are left out of the goals)")
        rows = [r for r in rows if r not in cut]
    nogroups = [r for r in rows if r["dataset"].startswith("av") and not r["groups"]]
    if nogroups:
        worse = [
            f"{r['task']}: {s} {score(r, s):.3f} vs best single {_best_single(r):.3f}, "
            f"concat+LR {score(r, 'concat+LR'):.3f}"
            for r in nogroups for s in strategies
            if score(r, s) < max(_best_single(r), score(r, "concat+LR"))
        ]  # fmt: skip
        status = (
            "met" if not worse else f"MISSED in {len(worse)} of {len(nogroups) * len(strategies)}"
        )
        out.append(
            f"AV-Digits, no groups, every strategy >= best single and >= concat+LR: {status}"
        )
        out += [f"  - {w}" for w in worse]
    for dataset, goal in (("av", 0.965), ("av_cnn", 0.975)):
        sel = [r for r in rows if r["dataset"] == dataset and r["groups"] and r["noise"] == 4]
        if sel:
            best = {s: np.mean([score(r, s) for r in sel]) for s in strategies}
            top = max(best, key=best.get)
            status = "met" if best[top] >= goal else "MISSED"
            out.append(
                f"{dataset} noise 4 with groups, best default (mean over {len(sel)} pairings) "
                f">= {goal}: {top} {best[top]:.3f} ({status}); "
                + ", ".join(f"{s} {v:.3f}" for s, v in best.items())
            )
    if "auto" in strategies and fixed and rows:
        means = {s: np.mean([score(r, s) for r in rows]) for s in strategies}
        top = max(fixed, key=means.get)
        status = "met" if means["auto"] >= means[top] - 0.005 else "MISSED"
        out.append(
            f"auto's table mean {means['auto']:.4f} >= best fixed ({top} {means[top]:.4f}) - 0.005: {status}"
        )
        worst = max(rows, key=lambda r: r["auto_ratio"])
        status = "met" if worst["auto_ratio"] <= 3 else "MISSED"
        over = sum(r["auto_ratio"] > 3 for r in rows)
        out.append(
            f"auto <= 3x its slowest candidate: worst {worst['auto_ratio']:.2f}x ({worst['task']}); "
            f"{over} of {len(rows)} rows above 3x: {status}"
        )
    return out


class Recorder:
    """Collects the rows; prints each as it is measured and rewrites the JSON file after
    each one (``"complete": false`` until the run ends), so a cut-short run keeps its rows."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.rows, self.current = out, meta, [], None
        out.parent.mkdir(parents=True, exist_ok=True)

    def in_progress(self, row: dict) -> None:
        """A row whose models are not all fitted yet (kept under ``"in_progress"``)."""
        self.current = row
        self.write(complete=False)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.current = None
        m = row["models"]
        parts = [f"{k}={v['acc']:.3f}/{v['seconds']:.1f}s" for k, v in m.items() if "acc" in v]
        print(
            f"[{row['task']}] " + " ".join(parts),
            f"auto/slowest={row['auto_ratio']:.2f}",
            flush=True,
        )
        self.write(complete=False)

    def write(self, complete: bool) -> None:
        meta = dict(self.meta, complete=complete)
        data = {"meta": meta, "rows": self.rows, "in_progress": self.current}
        text = json.dumps(data, indent=1, default=str)
        self.out.write_text(text + "\n")


# -- command line ---------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def parse(argv=None):
    default_dir = os.environ.get("TOOLKIT_DATA_DIR", str(HERE.parent.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"any of {','.join(DATASETS)}")
    p.add_argument("--quick", action="store_true", help="a small smoke run (one pairing, "
                   "noise 4, early and late, 2 folds, one UCI source, no CNN)")  # fmt: skip
    p.add_argument("--pairings", type=_ints, default=[0, 1, 2])
    p.add_argument("--noises", type=_floats, default=[4.0, 6.0])
    p.add_argument("--cnn-pairings", type=_ints, default=[0])
    p.add_argument("--cnn-noises", type=_floats, default=[4.0])
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--groupings", default="none,groups",
                   help="AV-Digits fits without groups ('none') and/or with speaker groups, in this order")  # fmt: skip
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--uci-sources", default=",".join(UCI_SOURCES))
    p.add_argument("--mimic-task", default="long_stay", choices=["long_stay", "mortality"])
    p.add_argument("--data-dir", default=default_dir)
    p.add_argument(
        "--memory", default=None, help="embedding cache folder (default: a temporary one)"
    )
    p.add_argument("--out", default=str(HERE / "results" / "generalization.json"))
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="print the table and goals of earlier runs' JSON files (no fitting)")  # fmt: skip
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        p.error(f"unknown datasets {sorted(unknown)}; choose from {','.join(DATASETS)}")
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.uci_sources = [s for s in args.uci_sources.split(",") if s]
    args.groupings = [{"none": False, "groups": True}[g] for g in args.groupings.split(",") if g]
    if args.quick:
        args.pairings, args.noises, args.folds, args.uci_sources = [0], [4.0], 2, ["yelp"]
        args.strategies = [s for s in args.strategies if s in ("early", "late")]
        args.datasets = [d for d in args.datasets if d != "av_cnn"]
    return args


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return ""


def report(rows: list[dict], strategies, header: str) -> list[str]:
    print("\n" + header + "\n")
    print(table(rows, strategies))
    found = goals(rows, strategies)
    print("\n" + "\n".join(found))
    return found


def main(argv=None) -> int:
    args = parse(argv)
    if args.report:
        parts = [json.loads(Path(f).read_text()) for f in args.report]
        rows = [r for part in parts for r in part["rows"]]
        for part in parts:  # a row cut short by the end of a run: the models it has
            if part.get("in_progress"):
                rows.append(
                    dict(part["in_progress"], task=part["in_progress"]["task"] + " [cut short]")
                )
        header = "\n".join(part["meta"]["header"] for part in parts)
        report(rows, args.strategies, header)
        return 0
    from toolkit.fusion import FUSIONS

    missing = [s for s in args.strategies if s not in FUSIONS]
    if missing:
        raise SystemExit(f"unknown strategies {missing}; registered: {list(FUSIONS)}")
    command = " ".join(sys.argv[1:] if argv is None else argv)
    started = datetime.datetime.now(datetime.UTC)
    header = (
        f"machine: {machine()}; started {started:%Y-%m-%d %H:%M} UTC; commit {_commit()}; "
        f"load average at start {os.getloadavg()[0]:.1f}\n"
        f"command: python benchmarks/generalization.py {command}"
    )
    rec = Recorder(Path(args.out), {"header": header, "args": vars(args)})
    runners = {
        "av": lambda mem: av_rows(args, mem, rec, cnn=False),
        "av_cnn": lambda mem: av_rows(args, mem, rec, cnn=True),
        "mosi": lambda mem: mosi_rows(args, mem, rec),
        "uci": lambda mem: uci_rows(args, mem, rec),
        "mimic": lambda mem: mimic_rows(args, mem, rec),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for name in args.datasets:
            if name.startswith("av") and not (Path(args.data_dir) / "fsdd").is_dir():
                _skip(name, f"no AV-Digits data under {args.data_dir}/fsdd")
                continue
            runners[name](args.memory or tmp)
    rec.meta["header"] += f"; total {time.perf_counter() - start:.0f} s"
    rec.meta["goals"] = report(rec.rows, args.strategies, rec.meta["header"])
    rec.write(complete=True)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
