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


def _vocabulary_sizes(encoder) -> list[int]:
    """Terms in each fitted vocabulary (``vocabulary_``) of ``encoder.vectorizer_``."""
    vectorizer = getattr(encoder, "vectorizer_", None)
    if vectorizer is None:
        return []
    parts = [vectorizer]
    if hasattr(vectorizer, "get_params"):
        parts += [v for v in vectorizer.get_params(deep=True).values() if hasattr(v, "fit")]
    return [len(p.vocabulary_) for p in parts if isinstance(getattr(p, "vocabulary_", None), dict)]


def text_vocabulary(model) -> list[dict]:
    """One entry (``modality``, ``encoder``, ``terms``) per fitted encoder of ``model`` that
    keeps words or n-grams of its training texts (a TF-IDF vocabulary, saved in
    ``model.skops``): the encoder's ``keeps_vocabulary_`` where it has one, else whether
    its vectorizer holds a ``vocabulary_``."""
    out = []
    for name, encoder in (getattr(model, "encoders_", None) or {}).items():
        sizes = _vocabulary_sizes(encoder)
        keeps = getattr(encoder, "keeps_vocabulary_", None)
        if keeps if keeps is not None else bool(sizes):
            backend = getattr(encoder, "backend", None)
            label = type(encoder).__name__ + (f"(backend={backend!r})" if backend else "")
            out.append({"modality": name, "encoder": label, "terms": int(sum(sizes))})
    return out


def vocabulary_note(entries: list[dict], include_text: bool) -> str:
    """What the saved model keeps of its training texts, for the model card and report."""
    from toolkit.encoders.backends import TEXT_BACKENDS

    if not entries:
        return "no encoder of the saved model keeps words of its training texts"
    kept = "; ".join(
        f"modality '{e['modality']}': {e['encoder']}, {e['terms']:,} words and n-grams"
        for e in entries
    )
    fix = "backend: hashing" if "hashing" in TEXT_BACKENDS else "a pretrained text backend"
    withheld = (
        "output.include_text: false keeps raw text out of the report only, not out of the model; "
        if not include_text
        else ""
    )
    return (
        f"the saved model keeps raw text vocabulary of its training texts in model.skops "
        f"({kept}); anyone with the model folder can read these terms. {withheld}to keep none, "
        f"use {fix}"
    )


def vocabulary_paragraph(config, summary: dict) -> str:
    """The report's HTML paragraph on the text vocabulary the saved model keeps (from
    ``summary["text_vocabulary"]``, set by :func:`write_model_card`); empty when no model
    was saved."""
    import html

    entries = summary.get("text_vocabulary")
    if entries is None:
        return ""
    note = vocabulary_note(entries, config.output.include_text)
    css = ' class="warn"' if entries else ""
    return f"<p{css}><b>Saved model:</b> {html.escape(note[0].upper() + note[1:])}.</p>"


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
            untested = getattr(fusion, "fallback_reason_", None)
            note = f" (untested, not compared: {untested})" if untested else ""
            lines.append(f"- fusion='auto' chose: {chosen_by}{note}")
        vocabulary = summary.setdefault("text_vocabulary", text_vocabulary(model))
        lines.append(
            "- Raw text vocabulary: " + vocabulary_note(vocabulary, config.output.include_text)
        )
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
    """Write :func:`model_card` to ``<run>/model_card.md`` (beside ``<run>/model/``).

    Records in ``summary["text_vocabulary"]`` which encoders of ``model`` keep raw text
    vocabulary (:func:`text_vocabulary`), which the report then states too."""
    path = Path(run) / MODEL_CARD
    path.write_text(model_card(config, summary, model), encoding="utf-8")
    return path
