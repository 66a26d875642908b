"""Registries: the one list each of fusion strategies, encoders and datasets.

A :class:`Registry` maps names to entries, in the order they were registered. Each list
of the toolkit is one registry that lives beside what it lists:
``toolkit.fusion.FUSIONS`` (name -> fusion class), ``toolkit.encoders.ENCODERS`` (class
name -> encoder class) and ``toolkit.datasets.DATASETS`` (function name ->
:class:`toolkit.datasets.DatasetInfo`). Config validation, ``make_fusion``, ``mmtk
datasets`` and the study report read them, so an entry added there is valid everywhere
at once. This module imports nothing from the toolkit (it is the lowest layer).

Example
-------
>>> from toolkit.registry import Registry
>>> colours = Registry("colour", {"red": 1, "green": 2})
>>> colours["red"], list(colours)
(1, ['red', 'green'])
>>> colours["blue"]
Traceback (most recent call last):
...
toolkit.registry.UnknownNameError: unknown colour 'blue'; expected one of 'red', 'green'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry; the message lists the registered names.

    A ``KeyError`` (so ``in`` and ``.get`` work as for a dict) and a ``ValueError``
    (so callers that check values catch it), printed without KeyError's quotes.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(MutableMapping[str, T], Generic[T]):
    """Names -> entries, in registration order.

    Parameters
    ----------
    what : str
        What an entry is, for messages ("fusion", "encoder", "dataset").
    entries : mapping of str to entry, optional
        The first entries.

    Looking up an unknown name raises :class:`UnknownNameError` naming every registered
    name. Names are non-empty strings; :meth:`register` refuses a name already taken,
    while item assignment replaces (so ``monkeypatch.setitem`` works in tests).
    """

    def __init__(self, what: str, entries: Mapping[str, T] | None = None):
        self.what = what
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name (a list, a mapping)
            raise UnknownNameError(self.unknown(name)) from None

    def __setitem__(self, name: str, entry: T) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} name must be a non-empty string, got {name!r}")
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        self[name]  # noqa: B018 - raises UnknownNameError for an unknown name
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, names={self.names()})"

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it; a name already taken is refused."""
        if isinstance(name, str) and name in self._entries:
            raise ValueError(f"{self.what} '{name}' is already registered")
        self[name] = entry
        return entry

    def unknown(self, name: Any) -> str:
        """The message for a name that is not registered."""
        listed = ", ".join(repr(n) for n in self._entries) or "(none registered)"
        return f"unknown {self.what} {name!r}; expected one of {listed}"


class EstimatorRegistry(Registry[type]):
    """A registry of scikit-learn estimator classes (fusion strategies, encoders)."""

    def build(self, name: str, params: Mapping[str, Any] | None = None):
        """A new ``name`` estimator with ``params`` set and checked against its constraints.

        Raises
        ------
        UnknownNameError
            ``name`` is not registered.
        ValueError or TypeError
            A parameter is unknown or out of its constraints (scikit-learn's
            ``InvalidParameterError`` is both), as the estimator's ``fit`` would raise it.
        """
        estimator = self[name]()
        if params:
            estimator.set_params(**params)
        # scikit-learn's parameter checks (``_parameter_constraints``), run by fit.
        check = getattr(estimator, "_validate_params", None)
        if check is not None:
            check()
        return estimator
