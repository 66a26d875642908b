"""The ``Embeddings`` object: one float32 block per modality plus an availability mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class Embeddings:
    """Encoded modalities of ``n_samples`` rows, addressed by name.

    Parameters
    ----------
    blocks : mapping of str to array-like of shape (n_samples, d_m)
        One block per modality, in order. Rows of absent items may hold anything
        (encoders write NaN); they are never read as data because ``mask`` says so.
    mask : array-like of bool of shape (n_samples, n_modalities), optional
        ``mask[i, m]`` is True when modality ``m`` is available for row ``i``.
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
        if not blocks:
            raise ValueError("Embeddings needs at least one modality block")
        self.names = [str(n) for n in blocks]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"modality names must be unique, got {self.names}")
        self.blocks = {}
        n = None
        for name, block in blocks.items():
            arr = np.asarray(block, dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.ndim != 2:
                raise ValueError(
                    f"block '{name}' must be 2-D (n_samples, d), got shape {arr.shape}"
                )
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(
                    f"block '{name}' has {arr.shape[0]} rows but the first block has {n}"
                )
            self.blocks[str(name)] = arr
        if mask is None:
            mask = np.column_stack([np.isfinite(b).all(axis=1) for b in self.blocks.values()])
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n, len(self.names)):
            raise ValueError(f"mask must have shape {(n, len(self.names))}, got {mask.shape}")
        self.mask = mask

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
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask must have shape {self.mask.shape}, got {mask.shape}")
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
