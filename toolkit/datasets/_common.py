"""Helpers shared by the dataset generators and loaders: data cards and argument checks.

Data cards are Markdown files with YAML front matter in the repository's top-level
``data_cards/<name>.md``, shipped inside the package as ``toolkit/data_cards/<name>.md``
(``toolkit/data_cards`` links to ``data_cards``; read with :mod:`importlib.resources`, so an
installed wheel has them). The front matter is the one source of a dataset's licence, citation and
synthetic flag: :class:`DatasetInfo` reads them from there.

The argument checks refuse what would otherwise give a silently wrong or empty result: a
boolean where a number is meant (``True`` is an ``int`` in Python), a float where a count
is meant, a negative or zero count, size or duration, a non-finite number. Their messages
name the parameter and the allowed range.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

#: The packaged data cards (``toolkit/data_cards``, a link to the top-level ``data_cards``):
#: a folder of ``<name>.md`` files.
DATA_CARDS: Traversable = files("toolkit") / "data_cards"

#: What a registered dataset is: generated with ground truth, a public dataset read from a
#: local copy, or the user's own data (a template to fill in).
DATASET_KINDS = ("synthetic", "real", "user")

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def data_card(name: str) -> Traversable:
    """The data card ``toolkit/data_cards/{name}.md`` (a path inside the installed package)."""
    return DATA_CARDS / f"{name}.md"


@functools.cache
def read_card(name: str) -> dict:
    """The YAML front matter of the data card ``name`` as a dict.

    Raises
    ------
    FileNotFoundError
        No card of that name is packaged.
    ValueError
        The card has no front matter (a block between ``---`` lines at its top) or it is not
        a YAML mapping.
    """
    import yaml

    card = data_card(name)
    if not card.is_file():
        raise FileNotFoundError(f"data card '{name}.md' is not in {DATA_CARDS}")
    match = _FRONT_MATTER.match(card.read_text(encoding="utf-8"))
    meta = yaml.safe_load(match.group(1)) if match else None
    if not isinstance(meta, dict):
        raise ValueError(
            f"data card '{card}' has no YAML front matter mapping; start it with a block "
            "between '---' lines"
        )
    return meta


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset; its licence and citation are read from its card.

    Parameters
    ----------
    name : str
        The function's name, as a study config's ``data.source`` names it.
    function : callable
        The ``make_*`` / ``load_*`` function; it returns a Bunch whose ``data_card`` is
        :attr:`card`.
    kind : {"synthetic", "real", "user"}
        Generated with ground truth, a public dataset read from a local copy, or the
        user's own data.
    description : str
        One line for listings (``mmtk datasets``).
    card_name : str
        The card's file name without ``.md`` in ``toolkit/data_cards``.
    estimate_bytes : callable, optional
        For a generator: its parameters (defaults filled in) -> the bytes of the arrays it
        would generate, so a study config can refuse an oversized request before running it.
    """

    name: str
    function: Callable
    kind: str
    description: str
    card_name: str
    estimate_bytes: Callable[[dict], int] | None = None

    def __post_init__(self):
        if self.kind not in DATASET_KINDS:
            raise ValueError(
                f"dataset '{self.name}': kind must be one of {DATASET_KINDS}, got {self.kind!r}"
            )

    @property
    def card(self) -> Traversable:
        """The data card (a path inside the installed package)."""
        return data_card(self.card_name)

    @property
    def card_meta(self) -> dict:
        """The card's front matter (licence, citation, synthetic, modalities, provenance, ...)."""
        return read_card(self.card_name)

    @property
    def title(self) -> str:
        """The card's title."""
        return str(self.card_meta["title"])

    @property
    def licence(self) -> str:
        """The licence, as the card states it."""
        return " ".join(str(self.card_meta["licence"]).split())

    @property
    def citation(self) -> str:
        """What to cite, as the card states it."""
        return " ".join(str(self.card_meta["citation"]).split())

    @property
    def synthetic(self) -> bool:
        """Whether the card marks the data as synthetic."""
        return self.card_meta.get("synthetic") is True

    @property
    def reads_data_dir(self) -> bool:
        """Whether the function reads a data folder (it has a ``data_dir`` parameter)."""
        return "data_dir" in inspect.signature(self.function).parameters

    def generated_bytes(self, params: dict) -> int | None:
        """Estimated bytes of the arrays the function generates with ``params`` (the
        function's defaults fill the rest), or None when the dataset has no estimate."""
        if self.estimate_bytes is None:
            return None
        defaults = {
            key: p.default
            for key, p in inspect.signature(self.function).parameters.items()
            if p.default is not p.empty
        }
        return int(self.estimate_bytes({**defaults, **params}))


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if high is None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    return f"in {left}{low:g}, {high:g}{right}"


def check_int(name: str, value, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; a bool or a float is refused.

    Raises TypeError (wrong type) or ValueError (out of range), naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer {_range(low, high)}, got {value!r} ({type(value).__name__})"
        )
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {_range(low, high)}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value,
    *,
    low: float = 0.0,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given interval; a bool is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number {_range(low, high, low_open, high_open)}, got {value!r} "
            f"({type(value).__name__})"
        )
    number = float(value)
    bad = (
        not math.isfinite(number)
        or number < low
        or (low_open and number == low)
        or (high is not None and (number > high or (high_open and number == high)))
    )
    if bad:
        raise ValueError(
            f"{name} must be a finite number {_range(low, high, low_open, high_open)}, "
            f"got {value!r}"
        )
    return number


#: Default bound of the arrays a generator makes (``max_bytes`` of the ``make_*``
#: functions; a study config's ``max_synthetic_bytes`` has the same default).
MAX_GENERATED_BYTES = 4 * 1024**3


def check_generated_bytes(function: str, estimate: int, detail: str, max_bytes) -> None:
    """Refuse, before anything is generated, a request whose arrays would take more than
    ``max_bytes`` (``detail``: the parameters and the per-row formula, for the message)."""
    max_bytes = check_int("max_bytes", max_bytes)
    if estimate > max_bytes:
        raise ValueError(
            f"{function}({detail}) would generate about {estimate:,} bytes "
            f"({estimate / 1024**3:.1f} GiB) of arrays, above max_bytes={max_bytes:,} "
            f"({max_bytes / 1024**3:.1f} GiB); lower n_samples or the sizes, or pass a larger "
            "max_bytes if the machine has the memory"
        )


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words (for messages)."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_table(path, what: str = "table", **kwargs):
    """``pandas.read_csv(path, **kwargs)`` with errors that name the file.

    An empty file, bytes that are not UTF-8, a malformed CSV or a truncated ``.gz`` raise
    ValueError naming ``what`` and ``path`` (instead of pandas' ``EmptyDataError``,
    ``UnicodeDecodeError`` or ``ParserError``).
    """
    import gzip
    import zlib

    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(
            f"{what} '{path}' is empty (no header line); write a header row naming the "
            "columns, then one row per sample"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} '{path}' is not UTF-8 text (undecodable byte "
            f"{exc.object[exc.start : exc.start + 1].hex()}); save it as UTF-8 CSV"
        ) from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(
            f"{what} '{path}' is truncated or not a valid compressed file ({exc}); "
            "replace it with a complete copy"
        ) from exc
    except ValueError as exc:  # ParserError and column selection errors
        raise ValueError(f"{what} '{path}' could not be read as CSV: {exc}") from exc
