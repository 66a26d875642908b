"""Loader for the CMU-MOSI utterances released by Poria et al. (ACL 2017): the training videos.

The file is ``<data_dir>/mosi_poria/train.npz``: one row per utterance of the 62 training
videos of Poria et al.'s split (1,447 utterances), with the spoken words, 73 openSMILE
audio statistics, two blocks computed by networks that the dataset's authors trained on
these labels (``text_cnn``, ``video_3dcnn``), the binary sentiment label and the video id.
The test videos are not distributed with it.

The archive is untrusted input: it must be a regular file of at most :data:`MAX_BYTES`,
the arrays it would decode to are sized from their ``.npy`` headers before any is decoded
(at most :data:`MAX_BYTES` together, none declaring more data than its zip member holds: a
compressed zip bomb or a huge declared shape is refused unread), it is read with
``allow_pickle=False`` (an object array is refused, never unpickled), and
every array is checked (key present, dtype kind, shape, one row per utterance, finite
values, labels 0/1) before a frame is built; each refusal names the file and the key.

Row order is not time order: the file lists all 709 positive utterances first (grouped by
video), then all 738 negative ones. Anything built from a row's position (its index in the
video, its neighbours, an order-dependent truncation of the video's text) would leak the
label, so the loader keeps no position column and builds its context columns from the
video as a whole, in an order that does not depend on the labels (alphabetical).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from toolkit.datasets._common import check_int, data_card

#: Sub-folder of the data folder that holds the file, and the file's name.
MOSI_FOLDER = "mosi_poria"
MOSI_FILE = "train.npz"

#: Largest ``train.npz`` accepted, in bytes (the released file is about 1.1 MB); also the
#: most bytes its arrays may decode to, all together (read from their headers first).
MAX_BYTES = 256 * 2**20

#: Feature blocks a caller may ask for (``blocks``), with their width.
BLOCK_WIDTHS = {"audio_opensmile": 73, "text_cnn": 100, "video_3dcnn": 100}

#: Blocks produced by networks trained on these very labels (see the data card).
LABEL_TRAINED_BLOCKS = ("text_cnn", "video_3dcnn")

#: Where to get the file (said whenever it is missing).
WHERE_TO_GET = (
    "train.npz holds the training split of the CMU-MOSI utterance features released by "
    "Poria et al. (github.com/soujanyaporia/multimodal-sentiment-analysis, commit 948cf07, MIT "
    "licence; the same files are in declare-lab/multimodal-deep-learning); this project's "
    "shared data has it at ../shared/data/mosi_poria/train.npz. Put it at "
    "<data folder>/mosi_poria/train.npz and pass data_dir=<data folder> (a study config: "
    "data.params.data_dir, or --set data.params.data_dir=...) or set TOOLKIT_DATA_DIR"
)


def mosi_path(data_dir=None) -> Path:
    """The path of ``train.npz`` under ``data_dir`` (else ``$TOOLKIT_DATA_DIR``), checked.

    Raises
    ------
    FileNotFoundError
        No data folder is given, or the file is not there; the message says where the file
        was looked for and where to get it.
    ValueError
        The path exists but is not a regular file, or is larger than :data:`MAX_BYTES`.
    """
    if data_dir is None:
        data_dir = os.environ.get("TOOLKIT_DATA_DIR") or None
    if data_dir is None:
        raise FileNotFoundError(
            "CMU-MOSI: no data folder given (data_dir is None and TOOLKIT_DATA_DIR is not set). "
            + WHERE_TO_GET
        )
    path = Path(data_dir).expanduser() / MOSI_FOLDER / MOSI_FILE
    if not path.exists():
        raise FileNotFoundError(f"CMU-MOSI file '{path}' does not exist. " + WHERE_TO_GET)
    if not path.is_file():
        raise ValueError(
            f"CMU-MOSI file '{path}' is not a regular file (a folder, FIFO or device); "
            "replace it with the released train.npz"
        )
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(
            f"CMU-MOSI file '{path}' is {size:,} bytes, more than the {MAX_BYTES:,} allowed "
            "(the released train.npz is about 1.1 MB); replace it with the released file"
        )
    return path


def _array(data, path: Path, key: str, kinds: str, ndim: int) -> np.ndarray:
    """``data[key]`` with its dtype kind in ``kinds`` and ``ndim`` dimensions."""
    if key not in data.files:
        raise ValueError(
            f"CMU-MOSI file '{path}' has no '{key}' array (keys: {sorted(data.files)}); "
            "replace it with the released train.npz"
        )
    try:
        arr = data[key]
    except ValueError as exc:  # sizes and object dtypes were checked: a damaged member
        raise ValueError(
            f"CMU-MOSI file '{path}', key '{key}': the array cannot be read ({exc}); replace "
            "the file with the released train.npz"
        ) from exc
    if arr.dtype.kind not in kinds or arr.ndim != ndim:
        raise ValueError(
            f"CMU-MOSI file '{path}', key '{key}': expected a {ndim}-D array of dtype kind "
            f"{sorted(kinds)}, found dtype {arr.dtype} with shape {arr.shape}"
        )
    return arr


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple:
    """(shape, dtype) that the ``.npy`` member ``info`` declares, read without its data."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype


def _check_sizes(path: Path, keys) -> None:
    """Refuse, before anything is decoded, a member of ``keys`` whose header declares an
    object dtype, more bytes than the member holds, or more than :data:`MAX_BYTES` in all."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        for key in keys:
            try:
                info = zf.getinfo(f"{key}.npy")
            except KeyError:
                continue  # _array names the missing key
            shape, dtype = _header(zf, info)
            where = f"CMU-MOSI file '{path}', key '{key}'"
            if dtype.hasobject:
                raise ValueError(
                    f"{where}: an object array that only pickle could read; it is refused "
                    "(allow_pickle=False). Store it as a numeric or unicode array"
                )
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            total += nbytes
            if nbytes > info.file_size:
                raise ValueError(
                    f"{where}: its header declares shape {shape} ({nbytes:,} bytes) but the "
                    f"member holds {info.file_size:,} bytes (truncated or crafted); replace "
                    "the file with the released train.npz"
                )
            if total > MAX_BYTES:
                raise ValueError(
                    f"{where}: its header declares shape {shape} ({nbytes:,} bytes); the "
                    f"arrays would decode to more than the {MAX_BYTES:,} bytes allowed "
                    "(the released file decodes to about 4 MB); replace the file with the "
                    "released train.npz"
                )


def _read(path: Path, blocks) -> dict:
    """The checked arrays of ``path``: transcript, label, video_id and ``blocks``."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"CMU-MOSI file '{path}' is not a readable .npz archive (not a zip file); replace "
            "it with the released train.npz"
        )
    try:
        _check_sizes(path, ("transcript", "video_id", "label", *blocks))
        with np.load(path, allow_pickle=False) as data:
            arrays = {
                "transcript": _array(data, path, "transcript", "U", 1),
                "video_id": _array(data, path, "video_id", "U", 1),
                "label": _array(data, path, "label", "iub", 1),
            }
            for block in blocks:
                arrays[block] = _array(data, path, block, "f", 2)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(
            f"CMU-MOSI file '{path}' is not a readable .npz archive ({exc}); replace it with "
            "the released train.npz"
        ) from exc
    n = len(arrays["label"])
    for key, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(
                f"CMU-MOSI file '{path}', key '{key}': {len(arr)} rows, but 'label' has {n}; "
                "every array needs one row per utterance"
            )
    for block in blocks:
        arr = arrays[block]
        if arr.shape[1] != BLOCK_WIDTHS[block]:
            raise ValueError(
                f"CMU-MOSI file '{path}', key '{block}': expected shape ({n}, "
                f"{BLOCK_WIDTHS[block]}), found {arr.shape}"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"CMU-MOSI file '{path}', key '{block}': NaN or infinite value at row {row}, "
                f"feature {col}; replace the file with the released train.npz"
            )
    labels = arrays["label"].astype(np.int64)
    odd = ~np.isin(labels, (0, 1))
    if odd.any():
        raise ValueError(
            f"CMU-MOSI file '{path}', key 'label': expected 0 (negative) or 1 (positive), "
            f"found {arrays['label'][odd][:5].tolist()} at rows {np.flatnonzero(odd)[:5].tolist()}"
        )
    arrays["label"] = labels
    return arrays


def _video_text(transcripts: np.ndarray, videos: np.ndarray) -> list[str]:
    """Per utterance: all the utterances of its video (its own included) joined in
    alphabetical order, so the text is the same for every row of a video and does not
    depend on the file's (label-sorted) row order."""
    out = [""] * len(transcripts)
    for video in pd.unique(videos):
        rows = np.flatnonzero(videos == video)
        text = " . ".join(sorted(str(transcripts[r]) for r in rows))
        for row in rows:
            out[row] = text
    return out


def _video_mean(features: np.ndarray, videos: np.ndarray) -> list:
    """Per utterance: the mean of its video's features (its own included), float32."""
    out = [None] * len(features)
    for video in pd.unique(videos):
        rows = np.flatnonzero(videos == video)
        mean = features[rows].astype(np.float64).mean(axis=0).astype(np.float32)
        for row in rows:
            out[row] = mean
    return out


def _check_blocks(blocks) -> tuple:
    if isinstance(blocks, str):
        blocks = (blocks,)
    blocks = tuple(blocks)
    unknown = [b for b in blocks if b not in BLOCK_WIDTHS]
    if unknown or len(set(blocks)) != len(blocks):
        raise ValueError(
            f"blocks must be distinct names from {sorted(BLOCK_WIDTHS)}, got {list(blocks)}"
        )
    trained = [b for b in blocks if b in LABEL_TRAINED_BLOCKS]
    if trained:
        warnings.warn(
            f"CMU-MOSI blocks {trained} were produced by networks the dataset's authors trained "
            "on these very labels: any score computed on these rows, even grouped by video, "
            "overstates what they give on unseen videos (see the data card)",
            UserWarning,
            stacklevel=3,
        )
    return blocks


def load_mosi(data_dir=None, *, blocks=("audio_opensmile",), n_videos=None):
    """CMU-MOSI utterances of the 62 training videos of Poria et al. (2017), one row each.

    Reads ``<data_dir>/mosi_poria/train.npz`` (see :func:`mosi_path`). Every row is one
    utterance; a video is one speaker, so evaluate with the videos as groups
    (``groups`` is ``video_id``). Besides the utterance's own words and audio, each row
    carries context from its video (never labels), as the published models use it:
    ``context``, the transcripts of all the video's utterances in alphabetical order (the
    same text for every row of the video), and ``audio_context``, the mean of their
    openSMILE features (with the row's own features, a per-speaker normalization). Context
    is computed within the file read, so a file of other videos gets its own. The file's
    row order is sorted by label (positives first), so no column depends on it.

    Parameters
    ----------
    data_dir : str or path, optional
        Folder holding ``mosi_poria/train.npz`` (default ``$TOOLKIT_DATA_DIR``).
    blocks : sequence of str, default=("audio_opensmile",)
        Feature blocks to load as columns of float32 vectors, from
        ``"audio_opensmile"`` (73-d, unsupervised), ``"text_cnn"`` and ``"video_3dcnn"``
        (100-d each). The last two were produced by networks the dataset's authors trained
        on these very labels, so scores computed with them on these rows overstate them:
        asking for them warns (``UserWarning``).
    n_videos : int or None, default=None
        Keep only the first ``n_videos`` videos of the file (in file order), for a quick
        run; None keeps all 62.

    Returns
    -------
    Bunch with ``frame`` (columns ``transcript``, ``context``, one per block (e.g.
    ``audio_opensmile``), ``audio_context`` when audio is loaded, ``label`` (1 positive,
    0 negative), ``video_id``), ``target``,
    ``groups`` (video ids), ``modalities`` (words and audio), ``label_trained_blocks``
    (those of ``blocks`` trained on the labels) and ``data_card``.

    Raises
    ------
    FileNotFoundError
        The file is absent (the message says where to get it and where to put it).
    ValueError
        The file is not a regular file, too large, not an ``.npz`` archive, lacks a key,
        holds an object (pickle-only) array, a wrong dtype or shape, a non-finite value or a
        label other than 0/1 (each message names the file and the key); a bad parameter.

    Examples
    --------
    >>> from toolkit.datasets import load_mosi
    >>> bunch = load_mosi("../shared/data")  # doctest: +SKIP
    >>> bunch.frame.shape[0], len(set(bunch.groups))  # doctest: +SKIP
    (1447, 62)
    """
    blocks = _check_blocks(blocks)
    if n_videos is not None:
        n_videos = check_int("n_videos", n_videos, low=1)
    path = mosi_path(data_dir)
    arrays = _read(path, blocks)
    if n_videos is not None:
        keep = np.isin(arrays["video_id"], pd.unique(arrays["video_id"])[:n_videos])
        arrays = {key: arr[keep] for key, arr in arrays.items()}
    transcripts = np.char.strip(arrays["transcript"])
    videos = arrays["video_id"]
    frame = pd.DataFrame({"transcript": transcripts.astype(object)})
    frame["context"] = _video_text(transcripts, videos)
    for block in blocks:
        frame[block] = list(arrays[block].astype(np.float32))
    if "audio_opensmile" in blocks:
        frame["audio_context"] = _video_mean(arrays["audio_opensmile"], videos)
    frame["label"] = arrays["label"]
    frame["video_id"] = videos.astype(object)
    from toolkit.encoders import FeatureEncoder, TextEncoder

    modalities = [("text", TextEncoder(), "transcript")]
    if "audio_opensmile" in blocks:
        modalities.append(("audio", FeatureEncoder(pooling=("mean",)), "audio_opensmile"))
    return Bunch(
        frame=frame,
        target=frame["label"].to_numpy(),
        groups=frame["video_id"].to_numpy(),
        modalities=modalities,
        label_trained_blocks=[b for b in blocks if b in LABEL_TRAINED_BLOCKS],
        data_card=data_card("mosi"),
    )
