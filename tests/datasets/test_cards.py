"""Every public make_* / load_* has a data card with complete front matter."""

from __future__ import annotations

import inspect
import re

import pytest
import yaml

import toolkit.datasets as datasets
from toolkit.datasets._common import DATA_CARDS

FIELDS = {
    "name", "licence", "citation", "modalities", "size", "label_definition", "splits",
    "provenance", "preprocessing", "known_limitations", "biases", "intended_uses", "out_of_scope_uses",
}  # fmt: skip

PUBLIC = [n for n in datasets.__all__ if n.startswith(("make_", "load_"))]


def _front_matter(path):
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, f"{path} has no YAML front matter"
    return yaml.safe_load(match.group(1)), text


def _card_name(func_name):
    source = inspect.getsource(getattr(datasets, func_name))
    found = re.findall(r'data_card\("([a-z_]+)"\)', source)
    assert found, f"{func_name} does not point its Bunch to a data card"
    return found[0]


@pytest.mark.parametrize("func_name", PUBLIC)
def test_every_dataset_function_has_a_complete_card(func_name):
    card = DATA_CARDS / f"{_card_name(func_name)}.md"
    assert card.exists(), f"{func_name} points to missing card {card}"
    meta, text = _front_matter(card)
    assert FIELDS <= set(meta), f"{card.name} lacks {sorted(FIELDS - set(meta))}"
    assert all(meta[f] not in (None, "") for f in FIELDS)
    if func_name.startswith("make_"):
        assert meta.get("synthetic") is True
        assert "synthetic" in text.lower().split("---")[2]


def test_generated_bunches_point_to_their_cards():
    a = datasets.make_sentiment_clips(4, random_state=0)
    b = datasets.make_clinical_cohort(4, scan_size=8, random_state=0)
    assert a.data_card.name == "sentiment_clips.md" and a.data_card.exists()
    assert b.data_card.name == "clinical_cohort.md" and b.data_card.exists()
