"""Every registered dataset has a complete data card (top-level ``data_cards/``), shipped
inside the package."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

import toolkit.datasets as datasets
from toolkit.datasets import DATASETS, dataset_info
from toolkit.datasets._common import read_card

ROOT = Path(__file__).resolve().parents[2]

FIELDS = {
    "name", "licence", "citation", "modalities", "size", "label_definition", "splits",
    "provenance", "preprocessing", "known_limitations", "biases", "intended_uses", "out_of_scope_uses",
}  # fmt: skip

PUBLIC = [n for n in datasets.__all__ if n.startswith(("make_", "load_"))]


def test_every_public_dataset_function_is_registered_and_nothing_else():
    assert list(DATASETS) == [n for n in DATASETS if n in PUBLIC]
    assert sorted(DATASETS) == sorted(PUBLIC)
    for name, info in DATASETS.items():
        assert info.name == name and info.function is getattr(datasets, name)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_dataset_has_a_complete_card_found_through_importlib_resources(name):
    info = dataset_info(name)
    card = files("toolkit").joinpath("data_cards", f"{info.card_name}.md")
    assert card.is_file(), f"{name} points to missing card {card}"
    assert info.card == card
    meta = read_card(info.card_name)
    assert FIELDS <= set(meta), f"{card.name} lacks {sorted(FIELDS - set(meta))}"
    assert all(meta[f] not in (None, "") for f in FIELDS)
    assert meta["name"] == info.card_name
    # The licence and citation the registry gives are the card's, whitespace folded.
    assert info.licence == " ".join(str(meta["licence"]).split())
    assert info.citation == " ".join(str(meta["citation"]).split())
    # kind and the card's synthetic flag agree; synthetic cards say so in their body.
    assert info.synthetic is (info.kind == "synthetic")
    if info.synthetic:
        assert "synthetic" in card.read_text(encoding="utf-8").lower().split("---")[2]


@pytest.mark.parametrize("name", PUBLIC)
def test_each_function_points_its_bunch_to_the_registered_card(name):
    source = inspect.getsource(getattr(datasets, name))
    assert re.findall(r'data_card\("([a-z_]+)"\)', source) == [dataset_info(name).card_name]


def test_generated_bunches_point_to_their_cards():
    a = datasets.make_sentiment_clips(4, random_state=0)
    b = datasets.make_clinical_cohort(4, scan_size=8, random_state=0)
    assert a.data_card == dataset_info("make_sentiment_clips").card and a.data_card.is_file()
    assert b.data_card == dataset_info("make_clinical_cohort").card and b.data_card.is_file()
    assert a.data_card.name == "sentiment_clips.md" and b.data_card.name == "clinical_cohort.md"


def test_card_without_front_matter_is_refused(monkeypatch, tmp_path):
    import toolkit.datasets._common as common

    (tmp_path / "bare.md").write_text("# no front matter\n", encoding="utf-8")
    monkeypatch.setattr(common, "DATA_CARDS", tmp_path)
    read_card.cache_clear()
    try:
        with pytest.raises(ValueError, match="'.*bare.md' has no YAML front matter"):
            read_card("bare")
        with pytest.raises(FileNotFoundError, match="data card 'absent.md' is not in"):
            read_card("absent")
    finally:
        read_card.cache_clear()


def test_the_cards_live_at_the_top_level_and_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    assert "data_cards/*.md" in setuptools["package-data"]["toolkit"]
    assert "data_cards/README.md" in setuptools["exclude-package-data"]["toolkit"]
    link = ROOT / "toolkit" / "data_cards"
    assert link.is_symlink() and link.readlink() == Path("..") / "data_cards"
    cards = sorted(p.name for p in (ROOT / "data_cards").glob("*.md") if p.name != "README.md")
    assert cards == sorted(f"{info.card_name}.md" for info in DATASETS.values())


@pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None,
    reason="building the wheel offline (--no-build-isolation) needs setuptools installed",
)
def test_a_built_wheel_contains_every_card(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "data_cards", src / "data_cards")
    shutil.copytree(
        ROOT / "toolkit", src / "toolkit", symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for info in DATASETS.values():
        assert f"toolkit/data_cards/{info.card_name}.md" in names
    assert "toolkit/data_cards/README.md" not in names
