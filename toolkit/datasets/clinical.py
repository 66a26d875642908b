"""``make_clinical_cohort``: synthetic patients (table + note + 3-D scan [+ X-ray]) with ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from toolkit.datasets._common import (
    MAX_GENERATED_BYTES,
    check_float,
    check_generated_bytes,
    check_int,
    data_card,
)

MODALITIES = ("clinical", "note", "scan", "xray")
FINDINGS = [
    ("consolidation", "focal consolidation"),
    ("effusion", "pleural effusion"),
    ("fever", "fever"),
    ("crackles", "crackles on auscultation"),
    ("hypoxia", "hypoxia"),
    ("infiltrate", "patchy infiltrate"),
]
NEGATIONS = ["no evidence of {}", "denies {}", "negative for {}", "no {}", "without {}"]
CONTEXT = [
    "Patient seen on the ward.", "History of hypertension.", "Lives alone, independent.",
    "Presents with cough for three days.", "Follow-up visit.", "Referred by GP.",
    "Non-smoker.", "Vital signs reviewed.", "Chest examined.", "Medication reconciled.",
]  # fmt: skip


def _note(z: float, strength: float, rng) -> str:
    """Findings asserted with probability sigmoid(2 * strength * z), negated otherwise."""
    sentences = [CONTEXT[i] for i in rng.choice(len(CONTEXT), 2, replace=False)]
    p = 1.0 / (1.0 + np.exp(-2.0 * strength * z))
    for _, phrase in [FINDINGS[i] for i in rng.choice(len(FINDINGS), 3, replace=False)]:
        if rng.random_sample() < p:
            sentences.append(f"{phrase.capitalize()} noted.")
        else:
            sentences.append(
                NEGATIONS[rng.randint(len(NEGATIONS))].format(phrase).capitalize() + "."
            )
    rng.shuffle(sentences)
    return " ".join(sentences)


def _ball(shape, center, radius):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2 <= radius**2


def _scan(z: float, strength: float, size: int, rng) -> np.ndarray:
    """A body-like ellipsoid with bright lesions; their number and size grow with z."""
    shape = (size, size, size)
    zz, yy, xx = np.ogrid[:size, :size, :size]
    c = (size - 1) / 2
    body = ((zz - c) / (0.45 * size)) ** 2 + ((yy - c) / (0.4 * size)) ** 2 + (
        (xx - c) / (0.35 * size)
    ) ** 2 <= 1
    vol = np.where(body, 0.4, 0.05) + rng.normal(0, 0.05, shape)
    n_lesions = rng.poisson(max(0.2, 1.5 + 1.5 * strength * z))
    radius_max = max(1.0, size / 2 - 2.0)
    for _ in range(n_lesions):
        center = c + rng.uniform(-0.25, 0.25, 3) * size
        radius = float(
            np.clip(size / 16 * (1 + 0.3 * strength * z + 0.3 * rng.normal()), 1.0, radius_max / 2)
        )
        vol[_ball(shape, center, radius) & body] = 0.9 + 0.05 * rng.normal()
    return vol.astype(np.float32)


def _xray(z: float, strength: float, size: int, rng) -> np.ndarray:
    """A 2-D chest-like radiograph with opacities whose extent grows with z."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    lungs = ((np.abs(xx) - 0.45) / 0.3) ** 2 + (yy / 0.75) ** 2 <= 1
    img = np.where(lungs, 0.25, 0.7) + rng.normal(0, 0.05, (size, size))
    for _ in range(rng.poisson(max(0.1, 1 + 1.5 * strength * z))):
        cx, cy = rng.choice([-0.45, 0.45]) + rng.normal(0, 0.1), rng.uniform(-0.5, 0.5)
        r = 0.15 * (1 + 0.3 * strength * z)
        img[((xx - cx) ** 2 + (yy - cy) ** 2 <= r**2) & lungs] = 0.6
    return np.clip(img, 0, 1).astype(np.float32)


def generated_bytes(n_samples: int, scan_size: int, xray_size: int, include_xray: bool) -> int:
    """Bytes of the float32 scans (and X-rays) that :func:`make_clinical_cohort` makes."""
    xray = xray_size**2 if include_xray else 0
    return 4 * n_samples * (scan_size**3 + xray)


def make_clinical_cohort(
    n_samples: int = 200,
    *,
    prevalence: float = 0.3,
    informative: tuple[str, ...] = ("clinical", "note", "scan"),
    strength: float = 1.5,
    noise: float = 1.0,
    visits_per_patient: float = 1.5,
    include_xray: bool = False,
    scan_size: int = 32,
    xray_size: int = 32,
    missing_rate: float = 0.0,
    output_dir: str | Path | None = None,
    random_state=None,
    max_bytes: int = MAX_GENERATED_BYTES,
):
    """Generate a synthetic diagnostic cohort with known ground truth.

    SYNTHETIC DATA. Each patient has a latent disease severity s ~ N(0, 1); the
    diagnosis is ``s > quantile(1 - prevalence)``. Each informative modality sees
    ``s + noise * e_m`` (e_m ~ N(0, 1), independent per modality), so each one alone
    predicts the diagnosis partly and fusion helps; non-informative modalities see an
    unrelated random value. Patients contribute 1-3 visits (mean ``visits_per_patient``)
    that share the patient's severity, so splits must be grouped by ``patient_id``.

    - clinical: age, sex, heart rate, temperature, systolic blood pressure, CRP, white
      cell count and lactate; the inflammatory markers rise with the modality's signal;
      about 5% of lab values are missing (NaN);
    - note: a short clinical note whose findings (consolidation, effusion, fever, ...)
      are asserted with probability increasing in the signal and negated otherwise
      ("no evidence of pleural effusion");
    - scan: a 3-D volume (``scan_size``³) with bright lesions whose number and size grow
      with the signal, on a fixed intensity scale like CT's (background 0.05, body 0.4,
      lesions 0.9, noise sd 0.05), so ``ScanEncoder(intensity_range=(0, 1))`` can scale
      it with one fixed window instead of each volume's percentiles;
    - xray (``include_xray=True``): a 2-D radiograph with opacities.

    Parameters
    ----------
    n_samples : int, default=200
        Number of visits (rows), >= 2.
    prevalence : float, default=0.3
        In (0, 1).
    informative : tuple of str, default=("clinical", "note", "scan")
        Subset of ("clinical", "note", "scan", "xray") that carry the diagnosis.
    strength : float, default=1.5
        How strongly each informative modality expresses its signal.
    noise : float, default=1.0
        Per-modality noise on the latent severity.
    visits_per_patient : float, default=1.5
        Mean visits per patient, in [1, 3] (each patient has 1-3 visits).
    include_xray : bool, default=False
    scan_size, xray_size : int, default=32
        Side of the cubic scan and of the square X-ray (voxels / pixels), >= 8.
        Counts and sizes that are negative, too small, boolean or not integers are
        refused with a ValueError/TypeError naming the parameter; strength and noise
        must be finite and >= 0.
    missing_rate : float, default=0.0
        Probability that each non-table modality is missing (None) for a visit.
    output_dir : str or path, optional
        Write scans as NIfTI (``.nii.gz``) and X-rays as PNG there with ``manifest.csv``;
        the frame then holds file paths.
    random_state : int, RandomState or None
    max_bytes : int, default=MAX_GENERATED_BYTES (4 GiB)
        Most bytes of arrays to generate (:func:`generated_bytes`: 4 bytes per scan voxel
        and X-ray pixel); a larger request is refused before anything is generated, with
        the estimate in the message.

    Returns
    -------
    Bunch with ``frame`` (one row per visit: ``patient_id``, ``visit``, the clinical
    columns, ``note``, ``scan`` [, ``xray``], ``diagnosis``, ``severity`` and
    ``signal_<modality>`` columns), ``target``, ``groups`` (patient ids), ``modalities``,
    ``informative`` and ``data_card``.

    Examples
    --------
    >>> from toolkit.datasets import make_clinical_cohort
    >>> data = make_clinical_cohort(30, scan_size=16, random_state=0)
    >>> data.frame.shape[0], data.frame["patient_id"].nunique() < 30
    (30, True)
    """
    rng = check_random_state(random_state)
    if not isinstance(include_xray, bool):
        raise TypeError(f"include_xray must be True or False, got {include_xray!r}")
    allowed = MODALITIES if include_xray else MODALITIES[:3]
    if isinstance(informative, str):
        informative = (informative,)
    if not informative or set(informative) - set(allowed):
        raise ValueError(f"informative must be a non-empty subset of {allowed}, got {informative}")
    n_samples = check_int("n_samples", n_samples, low=2)
    prevalence = check_float("prevalence", prevalence, high=1.0, low_open=True, high_open=True)
    strength = check_float("strength", strength)
    noise = check_float("noise", noise)
    visits_per_patient = check_float("visits_per_patient", visits_per_patient, low=1.0, high=3.0)
    scan_size = check_int("scan_size", scan_size, low=8)
    xray_size = check_int("xray_size", xray_size, low=8)
    missing_rate = check_float("missing_rate", missing_rate, high=1.0)
    _check_bytes(n_samples, scan_size, xray_size, include_xray, max_bytes)
    visits = _visits(n_samples, visits_per_patient, rng)
    patient = np.array([p for p, _ in visits])
    severity, diagnosis, signal = _latent(patient, prevalence, noise, informative, allowed, rng)
    s = strength
    table = _clinical_table(signal["clinical"], s, patient, rng)
    notes = [_note(signal["note"][i], s, rng) for i in range(n_samples)]
    scans = [_scan(signal["scan"][i], s, scan_size, rng) for i in range(n_samples)]
    frame = pd.DataFrame(
        {"patient_id": [f"P{p:05d}" for p in patient], "visit": [v for _, v in visits]}
    )
    frame = pd.concat([frame, table], axis=1)
    frame["note"] = notes
    frame["scan"] = scans
    if include_xray:
        frame["xray"] = [_xray(signal["xray"][i], s, xray_size, rng) for i in range(n_samples)]
    frame["diagnosis"] = diagnosis
    frame["severity"] = severity
    for m in allowed:
        frame[f"signal_{m}"] = signal[m] if m in informative else 0.0
    if missing_rate > 0:
        _drop_missing(frame, missing_rate, n_samples, rng)
    if output_dir is not None:
        frame = _write_files(frame, Path(output_dir))
    return Bunch(
        frame=frame,
        target=diagnosis,
        groups=frame["patient_id"].to_numpy(),
        modalities=_modalities(scan_size, include_xray),
        informative=list(informative),
        data_card=data_card("clinical_cohort"),
    )


def _check_bytes(
    n_samples: int, scan_size: int, xray_size: int, include_xray: bool, max_bytes: int
) -> None:
    """Refuse a cohort whose arrays would exceed ``max_bytes``, before generating anything."""
    check_generated_bytes(
        "make_clinical_cohort",
        generated_bytes(n_samples, scan_size, xray_size, include_xray),
        f"n_samples={n_samples}, scan_size={scan_size}"
        + (f", xray_size={xray_size}" if include_xray else "")
        + ": 4 bytes per scan voxel"
        + (" and X-ray pixel" if include_xray else "")
        + " per row",
        max_bytes,
    )


def _visits(n_samples: int, visits_per_patient: float, rng) -> list[tuple[int, int]]:
    """(patient, visit) pairs for ``n_samples`` rows: each patient has 1-3 visits."""
    visits = []
    pid = 0
    while len(visits) < n_samples:
        k = min(1 + rng.poisson(max(visits_per_patient - 1, 0)), 3)
        visits.extend([(pid, v) for v in range(k)])
        pid += 1
    return visits[:n_samples]


def _latent(patient: np.ndarray, prevalence: float, noise: float, informative, allowed, rng):
    """(severity, diagnosis, {modality: signal}) per visit from per-patient severities."""
    n_samples = len(patient)
    n_patients = patient.max() + 1
    severity_p = rng.normal(size=n_patients)
    threshold = np.quantile(severity_p, 1 - prevalence)
    severity = severity_p[patient] + 0.1 * rng.normal(size=n_samples)
    diagnosis = (severity_p[patient] > threshold).astype(int)
    centred = severity - threshold
    signal = {
        m: (centred + noise * rng.normal(size=n_samples))
        if m in informative
        else rng.normal(size=n_samples)
        for m in allowed
    }
    return severity, diagnosis, signal


def _clinical_table(t: np.ndarray, s: float, patient: np.ndarray, rng) -> pd.DataFrame:
    """Vitals and labs whose inflammatory markers rise with signal ``t`` (strength ``s``);
    about 5% of the lab values are missing (NaN). Age and sex are the patient's: those
    drawn for the patient's first visit hold at every visit (visits fall within months)."""
    n_samples = len(patient)
    first = np.unique(patient, return_index=True)[1][patient]  # each row's first visit
    table = pd.DataFrame(
        {
            "age": np.round(rng.normal(62, 14, n_samples).clip(18, 95))[first],
            "sex": rng.choice(["F", "M"], n_samples)[first],
            "heart_rate": np.round(80 + 8 * s * t + rng.normal(0, 8, n_samples)),
            "temperature": np.round(37.0 + 0.4 * s * t + rng.normal(0, 0.3, n_samples), 1),
            "sbp": np.round(125 - 5 * s * t + rng.normal(0, 12, n_samples)),
            "crp": np.round(np.exp(2.0 + 0.6 * s * t + rng.normal(0, 0.4, n_samples)), 1),
            "wbc": np.round(8 + 2.0 * s * t + rng.normal(0, 1.5, n_samples), 1).clip(1),
            "lactate": np.round(np.exp(0.3 + 0.25 * s * t + rng.normal(0, 0.2, n_samples)), 2),
        }
    )
    for col in ("crp", "wbc", "lactate"):
        table.loc[rng.random_sample(n_samples) < 0.05, col] = np.nan
    return table


def _drop_missing(frame: pd.DataFrame, missing_rate: float, n_samples: int, rng) -> None:
    """Set each non-table modality's cell to None with probability ``missing_rate`` (in place)."""
    for col in [c for c in ("note", "scan", "xray") if c in frame]:
        drop = rng.random_sample(n_samples) < missing_rate
        frame[col] = frame[col].astype(object).where(~drop, None)


def _modalities(scan_size: int, include_xray: bool) -> list:
    """The (name, encoder, column) triples for the estimators."""
    from toolkit.encoders import ImageEncoder, ScanEncoder, TabularEncoder, TextEncoder

    clinical_cols = ["age", "sex", "heart_rate", "temperature", "sbp", "crp", "wbc", "lactate"]
    modalities = [
        ("clinical", TabularEncoder(), clinical_cols),
        ("note", TextEncoder(n_components=32), "note"),
        ("scan", ScanEncoder(spatial_size=(scan_size,) * 3), "scan"),
    ]
    if include_xray:
        modalities.append(("xray", ImageEncoder(), "xray"))
    return modalities


def _write_files(frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Scans as NIfTI and X-rays as PNG in ``folder``, and ``manifest.csv`` naming them (an
    empty cell where the item is missing); the frame returned holds the paths (None where
    missing)."""
    import nibabel as nib
    from PIL import Image

    def save_scan(vol, path):
        nib.save(nib.Nifti1Image(np.asarray(vol, dtype=np.float32), np.eye(4)), str(path))

    def save_xray(img, path):
        Image.fromarray((np.asarray(img) * 255).round().astype(np.uint8), mode="L").save(path)

    folder.mkdir(parents=True, exist_ok=True)
    frame, manifest = frame.copy(), frame.copy()
    for col, suffix, save in (("scan", "nii.gz", save_scan), ("xray", "png", save_xray)):
        if col not in frame:
            continue
        names = [None] * len(frame)
        for i, item in enumerate(frame[col]):
            if item is not None:  # a missing item stays missing: no file, an empty cell
                names[i] = f"{col}_{i:05d}.{suffix}"
                save(item, folder / names[i])
        paths = [None if name is None else str(folder / name) for name in names]
        frame[col] = pd.Series(paths, index=frame.index, dtype=object)
        manifest[col] = pd.Series(names, index=frame.index, dtype=object)
    manifest.to_csv(folder / "manifest.csv", index=False)
    return frame
