"""Progress that shows where people work: a bar on a terminal, a notebook bar in Jupyter,
plain lines in a log; and the libraries' own bars kept quiet while the toolkit loads.

:func:`progress` picks, for a loop whose ``verbose`` is on:

- in a Jupyter kernel with ``ipywidgets``: tqdm's notebook bar (``tqdm.notebook``), never
  ``tqdm.auto``'s "IProgress not found" fallback;
- on a terminal (stderr is a TTY): a tqdm bar on stderr;
- elsewhere (a log file, CI, Jupyter without ``ipywidgets``) and when the caller asks for
  ``lines`` (network training, where each epoch is worth a line): one plain line per step,
  through the ``toolkit.progress`` logger when logging is configured to show INFO from it,
  else on stderr; without ``lines``, nothing (a per-chunk encoding bar would flood a log).

The bars name what runs: the estimators fit and encode each modality inside
:func:`named` (``with named("xray"):``), so a bar labelled "training image cnn" reads
"xray: training image cnn". :func:`quiet_library_bars` turns off transformers' and
huggingface_hub's bars ("Loading weights", downloads) inside a block and restores their
settings on exit, so a user's own loads keep theirs.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import sys
import threading
import warnings

#: The logger plain progress lines go to (when it is enabled for INFO and has a handler).
LOGGER = logging.getLogger("toolkit.progress")

_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar("toolkit_progress_name",
                                                                   default=None)  # fmt: skip


@contextlib.contextmanager
def named(name: str | None):
    """Inside: bars and lines are labelled ``"<name>: <desc>"`` (the modality being fitted
    or encoded; None: unchanged)."""
    token = _NAME.set(name)
    try:
        yield
    finally:
        _NAME.reset(token)


def label(desc: str | None) -> str | None:
    """``desc`` prefixed with the name set by :func:`named`, if any.

    Examples
    --------
    >>> from toolkit._progress import label, named
    >>> with named("xray"):
    ...     label("training image cnn")
    'xray: training image cnn'
    >>> label("training image cnn")
    'training image cnn'
    """
    name = _NAME.get()
    return desc if name is None else f"{name}: {desc}" if desc else name


def wanted(verbose=1, stream=None) -> bool:
    """Whether a terminal bar should be drawn: ``verbose`` is truthy and ``stream`` (default
    stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(verbose) and callable(isatty) and bool(isatty())


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython imported, running under ipykernel)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def notebook_widgets() -> bool:
    """Whether tqdm's notebook bar can draw (``ipywidgets`` is importable)."""
    try:
        from tqdm.notebook import IProgress
    except ImportError:  # pragma: no cover - tqdm ships tqdm.notebook
        return False
    return IProgress is not None


def mode(verbose=1, *, lines: bool = False, stream=None) -> str | None:
    """How :func:`progress` shows itself: ``"notebook"``, ``"bar"``, ``"lines"`` or None."""
    if not verbose:
        return None
    if in_notebook() and notebook_widgets():
        return "notebook"
    if wanted(verbose, stream):
        return "bar"
    return "lines" if lines else None


def progress(iterable=None, *, total=None, desc=None, verbose=1, unit="it", leave=False,
             lines=False):  # fmt: skip
    """``iterable`` with progress shown as :func:`mode` says (``desc`` labelled by
    :func:`named`): a tqdm bar (terminal or notebook), a :class:`LineProgress`, or a
    disabled tqdm (the iterable unchanged, no output). Each has ``update``,
    ``set_postfix`` and ``close``.

    Examples
    --------
    >>> from toolkit._progress import progress
    >>> [x * 2 for x in progress(range(3), desc="doubling", verbose=0)]
    [0, 2, 4]
    """
    how, desc = mode(verbose, lines=lines), label(desc)
    if how == "lines":
        return LineProgress(iterable, total=total, desc=desc, unit=unit)
    if how == "notebook":
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=how is None, dynamic_ncols=True)  # fmt: skip


def emit(message: str) -> None:
    """One progress line: to the ``toolkit.progress`` logger at INFO when it is enabled for
    INFO and has a handler (a log file set up with ``logging.basicConfig(level="INFO")``),
    else to stderr (which a notebook cell and a redirected log both show)."""
    if LOGGER.isEnabledFor(logging.INFO) and LOGGER.hasHandlers():
        LOGGER.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


class LineProgress:
    """A progress "bar" of plain lines: one per step (``"xray: training image cnn: epoch
    3/8, train_loss=0.41, valid_loss=0.45"``), written by :func:`emit` once the step is done
    (after the loop body, so with its ``set_postfix``); ``close`` writes the last step when
    the loop was left early (early stopping)."""

    def __init__(self, iterable=None, *, total=None, desc=None, unit="it"):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n, self.reported, self.postfix, self.closed = 0, 0, {}, False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1) -> None:
        self.n += n
        self._line()

    def set_postfix(self, values=None, **kwargs) -> None:
        self.postfix = {**(values or {}), **kwargs}

    def close(self) -> None:
        """Write the step in progress (a loop left before its next step) and stop."""
        if not self.closed and self.iterable is not None and self.n == self.reported:
            self.n += 1  # the step whose body ran when the loop was left
            if self.total is None or self.n <= self.total:
                self._line(stopped=True)
        self.closed = True

    def _line(self, stopped=False) -> None:
        if self.closed:
            return
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        step = count if self.unit == "it" else f"{self.unit} {count}"
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        end = " (stopped)" if stopped else ""
        emit(f"{self.desc or 'progress'}: {step}{extra}{end}")
        self.reported = self.n


#: Open :func:`quiet_library_bars` blocks (nested or in other threads): the libraries'
#: settings are saved when the first opens and restored when the last closes.
_QUIET: dict = {"depth": 0, "saved": None}
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_library_bars():
    """Inside: no progress bars from transformers ("Loading weights") or huggingface_hub
    (downloads, file scans); on exit both libraries' settings are what they were, as if the
    block had not run (a user's own loads keep their bars). Nested and concurrent blocks
    share one saved state, restored when the last one closes. Light: transformers is not
    imported here (when it is imported inside the block, it gets the setting it would have
    had outside)."""
    try:  # the module (huggingface_hub.utils.tqdm is also the name of its class)
        hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    except ImportError:  # the embed extra is absent: nothing draws library bars
        yield
        return
    with _QUIET_LOCK:
        if _QUIET["depth"] == 0:
            _QUIET["saved"] = _silence(hub_tqdm)
        _QUIET["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                _restore(hub_tqdm, *_QUIET.pop("saved"))
                _QUIET["saved"] = None


def _silence(hub_tqdm) -> tuple[dict, bool | None]:
    """Turn both libraries' bars off; return what :func:`_restore` needs."""
    saved_hub = dict(hub_tqdm.progress_bar_states)  # per-group switches, restored as they were
    transformers_logging = sys.modules.get("transformers.utils.logging")
    was_on = transformers_logging.is_progress_bar_enabled() if transformers_logging else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HF_HUB_DISABLE_PROGRESS_BARS=0 has priority
        hub_tqdm.disable_progress_bars()
        if transformers_logging is not None:
            transformers_logging.disable_progress_bar()
    return saved_hub, was_on


def _restore(hub_tqdm, saved_hub: dict, was_on: bool | None) -> None:
    """huggingface_hub's switches as saved; transformers' as it was (or, imported inside
    the block, as its import would have set it from huggingface_hub's state)."""
    hub_tqdm.progress_bar_states.clear()
    hub_tqdm.progress_bar_states.update(saved_hub)
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is None:
        return
    on = (not hub_tqdm.are_progress_bars_disabled()) if was_on is None else was_on
    if transformers_logging.is_progress_bar_enabled() != on:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if on:
                transformers_logging.enable_progress_bar()
            else:
                transformers_logging.disable_progress_bar()
        hub_tqdm.progress_bar_states.clear()  # its switch also set huggingface_hub's
        hub_tqdm.progress_bar_states.update(saved_hub)
