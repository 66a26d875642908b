"""Checks of the text encoder's input and fitted state: cell length, a column of file
paths given as texts, and whether a fitted vectorizer keeps its training vocabulary."""

from __future__ import annotations

import os

#: Default ``TextEncoder(max_chars=...)``: most characters in one cell (about 50 pages).
#: TF-IDF takes about 150 bytes per character of text; a transformers tokenizer reads the
#: whole text before truncating it.
MAX_CHARS = 100_000

#: File name endings that mark a cell as a path to a text file rather than a text.
TEXT_FILE_SUFFIXES = (".txt", ".text", ".md", ".rtf", ".csv", ".json", ".xml", ".html")


def _path_like(text: str) -> bool:
    """Whether a cell reads as the path of a file rather than as a text: one line naming
    an existing regular file, or one ending in a text-file suffix with a folder separator or
    without spaces (``notes/p1.txt``, ``p1.txt``; not ``saved it as notes.txt``)."""
    text = text.strip()
    if not text or "\n" in text or "\0" in text or len(text) >= 4096:
        return False
    if text.lower().endswith(TEXT_FILE_SUFFIXES):
        if "/" in text or os.sep in text or not any(c.isspace() for c in text):
            return True
    try:
        return os.path.isfile(os.path.expanduser(text))
    except (OSError, ValueError):
        return False


def refuse_path_column(items: list, labels: list, where: str) -> None:
    """Refuse a column whose every present cell is a path (see :func:`_path_like`):
    the encoder would encode the path strings, not the files' texts. Stops at the first cell
    that is a text, so an ordinary column costs one check."""
    present = [(label, v) for label, v in zip(labels, items, strict=True) if isinstance(v, str)]
    present = [(label, v) for label, v in present if v.strip()]
    if not present or not all(_path_like(v) for _, v in present):
        return
    label, first = present[0]
    raise ValueError(
        f"every cell of {where} names a file (e.g. row {label!r}: {first!r}), but "
        "TextEncoder encodes each cell's own text, not the file it names: these would be "
        "features of the path strings. Read the files first, e.g. "
        "df[col] = [Path(p).read_text(encoding='utf-8') for p in df[col]]"
    )


def holds_vocabulary(vectorizer) -> bool:
    """Whether ``vectorizer`` (a fitted scikit-learn transformer, possibly a FeatureUnion or
    Pipeline of them) holds a ``vocabulary_`` (or the ``stop_words_`` that older
    scikit-learn releases kept): words or n-grams of the texts it was fitted on."""
    if vectorizer is None:
        return False
    parts = [vectorizer]
    if hasattr(vectorizer, "get_params"):
        parts += [v for v in vectorizer.get_params(deep=True).values() if hasattr(v, "fit")]
    return any(
        getattr(p, "vocabulary_", None) is not None or getattr(p, "stop_words_", None)
        for p in parts
    )
