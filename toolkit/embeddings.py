"""The ``Embeddings`` object: one float32 block per modality plus an availability mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from toolkit._utils import FLOAT32_MAX

__all__ = ["Embeddings"]


class Embeddings:
    """Encoded modalities of ``n_samples`` rows, addressed by name.

    Parameters
    ----------
    blocks : mapping of str to array-like of shape (n_samples, d_m)
        One block per modality, in order. Rows of absent items may hold anything
        (encoders write NaN); they are never read as data because ``mask`` says so.
        Blocks are stored as float32: real values beyond its range (about +-3.4e38),
        complex or non-numeric values and blocks with 0 columns are refused rather than
        silently turned into infinities or dropped parts.
    mask : array-like of bool of shape (n_samples, n_modalities), optional
        ``mask[i, m]`` is True when modality ``m`` is available for row ``i``; a row it
        marks available must be finite (else ValueError naming the block and rows).
        Default: a row is available where its block row is all finite.

    Attributes
    ----------
    names : list of str
    blocks : dict of str to ndarray of shape (n_samples, d_m), float32
    mask : ndarray of shape (n_samples, n_modalities), bool

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings
    >>> emb = Embeddings({"text": np.ones((3, 2)), "audio": np.array([[1.0], [np.nan], [2.0]])})
    >>> emb.mask.tolist()
    [[True, True], [True, False], [True, True]]
    >>> emb.dims
    {'text': 2, 'audio': 1}
    """

    def __init__(self, blocks: Mapping[str, np.ndarray], mask: np.ndarray | None = None):
        if not isinstance(blocks, Mapping):
            raise TypeError(
                "blocks must be a mapping of modality name to array, e.g. {'text': array}, "
                f"got {type(blocks).__name__}"
            )
        if not blocks:
            raise ValueError("Embeddings needs at least one modality block")
        self.names = [str(n) for n in blocks]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"modality names must be unique, got {self.names}")
        self.blocks = {}
        n = None
        for name, block in blocks.items():
            arr = _as_block(str(name), block)
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(
                    f"block '{name}' has {arr.shape[0]} rows but the first block has {n}"
                )
            self.blocks[str(name)] = arr
        if mask is None:
            mask = np.column_stack([np.isfinite(b).all(axis=1) for b in self.blocks.values()])
        else:
            mask = _as_mask(mask, (n, len(self.names)))
            self._check_available(mask)
        self.mask = mask

    def _check_available(self, mask: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Refuse rows that ``mask`` marks available but whose block holds NaN or inf."""
        for m, name in enumerate(self.names):
            wanted = mask[:, m] if rows is None else mask[:, m] & rows
            if not wanted.any():
                continue
            bad = wanted & ~np.isfinite(self.blocks[name]).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"block '{name}' holds NaN or infinite values in rows "
                    f"{np.flatnonzero(bad)[:10].tolist()}, which the mask marks available; "
                    "mark those rows unavailable (mask False) or fix their values"
                )

    @property
    def n_samples(self) -> int:
        return self.mask.shape[0]

    @property
    def n_modalities(self) -> int:
        return len(self.names)

    @property
    def dims(self) -> dict[str, int]:
        return {name: block.shape[1] for name, block in self.blocks.items()}

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}: {v}" for k, v in self.dims.items())
        return f"Embeddings(n_samples={self.n_samples}, dims={{{dims}}}, available={self.mask.mean(axis=0).round(3).tolist()})"

    def __getitem__(self, rows) -> Embeddings:
        """Rows ``rows`` (an index array, slice or boolean mask) as new Embeddings."""
        return Embeddings({k: v[rows] for k, v in self.blocks.items()}, self.mask[rows])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown modality '{name}'; available: {self.names}") from None

    def with_mask(self, mask: np.ndarray) -> Embeddings:
        """The same blocks with another availability mask (shares the block arrays)."""
        out = object.__new__(Embeddings)
        out.names = list(self.names)
        out.blocks = self.blocks
        mask = _as_mask(mask, self.mask.shape)
        out._check_available(mask, rows=(mask & ~self.mask).any(axis=1))
        out.mask = mask
        return out

    def select(self, names: Sequence[str]) -> Embeddings:
        """Only the modalities ``names``, in that order."""
        idx = [self.index(n) for n in names]
        return Embeddings({n: self.blocks[n] for n in names}, self.mask[:, idx])

    @classmethod
    def concat_rows(cls, parts: Sequence[Embeddings]) -> Embeddings:
        """Stack Embeddings with the same modalities row-wise."""
        names = parts[0].names
        for p in parts[1:]:
            if p.names != names:
                raise ValueError(f"cannot stack Embeddings with modalities {p.names} and {names}")
        return cls(
            {n: np.concatenate([p.blocks[n] for p in parts]) for n in names},
            np.concatenate([p.mask for p in parts]),
        )


def _as_block(name: str, block) -> np.ndarray:
    """One block as a 2-D float32 array; refuses what float32 cannot hold faithfully."""
    try:
        raw = np.asarray(block)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"block '{name}' is not a rectangular array ({exc})") from None
    if raw.dtype.kind == "c":
        raise ValueError(
            f"block '{name}' holds complex numbers; embeddings must be real (e.g. pass the "
            "magnitude, or the real and imaginary parts as separate columns)"
        )
    if raw.dtype.kind not in "biuf":
        try:
            raw = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"block '{name}' holds non-numeric values (dtype {raw.dtype}); embeddings "
                "must be numeric arrays"
            ) from None
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2:
        raise ValueError(f"block '{name}' must be 2-D (n_samples, d), got shape {raw.shape}")
    if raw.shape[1] == 0:
        raise ValueError(
            f"block '{name}' has 0 columns; give the modality at least one feature or drop it"
        )
    if raw.dtype != np.float32 and raw.size:
        with np.errstate(invalid="ignore"):
            big = np.isfinite(raw) & (np.abs(raw) > FLOAT32_MAX)
        if big.any():
            rows = np.flatnonzero(big.any(axis=1))[:10].tolist()
            example = raw[np.unravel_index(np.flatnonzero(big)[0], raw.shape)]
            raise ValueError(
                f"block '{name}' holds values beyond the float32 range (+-{FLOAT32_MAX:.1e}) in "
                f"rows {rows} (e.g. {example:.3g}); embeddings are stored as float32, so "
                "rescale them (e.g. standardize or take a log) first"
            )
    return np.asarray(raw, dtype=np.float32)


def _as_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != bool:
        if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"mask must hold booleans (or 0/1), got dtype {arr.dtype}"
                + (f" with values {np.unique(arr)[:5].tolist()}" if arr.dtype.kind in "iuf" else "")
            )
        arr = arr.astype(bool)
    if arr.shape != tuple(shape):
        raise ValueError(f"mask must have shape {tuple(shape)}, got {arr.shape}")
    return arr
