"""Loaders for real datasets, read from a folder laid out like the project's shared data.

Every loader takes ``data_dir`` (else the ``TOOLKIT_DATA_DIR`` environment variable):
a folder holding ``fsdd/``, ``uci_sentences/``, ``speech_emotion/``, ``pneumoniamnist/``
and ``mimic_iv_demo/``. Nothing is downloaded; a missing folder or file is reported with
the path that was looked for.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from toolkit.datasets._common import check_float, data_card, file_kind, read_table

#: Where each dataset folder comes from, said when the folder is missing.
SOURCES = {
    "fsdd": "github.com/Jakobovski/free-spoken-digit-dataset (its recordings/*.wav, CC BY-SA 4.0)",
    "uci_sentences": "the UCI 'Sentiment Labelled Sentences' data set (CC BY 4.0)",
    "speech_emotion": "github.com/tyiannak/pyAudioAnalysis (pyAudioAnalysis/data/speechEmotion)",
    "pneumoniamnist": "MedMNIST v2 (pneumoniamnist.npz, CC BY 4.0)",
    "mimic_iv_demo": "the MIMIC-IV Clinical Database Demo v2.2 on PhysioNet "
    "(physionet.org/content/mimic-iv-demo/2.2/, ODbL 1.0: its hosp/ and icu/ folders)",
}


def data_home(data_dir=None, subfolder: str | None = None) -> Path:
    """The data folder (``data_dir`` or ``$TOOLKIT_DATA_DIR``), checked to exist; a missing
    dataset folder is reported with where to get it (:data:`SOURCES`)."""
    if data_dir is None:
        env = os.environ.get("TOOLKIT_DATA_DIR")
        if not env:
            raise FileNotFoundError(
                "no data folder given: pass data_dir=<folder> or set TOOLKIT_DATA_DIR to a "
                f"folder holding '{subfolder or '...'}/'"
            )
        data_dir = env
    root = Path(data_dir).expanduser()
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        raise FileNotFoundError(
            f"dataset folder '{folder}' does not exist (looked in data_dir='{root}'); "
            "put the dataset there or point data_dir / TOOLKIT_DATA_DIR elsewhere"
            + _source_hint(subfolder)
        )
    return folder


def _source_hint(subfolder: str | None) -> str:
    source = SOURCES.get((subfolder or "").split("/")[0])
    return f"; get it from {source}" if source else ""


def _need(path: Path) -> Path:
    """``path`` if it is a regular file (checked with ``os.stat`` before anything opens it:
    a FIFO blocks its reader until a writer appears, a device never ends)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"expected dataset file '{path}' does not exist") from None
    except OSError as exc:
        raise ValueError(
            f"dataset file '{path}' cannot be inspected ({exc.strerror or exc}); check its "
            "permissions"
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"dataset file '{path}' is {file_kind(st.st_mode)}, not a regular file; it was not "
            "opened (a FIFO or device would block or never end). Replace it with the "
            "dataset's file"
        )
    return path


# -- AV-Digits --------------------------------------------------------------------------

DEFAULT_TEST_SPEAKERS = ("george", "lucas")


def load_av_digits(
    data_dir=None,
    *,
    test_speakers=DEFAULT_TEST_SPEAKERS,
    image_noise: float = 0.0,
    audio_noise: float = 0.0,
    random_state=0,
):
    """AV-Digits: each Free Spoken Digit recording paired with a handwritten digit image.

    The analogue of MultiBench's AV-MNIST on real data: the 3,000 FSDD recordings
    (6 speakers x 10 digits x 50) are each paired, by label, with one of scikit-learn's
    1,797 8x8 handwritten digit images. Recordings of ``test_speakers`` form the test
    split (speakers unseen in training); the digit images are split 2:1 into disjoint
    train and test pools by a seeded shuffle, so test images are unseen too.

    Parameters
    ----------
    data_dir : str or path, optional
        Folder holding ``fsdd/`` (default ``$TOOLKIT_DATA_DIR``).
    test_speakers : tuple of str, default=("george", "lucas")
    image_noise : float, default=0.0
        Standard deviation (finite, >= 0) of Gaussian noise added to the images on their 0-16 scale
        (AV-MNIST degrades a modality this way so that fusion matters; 4.0 is strong).
    audio_noise : float, default=0.0
        Standard deviation of white noise added to the waveforms (full scale 1.0); when
        > 0 the ``audio`` column holds (waveform, rate) pairs instead of paths.
    random_state : int, RandomState or None, default=0
        Seeds the image pairing and the noise.

    Returns
    -------
    Bunch with ``frame`` (columns ``audio`` (path or (waveform, rate)), ``image``
    (8x8 float array, 0-16 scale), ``label``, ``speaker``, ``split``), ``target``,
    ``modalities`` and ``data_card``.
    """
    from sklearn.datasets import load_digits

    image_noise = check_float("image_noise", image_noise)
    audio_noise = check_float("audio_noise", audio_noise)
    if isinstance(test_speakers, str):
        test_speakers = (test_speakers,)
    folder = data_home(data_dir, "fsdd")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no .wav recordings found in '{folder}'")
    rng = check_random_state(random_state)
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    cut = (2 * len(order)) // 3
    pools = {"train": order[:cut], "test": order[cut:]}
    rows = []
    for path in files:
        label, speaker, index = path.stem.split("_")
        rows.append(
            {"audio": str(path), "label": int(label), "speaker": speaker, "index": int(index)}
        )
    frame = pd.DataFrame(rows)
    unknown = set(test_speakers) - set(frame["speaker"])
    if unknown:
        raise ValueError(
            f"test_speakers {sorted(unknown)} are not FSDD speakers {sorted(set(frame['speaker']))}"
        )
    frame["split"] = np.where(frame["speaker"].isin(test_speakers), "test", "train")
    images = []
    for label, split in zip(frame["label"], frame["split"], strict=True):
        pool = pools[split][digits.target[pools[split]] == label]
        img = digits.images[rng.choice(pool)].astype(np.float32)
        if image_noise > 0:
            img = img + rng.normal(0, image_noise, img.shape).astype(np.float32)
        images.append(img)
    frame["image"] = images
    if audio_noise > 0:
        from toolkit.io import read_audio

        waves = []
        for path in frame["audio"]:
            wave, sr = read_audio(path)
            waves.append(((wave + rng.normal(0, audio_noise, wave.shape)).astype(np.float32), sr))
        frame["audio"] = waves
    frame = frame[["audio", "image", "label", "speaker", "split", "index"]]
    from toolkit.encoders import AudioEncoder, ImageEncoder

    modalities = [
        ("audio", AudioEncoder(sample_rate=8000), "audio"),
        ("image", ImageEncoder(value_range=(0.0, 16.0)), "image"),
    ]
    return Bunch(
        frame=frame,
        target=frame["label"].to_numpy(),
        modalities=modalities,
        data_card=data_card("av_digits"),
    )


# -- UCI sentiment sentences ------------------------------------------------------------

UCI_FILES = {
    "amazon": "amazon_cells_labelled.txt",
    "imdb": "imdb_labelled.txt",
    "yelp": "yelp_labelled.txt",
}


def load_uci_sentences(data_dir=None, *, sources=("amazon", "imdb", "yelp")):
    """UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015): 1,000 per source.

    Lines are split on "\\n" only: some sentences contain U+0085, which str.splitlines
    would treat as a line break.

    Returns a Bunch with ``frame`` (``sentence``, ``label`` 0 negative / 1 positive,
    ``source``), ``target``, ``modalities`` and ``data_card``.
    """
    if isinstance(sources, str):
        sources = (sources,)
    if not sources:
        raise ValueError(f"sources must name at least one of {sorted(UCI_FILES)}, got {sources!r}")
    folder = data_home(data_dir, "uci_sentences")
    parts = []
    for source in sources:
        if source not in UCI_FILES:
            raise ValueError(f"unknown source '{source}'; choose from {sorted(UCI_FILES)}")
        path = _need(folder / UCI_FILES[source])
        raw = path.read_bytes()
        try:
            content = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            lineno = raw[: exc.start].count(b"\n") + 1
            raise ValueError(
                f"{path}:{lineno}: byte {raw[exc.start : exc.start + 1]!r} is not UTF-8; "
                "re-save the file as UTF-8"
            ) from exc
        rows = []
        for lineno, line in enumerate(content.split("\n"), 1):
            if not line.strip():
                continue
            text, sep, label = line.rstrip().rpartition("\t")
            if not sep or label.strip() not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: expected 'sentence<TAB>0|1', got {line[:60]!r}")
            rows.append((text.strip(), int(label), source))
        parts.append(pd.DataFrame(rows, columns=["sentence", "label", "source"]))
    frame = pd.concat(parts, ignore_index=True)
    from toolkit.encoders import TextEncoder

    return Bunch(
        frame=frame,
        target=frame["label"].to_numpy(),
        modalities=[("text", TextEncoder(), "sentence")],
        data_card=data_card("uci_sentences"),
    )


# -- Speech emotion ---------------------------------------------------------------------


def load_speech_emotion(data_dir=None):
    """47 emotional speech clips (16 kHz WAV) with continuous arousal and valence in [-1, 1].

    Returns a Bunch with ``frame`` (``audio`` path, ``arousal``, ``valence``), ``target``
    (valence), ``modalities`` and ``data_card``.
    """
    folder = data_home(data_dir, "speech_emotion")
    tables = {}
    for name in ("arousal", "valence"):
        path = _need(folder / f"{name}.csv")
        tables[name] = read_table(path, "speech emotion table", header=None, names=["file", name])
        if tables[name].empty:
            raise ValueError(
                f"speech emotion table '{path}' is empty; it should list 'file,{name}' per clip"
            )
    frame = tables["arousal"].merge(tables["valence"], on="file", how="outer", validate="1:1")
    missing = [f for f in frame["file"] if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"clips listed in arousal/valence.csv are missing from '{folder}': {missing[:5]}"
        )
    frame.insert(0, "audio", [str(folder / f) for f in frame["file"]])
    from toolkit.encoders import AudioEncoder

    return Bunch(
        frame=frame,
        target=frame["valence"].to_numpy(),
        modalities=[("audio", AudioEncoder(), "audio")],
        data_card=data_card("speech_emotion"),
    )


# -- PneumoniaMNIST ---------------------------------------------------------------------


def load_pneumoniamnist(data_dir=None, *, splits=("train", "val", "test")):
    """PneumoniaMNIST (MedMNIST v2): 28x28 paediatric chest X-rays, 0 normal / 1 pneumonia.

    Reads ``pneumoniamnist/pneumoniamnist.npz`` (MedMNIST layout: ``{split}_images``,
    ``{split}_labels``). Returns a Bunch with ``frame`` (``image`` uint8 array, ``label``,
    ``split``), ``target``, ``modalities`` and ``data_card``.
    """
    if isinstance(splits, str):
        splits = (splits,)
    if not splits:
        raise ValueError(f"splits must name at least one of train, val, test, got {splits!r}")
    path = _need(data_home(data_dir, "pneumoniamnist") / "pneumoniamnist.npz")
    with np.load(path, allow_pickle=False) as data:
        parts = []
        for split in splits:
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in data:
                    raise ValueError(f"'{path}' has no '{key}' array (keys: {sorted(data.keys())})")
            images, labels = data[f"{split}_images"], data[f"{split}_labels"].ravel()
            parts.append(
                pd.DataFrame({"image": list(images), "label": labels.astype(int), "split": split})
            )
    frame = pd.concat(parts, ignore_index=True)
    from toolkit.encoders import ImageEncoder

    return Bunch(
        frame=frame,
        target=frame["label"].to_numpy(),
        modalities=[("xray", ImageEncoder(), "image")],
        data_card=data_card("pneumoniamnist"),
    )


# -- MIMIC-IV demo ----------------------------------------------------------------------

MIMIC_LABS = [
    "Creatinine", "Urea Nitrogen", "Potassium", "Sodium", "Chloride", "Bicarbonate",
    "Anion Gap", "Hemoglobin", "Hematocrit", "Platelet Count", "White Blood Cells", "Glucose",
]  # fmt: skip


def load_mimic_iv_demo(data_dir=None, *, task="mortality", lab_window_hours=24):
    """MIMIC-IV Clinical Database Demo: one row per hospital admission.

    Features: age at admission, gender, admission type and location, insurance, and the
    median of common laboratory values (``MIMIC_LABS``) measured within
    ``lab_window_hours`` of admission (NaN when none was measured). Diagnoses and
    discharge information are not used as features (they would leak the outcome).

    Parameters
    ----------
    data_dir : str or path, optional
        Folder holding ``mimic_iv_demo/hosp/``.
    task : {"mortality", "long_stay"}, default="mortality"
        ``mortality``: in-hospital death (``hospital_expire_flag``). ``long_stay``: a
        hospital stay longer than 7 days.
    lab_window_hours : float, default=24
        Hours after admission (> 0) whose laboratory values count.

    Returns
    -------
    Bunch with ``frame`` (``subject_id`` and ``hadm_id`` kept for grouped splits),
    ``target``, ``groups`` (subject ids), ``feature_columns``, ``modalities`` and
    ``data_card``.
    """
    if task not in ("mortality", "long_stay"):
        raise ValueError(f"task must be 'mortality' or 'long_stay', got {task!r}")
    lab_window_hours = check_float("lab_window_hours", lab_window_hours, low_open=True)
    adm, pat, labs, items = _mimic_tables(data_home(data_dir, "mimic_iv_demo/hosp"))
    frame = adm.merge(
        pat[["subject_id", "gender", "anchor_age", "anchor_year"]], on="subject_id", how="left"
    )
    frame["age"] = frame["anchor_age"] + (frame["admittime"].dt.year - frame["anchor_year"])
    los_days = (frame["dischtime"] - frame["admittime"]).dt.total_seconds() / 86400
    frame["los_days"] = los_days
    blood = items[(items["label"].isin(MIMIC_LABS)) & (items["fluid"] == "Blood")]
    labs = labs.merge(blood, on="itemid").dropna(subset=["hadm_id", "valuenum"])
    labs = labs.merge(frame[["hadm_id", "admittime"]], on="hadm_id")
    hours = (labs["charttime"] - labs["admittime"]).dt.total_seconds() / 3600
    early = labs[(hours >= -6) & (hours <= lab_window_hours)]
    wide = early.pivot_table(index="hadm_id", columns="label", values="valuenum", aggfunc="median")
    lab_cols = [c for c in MIMIC_LABS if c in wide.columns]
    frame = frame.merge(wide[lab_cols], left_on="hadm_id", right_index=True, how="left")
    frame["target"] = (
        frame["hospital_expire_flag"].astype(int)
        if task == "mortality"
        else (los_days > 7).astype(int)
    )
    feature_columns = [
        "age",
        "gender",
        "admission_type",
        "admission_location",
        "insurance",
        *lab_cols,
    ]
    frame = frame[
        ["subject_id", "hadm_id", *feature_columns, "los_days", "hospital_expire_flag", "target"]
    ]
    return Bunch(
        frame=frame.reset_index(drop=True),
        target=frame["target"].to_numpy(),
        groups=frame["subject_id"].to_numpy(),
        feature_columns=feature_columns,
        modalities=_mimic_modalities(lab_cols),
        data_card=data_card("mimic_iv_demo"),
    )


def _mimic_tables(hosp: Path):
    """The admissions, patients, lab events and lab items tables of ``hosp/``."""
    what = "MIMIC-IV table"
    adm = read_table(
        _need(hosp / "admissions.csv.gz"), what, parse_dates=["admittime", "dischtime"]
    )
    pat = read_table(_need(hosp / "patients.csv.gz"), what)
    labs = read_table(
        _need(hosp / "labevents.csv.gz"),
        what,
        usecols=["hadm_id", "itemid", "charttime", "valuenum"],
        parse_dates=["charttime"],
    )
    items = read_table(
        _need(hosp / "d_labitems.csv.gz"), what, usecols=["itemid", "label", "fluid"]
    )
    return adm, pat, labs, items


def _mimic_modalities(lab_cols: list) -> list:
    """The (name, encoder, columns) triples: admission demographics and labs."""
    from toolkit.encoders import TabularEncoder

    demographics = ["age", "gender", "admission_type", "admission_location", "insurance"]
    return [
        ("admission", TabularEncoder(), demographics),
        ("labs", TabularEncoder(), lab_cols),
    ]


# -- Generic manifest -------------------------------------------------------------------


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name the OS refuses (NUL byte, too long) does not."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _duplicate_header(csv: Path) -> str | None:
    """The first column name that the CSV's header repeats (pandas would rename it)."""
    import csv as csv_module

    try:
        with open(csv, encoding="utf-8-sig", newline="") as fh:
            header = next(csv_module.reader(fh), [])
    except (UnicodeDecodeError, csv_module.Error):
        return None  # read_table reports these with the file's name
    seen = set()
    for name in header:
        if name in seen:
            return name
        seen.add(name)
    return None


def _read_manifest(csv: Path) -> pd.DataFrame:
    """The manifest's rows (index 0..n-1), checked to be a regular, readable CSV file with
    distinct column names and at least one row."""
    if not _exists(csv):
        raise FileNotFoundError(f"manifest '{csv}' does not exist")
    if not csv.is_file():
        raise ValueError(
            f"manifest '{csv}' is not a regular file (a folder, FIFO or device); "
            "point to a CSV file"
        )
    frame = read_table(csv, "manifest")
    duplicate = _duplicate_header(csv)
    if duplicate is not None:
        raise ValueError(
            f"manifest '{csv}' names column '{duplicate}' twice in its header; "
            "give every column a distinct name"
        )
    if frame.empty:
        raise ValueError(f"manifest '{csv}' has a header but no rows; add one row per sample")
    return frame.reset_index(drop=True)


def _resolve(value, csv: Path, base: Path, col: str, row: int):
    """A path cell as an absolute path string (relative to ``base``), or None when empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"manifest '{csv}', column '{col}', row {row}: expected a file path (text), "
            f"found {value!r} ({type(value).__name__}); write the path as text, or leave "
            "the cell empty when the item is missing"
        )
    if not value.strip():
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _found_path_columns(frame: pd.DataFrame, csv: Path, base: Path, skip) -> list:
    """The text columns (other than ``skip``) whose non-empty values all name files (or
    folders) that exist."""
    path_columns = []
    for col in frame.columns:
        if col in skip:
            continue
        values = frame[col].dropna()
        if values.empty or not all(isinstance(v, str) for v in values):
            continue
        if all(
            _exists(Path(_resolve(v, csv, base, col, i))) for i, v in values.items() if v.strip()
        ):
            path_columns.append(col)
    return path_columns


def _resolve_column(frame: pd.DataFrame, col: str, csv: Path, base: Path) -> None:
    """Replace path column ``col`` by absolute paths (in place); refuse missing files."""
    if col not in frame.columns:
        raise ValueError(
            f"path column '{col}' is not in manifest '{csv}' (columns: {list(frame.columns)})"
        )
    resolved = [_resolve(v, csv, base, col, i) for i, v in enumerate(frame[col])]
    frame[col] = pd.Series(resolved, index=frame.index, dtype=object)
    absent = [(i, p) for i, p in enumerate(resolved) if p is not None and not _exists(Path(p))]
    if absent:
        row, path = absent[0]
        raise FileNotFoundError(
            f"manifest '{csv}' column '{col}' names {len(absent)} missing file(s), e.g. "
            f"row {row}: '{path}'; fix the path (relative paths are relative to '{base}')"
        )


def load_manifest(csv, *, path_columns=None, target=None, id_column=None):
    """A table of columns and file paths; relative paths resolve against the CSV's folder.

    A relative path in the table is always taken relative to the folder that holds the
    CSV (made absolute), never the working directory, so the manifest reads the same
    from anywhere. Absolute paths and ``~`` are used as given. An empty cell is a
    missing item (the modality is absent for that row).

    Parameters
    ----------
    csv : str or path
        A UTF-8 CSV file with a header row and at least one row.
    path_columns : list of str, optional
        Columns holding file paths. Default: every text column whose non-empty values all
        name files (or folders) that exist relative to the CSV's folder or as given.
    target : str, optional
        Column returned as ``target``.
    id_column : str, optional
        Column identifying a sample. Every row needs an id; when ``target`` is given too,
        an id that appears in several rows with different target values is refused
        (naming the id and the rows).

    Returns
    -------
    Bunch with ``frame``, ``target`` (or None), ``path_columns`` and ``data_card``.

    Raises
    ------
    FileNotFoundError
        The CSV, or a file that a path column names, does not exist.
    ValueError
        The CSV is not a regular file, empty, not UTF-8, malformed, repeats a column
        name or has no rows; a path cell is not text; a named column is absent; ids are
        missing or conflict. Each message names the file and, where it applies, the
        column and row (0-based, the header excluded).
    """
    csv = Path(csv).expanduser()
    frame = _read_manifest(csv)
    base = csv.absolute().parent
    for name, what in ((target, "target"), (id_column, "id")):
        if name is not None and name not in frame.columns:
            raise ValueError(
                f"{what} column '{name}' is not in manifest '{csv}' "
                f"(columns: {list(frame.columns)})"
            )
    if path_columns is None:
        path_columns = _found_path_columns(frame, csv, base, (target, id_column))
    elif isinstance(path_columns, str):
        path_columns = [path_columns]
    for col in path_columns:
        _resolve_column(frame, col, csv, base)
    if id_column is not None:
        _check_ids(frame, csv, id_column, target)
    return Bunch(
        frame=frame,
        target=None if target is None else frame[target].to_numpy(),
        path_columns=list(path_columns),
        data_card=data_card("manifest"),
    )


def _check_ids(frame: pd.DataFrame, csv: Path, id_column: str, target: str | None) -> None:
    ids = frame[id_column]
    blank = ids.isna() | ids.astype(str).str.strip().eq("")
    if blank.any():
        rows = np.flatnonzero(blank.to_numpy())
        raise ValueError(
            f"manifest '{csv}' id column '{id_column}' is empty in row(s) {rows[:10].tolist()}; "
            "give every row an id"
        )
    if target is None:
        return
    duplicated = frame[ids.duplicated(keep=False)]
    conflicts = []
    for value, rows in duplicated.groupby(id_column, sort=True):
        labels = rows[target]
        if labels.nunique(dropna=False) > 1:
            conflicts.append((value, rows.index.tolist(), labels.tolist()))
    if conflicts:
        value, rows, labels = conflicts[0]
        more = f" ({len(conflicts) - 1} more id(s) conflict)" if len(conflicts) > 1 else ""
        raise ValueError(
            f"manifest '{csv}': id {value!r} appears in rows {rows} with conflicting "
            f"'{target}' values {labels}{more}; correct the labels or remove the duplicate rows"
        )
