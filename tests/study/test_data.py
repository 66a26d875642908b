"""A study's data (toolkit/study/data.py): where real data are read from."""

from __future__ import annotations

import pytest

from toolkit.study.config import ConfigError, load_config
from toolkit.study.data import load_study_data

CONFIG = """
name: uci
data: {source: load_uci_sentences, params: PARAMS, target: label}
modalities:
  - {name: text, encoder: TextEncoder, columns: sentence}
"""


@pytest.fixture
def config_with(tmp_path_factory):
    folder = tmp_path_factory.mktemp("config")

    def make(**params):
        path = folder / "uci.yaml"
        path.write_text(CONFIG.replace("PARAMS", str(params).replace("'", "")))
        return load_config(path)

    return make


def test_without_data_dir_or_environment_the_key_is_named(tmp_path, monkeypatch, config_with):
    # A folder laid out like the project's shared data next to the working directory is
    # not looked at: the data folder is data.params.data_dir or $TOOLKIT_DATA_DIR only.
    (tmp_path / "shared" / "data" / "uci_sentences").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("TOOLKIT_DATA_DIR", raising=False)
    with pytest.raises(
        ConfigError,
        match=r"^data.params.data_dir: load_uci_sentences needs a data folder; set it \(--set "
        r"data.params.data_dir=<folder>\) or TOOLKIT_DATA_DIR. Where its data comes from: .*UCI"
        r".* \(`mmtk datasets load_uci_sentences` gives the licence and citation\)$",
    ):
        load_study_data(config_with())


def test_environment_variable_names_the_data_folder(tmp_path, monkeypatch, config_with):
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=f"dataset folder '{tmp_path}/uci_sentences' does not"):
        load_study_data(config_with())


def test_data_dir_in_the_config_wins_over_the_environment(tmp_path, monkeypatch, config_with):
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match=f"dataset folder '{tmp_path}/mine/uci_sentences'"):
        load_study_data(config_with(data_dir=str(tmp_path / "mine")))
