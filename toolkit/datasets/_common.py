"""Helpers shared by the dataset generators and loaders."""

from __future__ import annotations

from pathlib import Path

DATA_CARDS = Path(__file__).resolve().parents[2] / "data_cards"


def data_card(name: str) -> Path:
    """Path of the data card ``data_cards/{name}.md`` (shipped with the source tree)."""
    return DATA_CARDS / f"{name}.md"
