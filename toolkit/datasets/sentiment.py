"""``make_sentiment_clips``: synthetic transcript + voice + face clips with known ground truth."""

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

# Sentiment vocabulary (common English opinion words), neutral filler and modifiers.
POSITIVE = [
    "good", "great", "excellent", "wonderful", "amazing", "enjoyable", "delightful", "brilliant",
    "pleasant", "fantastic", "lovely", "impressive", "charming", "fun", "superb", "moving",
]  # fmt: skip
NEGATIVE = [
    "bad", "terrible", "awful", "boring", "dull", "horrible", "disappointing", "poor",
    "annoying", "weak", "painful", "mediocre", "bland", "messy", "tedious", "forgettable",
]  # fmt: skip
SUBJECTS = [
    "the movie",
    "the plot",
    "the acting",
    "the ending",
    "this film",
    "the story",
    "the music",
    "the cast",
]
FILLER = [
    "i mean", "you know", "well", "honestly", "so", "basically", "to be fair", "at the start",
    "in the middle", "for me", "overall", "i guess",
]  # fmt: skip
INTENSIFIERS = ["really", "very", "incredibly", "so", "truly"]
MODALITIES = ("text", "audio", "face")


def _transcript(u: float, strength: float, rng) -> str:
    """An utterance whose words lean positive with probability sigmoid(3 * strength * u)."""
    p_pos = 1.0 / (1.0 + np.exp(-3.0 * strength * u))
    parts = []
    for _ in range(rng.randint(3, 6)):
        positive = rng.random_sample() < p_pos
        negate = rng.random_sample() < 0.15  # "not bad" carries the opposite polarity
        pool = NEGATIVE if positive == negate else POSITIVE
        word = pool[rng.randint(len(pool))]
        if negate:
            word = f"not {word}"
        elif abs(u) > 1.0 and rng.random_sample() < 0.6:
            word = f"{INTENSIFIERS[rng.randint(len(INTENSIFIERS))]} {word}"
        clause = f"{SUBJECTS[rng.randint(len(SUBJECTS))]} was {word}"
        if rng.random_sample() < 0.5:
            clause = f"{FILLER[rng.randint(len(FILLER))]} {clause}"
        parts.append(clause)
    return ", ".join(parts)


def _voice(
    u: float, strength: float, arousal: float, sr: int, duration: float, noise: float, rng
) -> np.ndarray:
    """A voiced, syllabic waveform: pitch level and range follow valence, energy follows arousal."""
    n = int(sr * duration)
    t = np.arange(n) / sr
    f0 = 150.0 * 2.0 ** (0.35 * strength * u) * 2.0 ** (0.1 * rng.normal())
    rate = 4.0 * 2.0 ** (0.2 * arousal)  # syllables per second
    contour = f0 * (
        1.0 + 0.08 * (1 + 0.5 * strength * u) * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6))
    )
    phase = 2 * np.pi * np.cumsum(contour) / sr
    wave = sum((0.6**k) * np.sin((k + 1) * phase) for k in range(4))
    envelope = np.clip(np.sin(np.pi * rate * t + rng.uniform(0, np.pi)), 0, None) ** 0.7
    level = 0.3 * 2.0 ** (0.5 * arousal)
    wave = level * envelope * wave / 2.2 + noise * 0.05 * rng.normal(size=n)
    return np.clip(wave, -1, 1).astype(np.float32)


def _face(u: float, strength: float, size: int, noise: float, rng) -> np.ndarray:
    """A grey face: mouth curvature and brow slant follow valence."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1  # [-1, 1]
    cx, cy = rng.normal(0, 0.04, size=2)
    img = np.zeros((size, size), dtype=np.float64)
    r = np.hypot(xx - cx, yy - cy)
    img[np.abs(r - 0.8) < 0.06] = 0.8  # head outline
    for ex in (-0.32, 0.32):  # eyes
        img[np.hypot(xx - cx - ex, yy - cy + 0.25) < 0.09] = 1.0
    curve = 0.45 * np.tanh(strength * u)  # mouth: smile (u > 0) or frown (u < 0)
    mx = np.linspace(-0.4, 0.4, 4 * size)
    my = 0.35 - curve * (1 - (mx / 0.4) ** 2) + curve * 0.5
    brow = -0.2 * np.tanh(strength * u)
    bx = np.linspace(-0.18, 0.18, 2 * size)
    pts = [(mx, my)] + [(ex + bx, -0.5 + np.sign(ex) * brow * bx) for ex in (-0.32, 0.32)]
    for px, py in pts:
        ix = np.clip(((px + cx + 1) / 2 * (size - 1)).round().astype(int), 0, size - 1)
        iy = np.clip(((py + cy + 1) / 2 * (size - 1)).round().astype(int), 0, size - 1)
        img[iy, ix] = 1.0
    img = img + noise * 0.15 * rng.normal(size=img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def generated_bytes(n_samples: int, sample_rate: int, duration: float, image_size: int) -> int:
    """Bytes of the float32 waveforms and face images :func:`make_sentiment_clips` makes."""
    return int(4 * n_samples * (int(sample_rate * duration) + image_size**2))


def make_sentiment_clips(
    n_samples: int = 200,
    *,
    text_strength: float = 1.0,
    audio_strength: float = 1.0,
    face_strength: float = 1.0,
    informative: tuple[str, ...] = MODALITIES,
    conflict_rate: float = 0.0,
    noise: float = 1.0,
    missing_rate: float = 0.0,
    sample_rate: int = 8000,
    duration: float = 0.6,
    image_size: int = 32,
    output_dir: str | Path | None = None,
    random_state=None,
    max_bytes: int = MAX_GENERATED_BYTES,
):
    """Generate synthetic MOSI-style clips (transcript, voice, face) with known ground truth.

    SYNTHETIC DATA. Each clip has one latent sentiment component per modality,
    u_m ~ N(0, 1) for m in ``informative`` (0 for the others). The sentiment score is
    ``score = clip(3 * sum_m u_m / sqrt(len(informative)), -3, 3)`` (CMU-MOSI's scale)
    and the label is ``score > 0``, so the signal is *split* across the informative
    modalities: each alone predicts the label only partly, and fusion is needed.

    - text: 3-5 clauses of opinion words whose polarity leans with u_text (negations
      such as "not bad" flip a word's polarity; intensifiers on strong sentiment;
      neutral filler);
    - audio: a voiced, syllabic waveform whose pitch level and range rise with u_audio;
      energy and syllable rate follow a random arousal (a nuisance);
    - face: a grey face image whose mouth curvature and brow slant follow u_face.

    Parameters
    ----------
    n_samples : int, default=200
        Number of clips, >= 1.
    text_strength, audio_strength, face_strength : float, default=1.0
        How strongly each modality expresses its component (0: not at all; >= 0).
    informative : tuple of str, default=("text", "audio", "face")
        Modalities whose component drives the label; the others carry no label signal.
    conflict_rate : float, default=0.0
        Share of clips whose transcript polarity is reversed (sarcasm-like conflict).
    noise : float, default=1.0
        Scales audio and image noise.
    missing_rate : float, default=0.0
        Probability that each modality's cell is None (a row always keeps one).
    sample_rate, duration, image_size
        Audio rate (Hz, >= 1), clip length (s, > 0, at least one sample) and face image
        side (pixels, >= 8). Counts, sizes and durations that are negative, zero, boolean
        or (for counts and sizes) not integers are refused with a ValueError/TypeError
        naming the parameter; rates and noise levels must be finite and >= 0.
    output_dir : str or path, optional
        When given, clips are written as WAV and PNG files there, with
        ``manifest.csv``; the frame's ``audio`` and ``face`` columns then hold paths.
    random_state : int, RandomState or None
    max_bytes : int, default=MAX_GENERATED_BYTES (4 GiB)
        Most bytes of arrays to generate (:func:`generated_bytes`: 4 bytes per audio
        sample and face pixel); a larger request is refused before anything is generated,
        with the estimate in the message.

    Returns
    -------
    Bunch with
        frame : DataFrame with columns ``transcript``, ``audio`` ((waveform, rate) or path),
            ``face`` (array or path), ``label``, ``score``, ``arousal``, ``conflict`` and
            ``signal_text``, ``signal_audio``, ``signal_face`` (the latent components);
        target : ndarray of int (0 negative, 1 positive);
        score : ndarray of float in [-3, 3];
        modalities : list of (name, encoder, column) for the estimators;
        informative : list of str;
        data_card : the packaged card ``toolkit/data_cards/sentiment_clips.md``.

    Examples
    --------
    >>> from toolkit.datasets import make_sentiment_clips
    >>> data = make_sentiment_clips(20, random_state=0)
    >>> data.frame.shape[0], sorted(set(data.target.tolist()))
    (20, [0, 1])
    """
    rng = check_random_state(random_state)
    if isinstance(informative, str):
        informative = (informative,)
    unknown = set(informative) - set(MODALITIES)
    if unknown or not informative:
        raise ValueError(
            f"informative must be a non-empty subset of {MODALITIES}, got {informative}"
        )
    n_samples = check_int("n_samples", n_samples, low=1)
    text_strength = check_float("text_strength", text_strength)
    audio_strength = check_float("audio_strength", audio_strength)
    face_strength = check_float("face_strength", face_strength)
    conflict_rate = check_float("conflict_rate", conflict_rate, high=1.0)
    noise = check_float("noise", noise)
    missing_rate = check_float("missing_rate", missing_rate, high=1.0)
    sample_rate = check_int("sample_rate", sample_rate, low=1)
    duration = check_float("duration", duration, low_open=True)
    _check_one_sample(sample_rate, duration)
    image_size = check_int("image_size", image_size, low=8)
    _check_bytes(n_samples, sample_rate, duration, image_size, max_bytes)
    strength = {"text": text_strength, "audio": audio_strength, "face": face_strength}
    u = {
        m: (rng.normal(size=n_samples) if m in informative else np.zeros(n_samples))
        for m in MODALITIES
    }
    total = sum(u[m] for m in informative) / np.sqrt(len(informative))
    score = np.clip(3 * total, -3, 3)
    label = (score > 0).astype(int)
    arousal = rng.normal(size=n_samples)
    conflict = rng.random_sample(n_samples) < conflict_rate
    transcripts, voices, faces = _clips(
        u, informative, strength, conflict, arousal, sample_rate, duration, image_size, noise, rng
    )
    frame = pd.DataFrame(
        {
            "transcript": transcripts,
            "audio": [(v, sample_rate) for v in voices],
            "face": faces,
            "label": label,
            "score": score,
            "arousal": arousal,
            "conflict": conflict,
            **{f"signal_{m}": u[m] for m in MODALITIES},
        }
    )
    if missing_rate > 0:
        _drop_missing(frame, missing_rate, n_samples, rng)
    if output_dir is not None:
        frame = _write_files(frame, Path(output_dir), sample_rate)
    return Bunch(
        frame=frame,
        target=label,
        score=score,
        modalities=_modalities(sample_rate),
        informative=list(informative),
        data_card=data_card("sentiment_clips"),
    )


def _check_one_sample(sample_rate: int, duration: float) -> None:
    """Refuse a duration shorter than one sample at ``sample_rate``."""
    if int(sample_rate * duration) < 1:
        raise ValueError(
            f"duration must give at least one sample at sample_rate={sample_rate} Hz, "
            f"got {duration!r} s; use duration >= {1 / sample_rate:.3g}"
        )


def _check_bytes(
    n_samples: int, sample_rate: int, duration: float, image_size: int, max_bytes: int
) -> None:
    """Refuse clips whose arrays would exceed ``max_bytes``, before generating anything."""
    check_generated_bytes(
        "make_sentiment_clips",
        generated_bytes(n_samples, sample_rate, duration, image_size),
        f"n_samples={n_samples}, sample_rate={sample_rate}, duration={duration:g}, "
        f"image_size={image_size}: 4 bytes per audio sample and face pixel per clip",
        max_bytes,
    )


def _clips(
    u, informative, strength, conflict, arousal, sample_rate, duration, image_size, noise, rng
):
    """(transcripts, waveforms, face images) of the clips, one clip after the other."""
    transcripts, voices, faces = [], [], []
    for i in range(len(arousal)):
        ut = -u["text"][i] if conflict[i] else u["text"][i]
        # An uninformative modality still varies: it expresses an unrelated random value.
        ut = ut if "text" in informative else rng.normal()
        ua = u["audio"][i] if "audio" in informative else rng.normal()
        uf = u["face"][i] if "face" in informative else rng.normal()
        transcripts.append(_transcript(ut, strength["text"], rng))
        voices.append(_voice(ua, strength["audio"], arousal[i], sample_rate, duration, noise, rng))
        faces.append(_face(uf, strength["face"], image_size, noise, rng))
    return transcripts, voices, faces


def _drop_missing(frame: pd.DataFrame, missing_rate: float, n_samples: int, rng) -> None:
    """Set each modality's cell to None with probability ``missing_rate``, keeping one
    modality per row (in place)."""
    drop = rng.random_sample((n_samples, 3)) < missing_rate
    for i in np.flatnonzero(drop.all(axis=1)):
        drop[i, rng.randint(3)] = False
    for j, col in enumerate(["transcript", "audio", "face"]):
        frame[col] = frame[col].astype(object).where(~drop[:, j], None)


def _modalities(sample_rate: int) -> list:
    """The (name, encoder, column) triples for the estimators."""
    from toolkit.encoders import AudioEncoder, ImageEncoder, TextEncoder

    return [
        ("text", TextEncoder(n_components=32), "transcript"),
        ("audio", AudioEncoder(sample_rate=sample_rate), "audio"),
        ("face", ImageEncoder(), "face"),
    ]


def _write_files(frame: pd.DataFrame, folder: Path, sample_rate: int) -> pd.DataFrame:
    import soundfile as sf
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    audio_paths, face_paths = [], []
    for i, (audio, face) in enumerate(zip(frame["audio"], frame["face"], strict=True)):
        if audio is None:
            audio_paths.append(None)
        else:
            path = folder / f"clip_{i:05d}.wav"
            sf.write(str(path), audio[0], sample_rate, subtype="PCM_16")
            audio_paths.append(str(path))
        if face is None:
            face_paths.append(None)
        else:
            path = folder / f"face_{i:05d}.png"
            Image.fromarray((np.asarray(face) * 255).round().astype(np.uint8), mode="L").save(path)
            face_paths.append(str(path))
    frame["audio"], frame["face"] = audio_paths, face_paths
    manifest = frame.copy()
    manifest["audio"] = [None if p is None else Path(p).name for p in audio_paths]
    manifest["face"] = [None if p is None else Path(p).name for p in face_paths]
    manifest.to_csv(folder / "manifest.csv", index=False)
    return frame
