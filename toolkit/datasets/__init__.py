"""Datasets: ground-truth generators (synthetic, labelled as such) and loaders for real data."""

from __future__ import annotations

from toolkit.datasets.sentiment import make_sentiment_clips

__all__ = ["make_sentiment_clips"]
