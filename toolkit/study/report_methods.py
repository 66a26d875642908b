"""The report's Methods paragraph, built from the config and the summary, so what it says
is what the run did: task, cross-validation kind and grouping, strategies and baselines,
metrics and the cluster bootstrap, the model rule, robustness, explanation (its removal
method, interactions, contribution intervals, drill-down) and conformal calibration."""

from __future__ import annotations

import html

from toolkit.study.config import StudyConfig
from toolkit.study.metrics import METRICS
from toolkit.study.orchestration import MAX_BACKGROUND


def _task_phrase(config: StudyConfig, summary: dict) -> str:
    if config.task == "regression":
        return "regression"
    metrics = next(iter(summary["strategies"].values()), {})
    binary = any(METRICS[m].binary_only for m in metrics if m in METRICS)
    return "binary classification" if binary else "multi-class classification"


def _cv_phrase(config: StudyConfig, grouped_by: str | None) -> str:
    k, seed = config.evaluation.cv, config.seed
    classification = config.task == "classification"
    if grouped_by is None:
        kind = "stratified K-fold" if classification else "K-fold (unstratified)"
        how = f"shuffled with seed {seed}; not grouped"
    else:
        kind = "stratified group K-fold" if classification else "group K-fold (unstratified)"
        shuffle = f"shuffled with seed {seed}" if classification else "not shuffled"
        how = (
            f"{shuffle}; grouped by {html.escape(grouped_by)}, so no group is in both the "
            "training and the test rows of a fold"
        )
    return (
        f"Evaluation: {k}-fold cross-validation ({kind}, {how}); encoders were fitted on the "
        "training rows of each fold only, and every prediction reported is out-of-fold."
    )


def _models_phrase(config: StudyConfig, summary: dict) -> str:
    strategies = ", ".join(html.escape(s) for s in summary["strategies"])
    if not config.evaluation.baselines:
        return (
            f"Strategies: {strategies} fusion; no single-modality baselines were fitted "
            "(evaluation.baselines: false)."
        )
    return (
        f"Strategies: {strategies} fusion, compared with one late-fusion model per single "
        "modality (fitted on the training rows that have that modality; test rows without it "
        "get the training prior)."
    )


def _bootstrap_phrase(summary: dict, n_boot: int) -> str:
    unit = (summary.get("bootstrap") or {}).get("unit", "row")
    if unit == "group":
        how = ("of groups: each resample draws as many groups as there are, with replacement, "
               "and takes all rows of each drawn group (cluster bootstrap)")  # fmt: skip
    else:
        how = "of rows"
    return (
        f"with percentile bootstrap 95% intervals ({n_boot} resamples {how}; the same "
        "resamples for every model and comparison)"
    )


def _metrics_phrase(config: StudyConfig, summary: dict) -> str:
    ev, primary = config.evaluation, summary["primary_metric"]
    metrics = list(next(iter(summary["strategies"].values())))
    n_boot = ev.bootstrap
    text = f"Metrics: {', '.join(metrics)}"
    if n_boot > 0:
        text += ", " + _bootstrap_phrase(summary, n_boot)
    else:
        text += ", without intervals (evaluation.bootstrap: 0)"
    if "sensitivity" in metrics:
        text += f"; sensitivity and specificity at threshold {ev.threshold}"
    direction = "lowest" if METRICS[primary].sign < 0 else "highest"
    text += f". The best strategy is the one with the {direction} {primary}"
    against = summary.get("best_single_modality")
    if against:
        test = (
            f"by a paired bootstrap of the difference in {primary} (two-sided p-value: twice "
            "the smaller share of resamples on one side of 0, ties counted half; shown as "
            f"'&lt; 1/B' when no resample crossed 0)"
            if n_boot > 0
            else f"by the difference in {primary} (no bootstrap, so no interval or p-value)"
        )
        text += (
            f"; each strategy is compared with the best single modality "
            f"({html.escape(str(against))}) {test}"
        )
    return text + ". " + _rule_phrase(config, summary)


def _rule_phrase(config: StudyConfig, summary: dict) -> str:
    rule = config.output.model_rule
    chosen = (summary.get("chosen") or {}).get("model")
    what = {
        "prefer_simpler": "the simpler model (the best single modality) unless a fusion "
        f"strategy's paired gain in out-of-fold {summary['primary_metric']} over it has a 95% "
        "bootstrap interval above 0 (then the best such strategy)",
        "best_mean_primary": "the model (fusion strategy or single modality) with the best "
        f"out-of-fold {summary['primary_metric']}",
        "auto": "fusion='auto', choosing by inner cross-validation on the training rows",
    }.get(rule, f"the strategy named by the rule ({html.escape(rule.split(':', 1)[-1])})")
    return (
        f"Model rule (output.model_rule: {html.escape(rule)}): the reported and saved model is "
        f"{what}; here {html.escape(str(chosen or 'auto'))}."
    )


def _conformal_phrase(config: StudyConfig, grouped: bool) -> str:
    conformal = config.evaluation.conformal
    if not conformal.enabled:
        return ""
    kind = "prediction sets" if config.task == "classification" else "prediction intervals"
    return (
        f"Conformal: split-conformal {kind} at {conformal.confidence:.0%} confidence (crepes), "
        f"each strategy refitted on {1 - conformal.calibration:.0%} of each fold's training "
        f"rows and calibrated on the other {conformal.calibration:.0%}"
        + (" (whole groups on one side)" if grouped else "")
        + ", Mondrian by modality-availability pattern; coverage is reported per pattern."
    )


def _robustness_phrase(config: StudyConfig) -> str:
    if not config.evaluation.robustness:
        return "Missing-modality robustness was not evaluated (evaluation.robustness: false)."
    return (
        "Robustness: each metric recomputed with each modality removed from the test rows "
        "(marked missing; a row left with no modality gets the training prior)."
    )


def _explanation_phrase(config: StudyConfig, summary: dict) -> str:
    explanation = config.explanation
    if not explanation.enabled:
        return "Modality contributions were not computed (explanation.enabled: false)."
    import inspect

    from toolkit.explain import ModalityExplainer

    n_modalities = len(summary.get("contribution_ranking") or [])
    exact_up_to = inspect.signature(ModalityExplainer).parameters["max_exact_modalities"]
    kind = (
        "exact Shapley values"
        if n_modalities <= exact_up_to.default
        else "Shapley values estimated from sampled permutations"
    )
    if explanation.removal == "background":
        how = (
            f"a removed modality takes its embeddings from up to {MAX_BACKGROUND} training "
            "rows of the fold (background) and a coalition's value is the model's output "
            "averaged over them; the empty coalition's value is the mean output on the "
            "background"
        )
    else:
        how = (
            "a coalition's value is the model's output with the other modalities marked "
            "missing and the empty coalition's value is the training prior"
        )
    text = (
        f"Explanation: {kind} over modalities (removal: {explanation.removal}), where "
        f"{how}; computed for every test row of every fold."
    )
    return " ".join(
        x
        for x in (
            text,
            _interactions_phrase(config, summary),
            _intervals_phrase(config, summary),
            _drilldown_phrase(config, summary),
        )
        if x
    )


def _interactions_phrase(config: StudyConfig, summary: dict) -> str:
    if not summary.get("interactions"):
        if config.output.interactions:
            return ""  # more modalities than the exact limit: sampled values, no interactions
        return "Interactions were not computed (output.interactions: false)."
    return (
        "Interactions: the pairwise Shapley interaction index of every pair of modalities "
        "(Grabisch and Roubens), from the same 2^M coalition values as the Shapley values (no "
        "further model evaluation); each modality's Shapley value is its main effect plus "
        "half of each of its pair interactions. The table reports mean |main effect| and mean "
        "|interaction index| over the out-of-fold rows."
    )


def _intervals_phrase(config: StudyConfig, summary: dict) -> str:
    records = summary.get("contribution_intervals") or []
    if not records:
        if not config.output.intervals:
            return "Contribution intervals were not computed (output.intervals: false)."
        return ""
    overs = {r["over"] for r in records}
    parts = []
    if overs & {"rows", "groups"}:
        unit = (
            "groups (cluster bootstrap: all rows of each drawn group)"
            if "groups" in overs
            else "rows"
        )
        n_boot = config.evaluation.bootstrap
        parts.append(
            f"over rows, a percentile bootstrap of the pooled out-of-fold explanations ({n_boot} "
            f"resamples of {unit}, scipy.stats.bootstrap): how much the summary depends on which "
            "rows were explained"
        )
    if "refits" in overs:
        k = next(r["n"] for r in records if r["over"] == "refits")
        parts.append(
            f"over refits, a Student t interval of the mean across the {k} folds' models (each "
            "explaining its own test rows): how stable the attribution is when the model is "
            "refitted; folds share training rows, so read it as stability, not a sampling "
            "guarantee"
        )
    return (
        "Contribution intervals (95%) for each modality's mean |Shapley value| and mean "
        "per-row share (MM-SHAP: each row's |value| over its total, averaged over rows): "
        + "; ".join(parts)
        + "."
    )


def _drilldown_phrase(config: StudyConfig, summary: dict) -> str:
    drill = summary.get("drilldown") or {}
    if not drill:
        if config.output.drilldown_rows < 1:
            return "Drill-down was not computed (output.drilldown_rows: 0)."
        return ""
    return (
        f"Drill-down: on {len(drill['rows'])} test rows of fold {drill['fold']} (the most "
        "confident correct (two classes: true positives first) and incorrect ones, alternately; "
        "regression: the best and worst "
        f"predicted), the {html.escape(drill['model'])} model refitted as in that fold; each "
        "splittable modality's item is cut into parts (words, image grid cells, time segments, "
        "scan blocks) whose Owen values add up to the modality's Shapley value with missing-"
        f"modality removal. {_masking_text(drill)} and the item is re-encoded. "
        f"Cost bound: exact for items of at most {drill['max_parts']} parts (2^d - 2 encoder "
        f"calls per row), else {drill['n_permutations']} sampled orders of the parts "
        f"(antithetic pairs); {drill['encoder_calls']:,} encoder calls in all."
    )


def _masking_text(drill: dict) -> str:
    """How a masked part is removed, per drilled modality (from the maskers used)."""
    masking = drill.get("masking") or {}
    if not masking:
        return "A masked part is removed from the item"
    phrases = [f"{html.escape(m)}: {html.escape(p)}" for m, p in masking.items()]
    return "A masked part is replaced (" + "; ".join(phrases) + ")"


def _source_phrase(source: str) -> str:
    """What the data card says of the source: title, synthetic or not, licence, citation."""
    from toolkit.datasets import dataset_info

    info = dataset_info(source)
    kind = "SYNTHETIC data generated with known ground truth" if info.synthetic else "real data"
    return (
        f"Source: {html.escape(info.title)} ({kind}); licence: {html.escape(info.licence)}; "
        f"cite: {html.escape(info.citation)}."
    )


def methods_text(config: StudyConfig, summary: dict, *, grouped_by: str | None = None) -> str:
    """The report's Methods paragraph (HTML), true for ``config`` and its ``summary``.

    ``grouped_by`` names what rows were grouped by (a column or the data source's groups),
    or None when the folds were not grouped.
    """
    source = html.escape(config.data.source)
    return " ".join(
        [
            f"Data: <code>{source}</code> ({summary['n_samples']} rows); task: "
            f"{_task_phrase(config, summary)}.",
            _source_phrase(config.data.source),
            _cv_phrase(config, grouped_by),
            _models_phrase(config, summary),
            _metrics_phrase(config, summary),
            _robustness_phrase(config),
            _explanation_phrase(config, summary),
            _conformal_phrase(config, grouped_by is not None),
        ]
    ).strip()
