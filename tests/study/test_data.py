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


def _grouped_manifest(tmp_path, positive_patients: int) -> dict:
    """12 patients of 4 rows; class 1 is every row of the first ``positive_patients``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(12), 4)
    label = (pid < positive_patients).astype(int)
    frame = pd.DataFrame({"a": rng.normal(size=48) + label, "b": rng.normal(size=48),
                          "pid": [f"p{k}" for k in pid], "label": label})  # fmt: skip
    frame.to_csv(tmp_path / "d.csv", index=False)
    return {
        "name": "few", "task": "classification",
        "data": {"source": "load_manifest", "params": {"csv": str(tmp_path / "d.csv")},
                 "target": "label", "groups": "pid"},
        "modalities": [{"name": "x", "encoder": "TabularEncoder", "columns": ["a"]},
                       {"name": "z", "encoder": "TabularEncoder", "columns": ["b"]}],
        "fusion": ["early"], "evaluation": {"cv": 3, "primary_metric": "accuracy"},
    }  # fmt: skip


def test_a_class_in_too_few_groups_for_the_folds_is_a_config_error(tmp_path):
    # Class 1 is in two patients: whichever fold tests one of them leaves the other alone
    # in training, where the models' grouped inner CV cannot fit the class. validate (which
    # calls prepare_study) names the fold, the class and the group count; run never starts.
    from toolkit.study.data import prepare_study

    with pytest.raises(
        ConfigError,
        match=r"^evaluation.cv: fold \d's training rows have all 4 rows of class 1 in one group "
        r"\('p[01]'\): the class occurs in only 2 groups, too few for grouped folds .*Add groups "
        r"\(patients, speakers\) with that class, or remove data.groups",
    ):
        prepare_study(_grouped_manifest(tmp_path, 2))
    assert len(prepare_study(_grouped_manifest(tmp_path, 4)).splits) == 3
