"""Progress where people work (toolkit._progress): per-epoch lines naming the modality when
stderr is not a terminal (pytest's capture is not), through logging when it is set up,
tqdm's notebook bar only with ipywidgets, and the libraries' bars quiet only inside our
loads."""

from __future__ import annotations

import importlib
import logging
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from toolkit import EarlyFusion, ImageEncoder, MultimodalClassifier, TabularEncoder, _progress
from toolkit._progress import LineProgress, label, named, progress, quiet_library_bars


def _frame(n=24, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = [rng.random((8, 8)) + 0.5 * label for label in y]
    return pd.DataFrame({"xray": images, "lab": rng.normal(size=n)}), y


def _cnn_model(verbose=True):
    enc = ImageEncoder(backend="cnn", widths=(2,), max_epochs=2, patience=5, device="cpu",
                       progress=False, verbose=verbose, random_state=0)  # fmt: skip
    mods = [("xray", enc, "xray"), ("lab", TabularEncoder(), ["lab"])]
    return MultimodalClassifier(mods, fusion=EarlyFusion(estimator=LogisticRegression()),
                                encoder_cv=2, random_state=0)  # fmt: skip


@pytest.fixture(scope="module")
def frame():
    return _frame()


def test_cnn_training_prints_one_line_per_epoch_naming_the_modality(capsys, frame):
    df, y = frame
    assert not sys.stderr.isatty()  # pytest's capture: what a log file or CI sees
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _cnn_model().fit(df, y)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "training image cnn" in line]
    # the final encoder and the 2 inner-fold clones that cross-fit its outputs, 2 epochs each
    assert [line.split(": epoch")[0] for line in lines] == (
        ["xray: training image cnn"] * 2
        + ["xray (inner fold 1/2): training image cnn"] * 2
        + ["xray (inner fold 2/2): training image cnn"] * 2
    )
    assert lines[0].startswith("xray: training image cnn: epoch 1/2, train_loss=")
    assert "valid_loss=" in lines[0] and lines[1].split(",")[0].endswith("epoch 2/2")
    assert "IProgress" not in err and not [w for w in caught if "IProgress" in str(w.message)]
    assert "Loading weights" not in err


def test_quiet_without_verbose(capsys, frame):
    df, y = frame
    _cnn_model(verbose=False).fit(df, y)
    assert "training" not in capsys.readouterr().err


def test_lines_go_to_logging_when_it_is_set_up(caplog, capsys):
    caplog.set_level(logging.INFO, logger="toolkit.progress")
    with named("note"):
        bar = progress(range(3), desc="fine-tuning text transformers", unit="epoch", lines=True)
        for epoch in bar:
            bar.set_postfix({"train_loss": 0.5 - 0.1 * epoch})
            if epoch == 1:
                break  # early stopping leaves the loop; close() writes the epoch that ran
        bar.close()
    assert [r.getMessage() for r in caplog.records if r.name == "toolkit.progress"] == [
        "note: fine-tuning text transformers: epoch 1/3, train_loss=0.5",
        "note: fine-tuning text transformers: epoch 2/3, train_loss=0.4 (stopped)",
    ]
    assert capsys.readouterr().err == ""


def test_mode_per_place(monkeypatch):
    assert _progress.mode(0, lines=True) is None
    assert _progress.mode(1, lines=True) == "lines"  # not a terminal
    assert _progress.mode(1) is None  # encoding bars stay out of logs
    tty = types.SimpleNamespace(isatty=lambda: True)
    assert _progress.mode(1, stream=tty) == "bar"
    monkeypatch.setattr(_progress, "in_notebook", lambda: True)
    monkeypatch.setattr(_progress, "notebook_widgets", lambda: False)
    assert _progress.mode(1, lines=True) == "lines"  # no "IProgress not found" fallback
    assert isinstance(progress(range(2), lines=True), LineProgress)
    monkeypatch.setattr(_progress, "notebook_widgets", lambda: True)
    made = []
    fake = types.ModuleType("tqdm.notebook")
    fake.tqdm = lambda iterable, **kw: made.append(kw) or iterable
    monkeypatch.setitem(sys.modules, "tqdm.notebook", fake)
    with named("xray"):
        assert list(progress(range(2), desc="training", verbose=True)) == [0, 1]
    assert made == [{"total": None, "desc": "xray: training", "unit": "it", "leave": False}]
    assert label(None) is None


def test_a_test_process_is_not_a_notebook():
    assert _progress.in_notebook() is False


class _FakeTransformersLogging(types.ModuleType):
    def __init__(self, on):
        super().__init__("transformers.utils.logging")
        self.on = on

    def is_progress_bar_enabled(self):
        return self.on

    def enable_progress_bar(self):
        self.on = True

    def disable_progress_bar(self):
        self.on = False


def test_library_bars_are_quiet_only_inside(monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")

    monkeypatch.setattr(hub_tqdm, "progress_bar_states", {"_global": True, "hub.x": False})
    fake = _FakeTransformersLogging(on=True)
    monkeypatch.setitem(sys.modules, "transformers.utils.logging", fake)
    with quiet_library_bars():
        assert are_progress_bars_disabled() and not fake.on
    assert hub_tqdm.progress_bar_states == {"_global": True, "hub.x": False}
    assert fake.on  # the user's setting is back
    with quiet_library_bars():
        with quiet_library_bars():  # e.g. an encoder's own load inside the estimator's block
            pass
        assert are_progress_bars_disabled() and not fake.on  # still quiet in the outer block
    assert fake.on and hub_tqdm.progress_bar_states == {"_global": True, "hub.x": False}
    fake.on = False  # a user who turned them off keeps them off
    with quiet_library_bars():
        pass
    assert not fake.on
    # transformers imported inside the block gets the setting its import would have given
    monkeypatch.delitem(sys.modules, "transformers.utils.logging")
    with quiet_library_bars():
        late = _FakeTransformersLogging(on=not are_progress_bars_disabled())
        monkeypatch.setitem(sys.modules, "transformers.utils.logging", late)
    assert late.on and hub_tqdm.progress_bar_states == {"_global": True, "hub.x": False}
