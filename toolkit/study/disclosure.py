"""What a study must disclose, built from its config, its data card and its numbers: the
data card's facts, the limitations, the headline sentence and a TRIPOD+AI checklist.
Plain text (the report escapes it; the model card writes it as Markdown)."""

from __future__ import annotations

import numpy as np

from toolkit.study.metrics import METRICS

#: Data card fields shown in the report, in order (front matter keys).
CARD_FIELDS = (
    "title", "synthetic", "licence", "citation", "provenance", "modalities", "size",
    "label_definition", "known_limitations", "biases", "intended_uses", "out_of_scope_uses",
)  # fmt: skip
#: Below these the report calls a study small.
SMALL_ROWS, SMALL_GROUPS, SMALL_CLASS = 500, 200, 100
#: A modality with at least this share of the mean |Shapley value| is checked for usefulness
#: (a reviewer met two pure-noise modalities at 7.5% each, with tight intervals, unflagged).
LARGE_SHARE = 0.05


def card_facts(source: str) -> dict[str, str]:
    """The data card's front matter fields of :data:`CARD_FIELDS` as one-line strings."""
    from toolkit.datasets import dataset_info

    meta = dataset_info(source).card_meta
    facts = {}
    for key in CARD_FIELDS:
        if key not in meta:
            continue
        value = meta[key]
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        facts[key] = " ".join(str(value).split())
    return facts


def _fmt(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "n/a"


def headline_text(summary: dict) -> str:
    """One or two sentences: the chosen model, the best single modality and whether
    fusion helps (the paired interval of the difference)."""
    h, metric = summary["headline"], summary["primary_metric"]
    chosen = summary["chosen"]
    rule = chosen["rule"]
    if chosen["model"] is None:
        first = f"Saved model: fusion='auto' (rule {rule}), chosen by inner cross-validation when refitted."
    else:
        first = f"Chosen model (rule {rule}): {chosen['model']} ({chosen['kind']})."
    if h.get("against") is None:
        return (
            first
            + " No single-modality baselines were fitted, so fusion was not tested against them."
        )
    diff = f"{h['fusion']} vs {h['against']}: {metric} difference {h['difference']:+.3f}" + (
        f" [95% CI {h['low']:+.3f}, {h['high']:+.3f}]"
        if np.isfinite(h["low"])
        else " (no interval)"
    )
    better = METRICS[metric].direction
    verdict = {
        "helps": f"Fusion helps: the interval lies on the {better}-is-better side of 0.",
        "worse": f"Fusion does not help: it is worse than the best single modality ({h['against']}).",
        "does not help": f"Fusion does not help here: the interval includes 0, so {h['fusion']} is not shown to beat {h['against']}.",
        "no interval": "Fusion scored better, but without a bootstrap there is no interval to show it.",
    }[h["verdict"]]
    if chosen["kind"] == "single modality" and rule == "prefer_simpler":
        verdict = f"{verdict} The simpler model ({chosen['model']}) is the one saved."
    elif chosen["kind"] == "single modality":
        verdict = (
            f"The best single modality scored at least as well as every fusion strategy. {verdict}"
        )
    elif h["verdict"] != "helps" and chosen["kind"] == "fusion":
        verdict += (
            f" The saved model is nevertheless {chosen['model']} (rule {rule}); the rule "
            f"prefer_simpler would save {h['against']}."
        )
    quick = f"{summary['quick'].upper()}. " if summary.get("quick") else ""
    return f"{quick}{first} {diff}. {verdict}"


def selection_note(summary: dict) -> str | None:
    """How the chosen model was selected and what that does to its reported score (the
    best of k out-of-fold estimates, not corrected by nested cross-validation)."""
    chosen, metric = summary.get("chosen") or {}, summary["primary_metric"]
    k, rule, model = chosen.get("candidates", 0), chosen.get("rule"), chosen.get("model")
    if rule == "auto":
        return (
            "Model selection: fusion='auto' chooses its strategy by inner cross-validation on "
            "each training set (nested), so its out-of-fold score was not selected on the rows "
            "it is reported on."
        )
    if k <= 1 or model is None:
        return None
    n_single = len(summary.get("baselines") or {})
    pool = (
        f"the best of {n_single} single-modality out-of-fold estimates"
        if rule == "prefer_simpler" and chosen.get("kind") == "single modality"
        else f"the best of {k} out-of-fold estimates"
    )
    return (
        f"Model selection: {model} was chosen (rule {rule}: {chosen.get('reason', '')}) among "
        f"{k} candidate models scored on the same out-of-fold predictions it is reported "
        f"with; the reported {metric} is {pool}. This is disclosed, not corrected: no nested "
        "cross-validation was run, so the score is optimistic; confirm it on new data."
    )


def _share_warnings(summary: dict) -> list[str]:
    """A modality with a large Shapley share whose single-modality model is weak."""
    shares = summary["mean_abs_contribution"].get(summary.get("explained_model"), {})
    total = sum(shares.values()) or 1.0
    metric, out = summary["primary_metric"], []
    for name, value in shares.items():
        single = summary["baselines"].get(f"{name} only", {}).get(metric)
        if value / total < LARGE_SHARE or single is None:
            continue
        if _below_chance(summary, metric, single):
            out.append(
                f"{name}-only {metric} is {_fmt(single['value'])} [{_fmt(single['low'])}, "
                f"{_fmt(single['high'])}], below chance with its interval: on its own the "
                f"{name} model predicts the held-out rows the wrong way round (too few rows "
                "or groups per fold, or a signal that does not transfer), yet it takes "
                f"{value / total:.0%} of the Shapley share."
            )
        elif _not_above_chance(summary, metric, single):
            out.append(
                f"{name} takes {value / total:.0%} of the Shapley share while {name}-only "
                f"{metric} is {_fmt(single['value'])} [{_fmt(single['low'])}, "
                f"{_fmt(single['high'])}]: a share measures how much the output moves with a "
                "modality, not whether that helps predict."
            )
    return out


def _chance(summary: dict, metric: str) -> float | None:
    """The metric's chance level: the study's own (``summary["chance_levels"]``), else the
    registry's constant level; None where there is none or the metric does not rank."""
    spec = METRICS[metric]
    chance = (summary.get("chance_levels") or {}).get(metric)
    if chance is None and not callable(spec.chance):
        chance = spec.chance
    return chance if spec.ranks else None


def _below_chance(summary: dict, metric: str, entry: dict) -> bool:
    """Whether ``entry``'s whole 95% interval lies on the wrong side of the chance level."""
    chance, sign = _chance(summary, metric), METRICS[metric].sign
    if chance is None:
        return False
    return bool(sign * ((entry["high"] if sign > 0 else entry["low"]) - chance) < 0)


def _not_above_chance(summary: dict, metric: str, entry: dict) -> bool:
    """Whether ``entry``'s 95% interval reaches the metric's chance level."""
    chance, sign = _chance(summary, metric), METRICS[metric].sign
    if chance is None:
        return False
    return bool(sign * ((entry["low"] if sign > 0 else entry["high"]) - chance) <= 0)


def limitations(config, summary: dict, *, n_groups: int | None = None) -> list[str]:
    """The Limitations section: built from the config (a
    :class:`~toolkit.study.config.StudyConfig`), the data card and the numbers."""
    from toolkit.datasets import dataset_info

    info = dataset_info(config.data.source)
    out = []
    if info.synthetic:
        out.append(
            "The data are SYNTHETIC (generated with known ground truth by "
            f"{config.data.source}); nothing here is evidence about real patients or people."
        )
    out.extend(_size_limits(summary, n_groups))
    out.append(
        "Validation is internal only (cross-validation on one data source, "
        f"'{info.title}'): no external site, scanner, period or population was tested."
    )
    if n_groups is None:
        out.append(
            "Rows were treated as independent (no data.groups): if several rows come from one "
            "patient or speaker, the intervals are too narrow and the scores optimistic."
        )
    if config.evaluation.robustness:
        out.append(
            "Robustness removes a modality from the test rows only (marked missing; the model's "
            "own missing-data path): it is not the performance of a model trained without it."
        )
    if config.explanation.enabled:
        how = ("marked missing (removal: missing)" if config.explanation.removal == "missing"
               else "replaced by background rows (removal: background)")  # fmt: skip
        out.append(
            f"Shapley values measure how the model's output changes when a modality is {how}. "
            "A modality's share measures the size of its effect on the output, not its "
            "usefulness or any causal role; compare with its single-modality row."
        )
        out.extend(_share_warnings(summary))
    missing = summary.get("missingness", {}).get("missing_share", {})
    heavy = [f"{m} {v:.0%}" for m, v in missing.items() if v >= 0.3]
    if heavy:
        out.append(
            f"Modalities missing on many rows ({', '.join(heavy)}): their estimates rest on fewer rows."
        )
    if summary["headline"].get("verdict") in ("does not help", "worse"):
        out.append("Fusion was not shown to beat the best single modality (see the headline).")
    selection = selection_note(summary)
    if selection:
        out.append(selection)
    if summary.get("quick"):
        out.append(
            f"This is a {summary['quick']}: rows, folds, resamples and encoders were cut to "
            "test the config (quick: true, mmtk run --quick); rerun without --quick."
        )
    card = info.card_meta.get("known_limitations")
    if card:
        out.append("From the data card: " + " ".join(str(card).split()))
    return out


def _size_limits(summary: dict, n_groups: int | None) -> list[str]:
    n = summary["n_samples"]
    folds = summary.get("folds_detail") or []
    smallest = None
    if folds and "class_counts" in folds[0]:
        totals: dict[str, int] = {}
        for fold in folds:
            for c, k in fold["class_counts"].items():
                totals[c] = totals.get(c, 0) + k
        smallest = min(totals.values())
    small = (n < SMALL_ROWS or (n_groups is not None and n_groups < SMALL_GROUPS)
             or (smallest is not None and smallest < SMALL_CLASS))  # fmt: skip
    if not small:
        return []
    parts = [f"{n} rows"]
    if n_groups is not None:
        parts.append(f"{n_groups} groups")
    if smallest is not None:
        parts.append(f"smallest class {smallest} rows")
    return [f"Small sample ({', '.join(parts)}): intervals are wide and the ranking of "
            "models may not hold on new data."]  # fmt: skip


def tripod_checklist(config, summary: dict) -> list[tuple[str, str, str]]:
    """(TRIPOD+AI topic, status, where) for the topics a study run can speak to.

    Topics follow the TRIPOD+AI statement (Collins et al., BMJ 2024;385:e078378) by name;
    what the run cannot know (ethics, funding, registration, participant flow, setting,
    patient involvement) is marked for the author to supply.
    """
    ev, classification = config.evaluation, config.task == "classification"
    author = "author to supply"
    grouped = summary.get("grouped")
    return [
        ("Title and abstract: identify a prediction model study", author, "—"),
        ("Data sources", "covered", "Data (data card: source, provenance, licence, citation)"),
        ("Participants and setting", "partly", "Data (data card); eligibility and dates: " + author),
        ("Data preparation", "covered", "Methods (encoders fitted on training rows of each fold)"),
        ("Outcome definition", "partly", "Data (label definition from the data card)"),
        ("Predictors (modalities)", "covered", "Data (modalities), Missingness"),
        ("Sample size", "partly", "Data, Prevalence per fold; no sample-size calculation"),
        ("Missing data", "covered", "Missingness per modality and availability pattern"),
        ("Analytical methods: model, internal validation", "covered",
         "Methods (cross-validation" + (", grouped" if grouped else "") + ", bootstrap)"),
        ("Class imbalance", "covered" if classification else "not applicable",
         "Prevalence per fold" if classification else "regression task"),
        ("Fairness / subgroups", "not covered", "no subgroup analysis; " + author),
        ("Model output and uncertainty", "covered",
         "Calibration; Conformal coverage" if ev.conformal.enabled else "Calibration"),
        ("Training versus evaluation data", "covered", "Methods (out-of-fold predictions only)"),
        ("Ethics, funding, conflicts, protocol, registration", author, "—"),
        ("Data and code sharing", "partly", "run folder: config, environment, predictions.csv"),
        ("Patient and public involvement", author, "—"),
        ("Participant flow and characteristics", "partly", "Prevalence per fold; flow: " + author),
        ("Model specification", "covered", "Model card (model_card.md) and the saved model/"),
        ("Model performance with uncertainty", "covered", "Metrics, Headline, Comparison"),
        ("Model updating", "not applicable", "no updating was done"),
        ("Interpretation and limitations", "covered", "Headline, Limitations"),
        ("Usability / intended use", "partly", "Model card: intended use from the data card"),
    ]  # fmt: skip
