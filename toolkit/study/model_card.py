"""A model card (Markdown) written beside a study's saved model: ``<run>/model_card.md``
next to ``<run>/model/``.

It is written next to the model folder, not inside it, so the checked model format
(``toolkit.persistence``: manifest, sizes, SHA-256, allow-listed files) is unchanged and
``toolkit.load`` never reads it. Its numbers are the study's out-of-fold estimates.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from toolkit.study.disclosure import card_facts, headline_text, limitations

MODEL_CARD = "model_card.md"


def _interval(entry: dict) -> str:
    if not np.isfinite(entry["low"]):
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} (95% CI {entry['low']:.3f} to {entry['high']:.3f})"


def _model_lines(config, summary: dict, model) -> list[str]:
    chosen = summary["chosen"]
    lines = [
        f"- Chosen by rule `{chosen['rule']}`: **{chosen['model'] or 'auto'}** ({chosen['kind']})",
        f"- Task: {config.task}; seed {config.seed}; written {_dt.date.today().isoformat()}",
    ]
    if model is not None:
        names = getattr(model, "modality_names_", None) or [m[0] for m in model.modalities]
        fusion = getattr(model, "fusion_", None)
        lines.append(f"- Modalities: {', '.join(names)}; fusion: {type(fusion).__name__}")
        chosen_by = getattr(fusion, "chosen_", None)
        if chosen_by is not None:
            lines.append(f"- fusion='auto' chose: {chosen_by}")
    lines.append(
        "- Load: `toolkit.load('<run folder>/model')` (the folder beside this card); "
        "skops + safetensors, no pickle"
    )
    return lines


def _performance_lines(summary: dict) -> list[str]:
    chosen, metric = summary["chosen"]["model"], summary["primary_metric"]
    entries = {**summary["strategies"], **summary["baselines"]}
    lines = []
    if chosen in entries:
        for name, entry in entries[chosen].items():
            lines.append(f"- {name}: {_interval(entry)}")
    else:
        lines.append(
            f"- (fusion='auto' was not evaluated out-of-fold; see the report for {metric})"
        )
    conformal = summary.get("conformal") or {}
    per_pattern = conformal.get("strategies", {}).get(chosen)
    if per_pattern:
        target = conformal["confidence"]
        parts = [f"{p} {v['coverage']:.2f} (n={v['n']})" for p, v in per_pattern.items()]
        lines.append(
            f"- Conformal coverage at {target:.0%}, per availability pattern: {', '.join(parts)}"
        )
    return lines


def model_card(config, summary: dict, model=None) -> str:
    """The model card of a study's saved model, as Markdown (``config``: its
    :class:`~toolkit.study.config.StudyConfig`)."""
    facts = card_facts(config.data.source)
    n_groups = None
    folds = summary.get("folds_detail") or []
    if folds and "groups" in folds[0]:
        n_groups = sum(f["groups"] for f in folds)
    sections = [
        f"# Model card: {config.name}",
        "## Model",
        *_model_lines(config, summary, model),
        "## Headline",
        headline_text(summary),
        f"## Out-of-fold performance ({summary['folds']}-fold cross-validation, "
        f"{summary['n_samples']} rows)",
        *_performance_lines(summary),
        "## Data",
        *[f"- {k.replace('_', ' ')}: {v}" for k, v in facts.items()],
        "## Intended use",
        f"- {facts.get('intended_uses', 'not stated by the data card')}",
        f"- Out of scope: {facts.get('out_of_scope_uses', 'not stated by the data card')}",
        "## Limitations",
        *[f"- {text}" for text in limitations(config, summary, n_groups=n_groups)],
    ]
    return "\n".join(sections) + "\n"


def write_model_card(run, config, summary: dict, model=None) -> Path:
    """Write :func:`model_card` to ``<run>/model_card.md`` (beside ``<run>/model/``)."""
    path = Path(run) / MODEL_CARD
    path.write_text(model_card(config, summary, model), encoding="utf-8")
    return path
