"""Loader for the feature pickles that MMSA publishes for CMU-MOSI, CMU-MOSEI and CH-SIMS."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from toolkit.datasets._common import data_card

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
}  # fmt: skip


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only numpy arrays, numpy scalars/dtypes and builtin containers."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load '{module}.{name}' from an MMSA feature file: only numpy arrays and "
            "builtin containers are allowed (the file may be corrupt or not an MMSA feature file)"
        )


def _sequence_rows(array, lengths=None):
    array = np.asarray(array)
    rows = []
    for i in range(array.shape[0]):
        seq = array[i]
        if lengths is not None and seq.ndim == 2:
            n = int(lengths[i])
            seq = seq[-n:] if n > 0 else seq[:0]  # MMSA pads at the front
        rows.append(seq.astype(np.float32))
    return rows


def load_mmsa_features(path, *, text_key=None):
    """Load an MMSA feature pickle (CMU-MOSI / MOSEI / CH-SIMS ``unaligned``/``aligned`` files).

    The file is a dict with ``train``, ``valid`` and ``test`` entries, each holding
    ``text`` or ``text_bert``, ``audio``, ``vision`` feature arrays of shape
    (n_segments, T, d), ``regression_labels`` (sentiment in [-3, 3] for MOSI/MOSEI),
    ``id`` and optionally ``audio_lengths`` / ``vision_lengths``.

    Unpickling can run arbitrary code, so the file is read with a *restricted*
    unpickler that only admits numpy arrays, numpy scalars and dtypes, and builtin
    containers; anything else is refused with an error. Only open files you trust.

    Parameters
    ----------
    path : str or path
    text_key : {"text", "text_bert"}, optional
        Text features to use (default: ``text`` when present, else ``text_bert``).

    Returns
    -------
    Bunch with ``frame`` (one row per segment: ``id``, ``split`` in train/valid/test,
    ``text``, ``audio``, ``vision`` (per-row (T, d) float32 arrays), ``score``,
    ``label`` (score > 0; MOSI's Acc-2 convention excludes score == 0 elsewhere)),
    ``target`` (score), ``modalities`` and ``data_card``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MMSA feature file '{path}' does not exist")
    with open(path, "rb") as fh:
        data = _RestrictedUnpickler(fh).load()
    if not isinstance(data, dict) or not {"train", "valid", "test"} <= set(data):
        raise ValueError(
            f"'{path}' is not an MMSA feature file: expected a dict with train/valid/test"
        )
    parts = []
    for split in ("train", "valid", "test"):
        part = data[split]
        key = text_key or ("text" if "text" in part else "text_bert")
        missing = [k for k in (key, "audio", "vision", "regression_labels") if k not in part]
        if missing:
            raise ValueError(f"'{path}' split '{split}' lacks {missing} (keys: {sorted(part)})")
        n = len(part["regression_labels"])
        ids = part.get("id", [f"{split}_{i}" for i in range(n)])
        frame = pd.DataFrame(
            {
                "id": [str(i) for i in ids],
                "split": split,
                "text": _sequence_rows(part[key]),
                "audio": _sequence_rows(part["audio"], part.get("audio_lengths")),
                "vision": _sequence_rows(part["vision"], part.get("vision_lengths")),
                "score": np.asarray(part["regression_labels"], dtype=np.float64).ravel(),
            }
        )
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True)
    frame["label"] = (frame["score"] > 0).astype(int)
    from toolkit.encoders import FeatureEncoder

    modalities = [(m, FeatureEncoder(), m) for m in ("text", "audio", "vision")]
    return Bunch(
        frame=frame,
        target=frame["score"].to_numpy(),
        modalities=modalities,
        data_card=data_card("mmsa_features"),
    )
