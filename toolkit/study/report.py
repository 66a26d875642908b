"""Figures (PNG) and a self-contained HTML report of a study run.

The report opens with the chosen model against the best single modality and says when
fusion does not help; its Methods paragraph is built from the config (task,
cross-validation kind, grouping, strategies, baselines, metrics and the cluster bootstrap,
the model rule, robustness, explanation and its removal method, conformal calibration), so
what it says is what the run did; data, limitations and the TRIPOD+AI checklist come from
the data card, the config and the numbers (:mod:`toolkit.study.disclosure`).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from toolkit.explain import contribution_magnitudes
from toolkit.study.config import DEFAULTS
from toolkit.study.disclosure import card_facts, headline_text, limitations, tripod_checklist
from toolkit.study.metrics import format_p
from toolkit.study.orchestration import MAX_BACKGROUND
from toolkit.study.summary import LOWER_IS_BETTER
from toolkit.study.transfer import transfer_section


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


# -- figures --------------------------------------------------------------------------------


def _roc(run: Path, results) -> Path:
    from sklearn import metrics as skm

    fig, ax = _plt().subplots(figsize=(5, 4.5))
    for label, pred in results.models.items():
        fpr, tpr, _ = skm.roc_curve(results.y, pred[:, 1])
        fusion = label in results.oof
        ax.plot(
            fpr,
            tpr,
            label=f"{label} (AUROC {skm.roc_auc_score(results.y, pred[:, 1]):.3f})",
            lw=2 if fusion else 1,
            ls="-" if fusion else "--",
        )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (out-of-fold)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, run / "roc.png")


def _calibration(run: Path, results) -> Path:
    from sklearn.calibration import calibration_curve

    fig, ax = _plt().subplots(figsize=(5, 4.5))
    for label, pred in results.oof.items():
        frac, mean = calibration_curve(results.y, pred[:, 1], n_bins=8, strategy="quantile")
        ax.plot(mean, frac, marker="o", label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title="Calibration (out-of-fold)",
    )
    ax.legend(fontsize=7)
    return _save(fig, run / "calibration.png")


def _confusion(run: Path, results, best: str) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _plt().subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        results.y,
        np.argmax(results.models[best], axis=1),
        display_labels=[str(c) for c in results.classes],
        ax=ax,
        colorbar=False,
    )
    ax.set_title(f"Confusion matrix ({best})")
    return _save(fig, run / "confusion_matrix.png")


def _scatter(run: Path, results, best: str) -> Path:
    fig, ax = _plt().subplots(figsize=(4.5, 4))
    ax.scatter(results.y, results.models[best], s=8, alpha=0.6)
    ax.set(xlabel="true", ylabel="predicted", title=f"Predictions ({best})")
    return _save(fig, run / "predictions.png")


def _contribution_plots(run: Path, results, best: str) -> dict[str, Path]:
    values = results.contributions.get(best)
    if values is None or np.isnan(values).all():
        return {}
    import shap

    plt = _plt()
    values = contribution_magnitudes(values) if values.ndim == 3 else values
    exp = shap.Explanation(
        values=values,
        base_values=np.zeros(len(values)),
        data=np.ones_like(values),
        feature_names=results.names,
    )
    plt.figure()
    shap.plots.bar(exp, show=False)
    bar = _save(plt.gcf(), run / "contributions_bar.png")
    plt.figure()
    shap.plots.beeswarm(exp, show=False, color_bar=False)
    swarm = _save(plt.gcf(), run / "contributions_beeswarm.png")
    return {"Mean |contribution| per modality": bar, "Per-sample contributions": swarm}


def _robustness_plot(run: Path, results, summary: dict) -> Path:
    metric, labels, names = summary["primary_metric"], list(results.oof), results.names
    fig, ax = _plt().subplots(figsize=(6, 3.8))
    width = 0.8 / (len(names) + 1)
    for j, removed in enumerate([None, *names]):
        heights = [
            summary["strategies"][s][metric]["value"]
            if removed is None
            else summary["robustness"][s][removed][metric]
            for s in labels
        ]
        ax.bar(
            np.arange(len(labels)) + j * width,
            heights,
            width,
            label="all modalities" if removed is None else f"without {removed}",
        )
    ax.set_xticks(np.arange(len(labels)) + width * len(names) / 2, labels)
    ax.set(ylabel=metric, title="Missing-modality robustness")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, run / "robustness.png")


def _interaction_plot(run: Path, results, label: str) -> dict[str, Path]:
    values = (results.interactions or {}).get(label)
    if values is None or np.isnan(values).all():
        return {}
    import shap

    from toolkit.explain import plot_interactions

    exp = shap.Explanation(values=values, feature_names=results.names)
    path = plot_interactions(exp, run / "interactions.png")
    _plt().close("all")
    return {
        "Modality interactions: mean |interaction value| (off the diagonal, half of the "
        "pair's interaction index on each side, as the table's pair value is split; on the "
        "diagonal, main effects)": path
    }


def _interval_plots(run: Path, summary: dict) -> dict[str, Path]:
    records = summary.get("contribution_intervals") or []
    if not records:
        return {}
    import pandas as pd

    from toolkit.explain import plot_intervals

    table = pd.DataFrame(records)
    out = {}
    for statistic, title in (
        ("share", "Mean per-row modality shares"),
        ("mean_abs", "Mean |Shapley value|"),
    ):
        path = plot_intervals(table, run / f"contribution_intervals_{statistic}.png", statistic)
        out[f"{title} with 95% intervals (over rows and over refits)"] = path
    return out


def write_figures(run: Path, results, summary: dict) -> dict[str, Path]:
    """Write the run's figures from its :class:`~toolkit.study.summary.OutOfFold` outputs
    and summary; return {title: path}."""
    figures: dict[str, Path] = {}
    chosen = (summary.get("chosen") or {}).get("model")
    best = chosen if chosen in results.models else summary["best_strategy"]
    if results.classification:
        if len(results.classes) == 2 and len(np.unique(results.y)) == 2:
            figures["ROC curves"] = _roc(run, results)
            figures["Calibration"] = _calibration(run, results)
        figures["Confusion matrix"] = _confusion(run, results, best)
    else:
        figures["Predicted vs true"] = _scatter(run, results, best)
    figures.update(_contribution_plots(run, results, summary.get("explained_model", best)))
    figures.update(_interaction_plot(run, results, summary.get("explained_model", best)))
    figures.update(_interval_plots(run, summary))
    if results.robust:
        figures["Missing-modality robustness"] = _robustness_plot(run, results, summary)
    return figures


def drilldown_figures(run: Path, drill, *, include_text: bool) -> list[tuple[str, Path]]:
    """One figure per drilled row and modality (``drilldown_<modality>_row<k>.png``):
    highlighted words (only with ``include_text``), an image heatmap, segment bars over a
    waveform, scan slices. Rows without the modality get none."""
    from toolkit.explain import (
        plot_audio_parts,
        plot_image_parts,
        plot_scan_parts,
        plot_text_parts,
    )
    from toolkit.study.drilldown import frame_has

    if drill is None:
        return []
    _plt()  # Agg, unless a backend was chosen
    plots = {"text": plot_text_parts, "image": plot_image_parts, "audio": plot_audio_parts,
             "scan": plot_scan_parts}  # fmt: skip
    out = []
    for name, explanation in drill.explanations.items():
        kind = drill.kinds[name]
        if kind == "text" and not include_text:
            continue
        for i, row in enumerate(drill.rows):
            if not frame_has(explanation, i) or not len(np.asarray(explanation.values[i])):
                continue
            k = None if drill.codes is None else drill.codes[i]
            fig = plots[kind](explanation, row=i, class_index=k)
            _study_row_titles(fig, i, row)
            path = _save(fig, run / f"drilldown_{name}_row{row}.png")
            out.append((f"{name}, row {row} ({drill.reasons[i]})", path))
    return out


def _study_row_titles(fig, position: int, row: int) -> None:
    """Titles that say "row <position>" (within the drilled rows) say the study's row."""
    titles = [ax.title for ax in fig.axes] + list(fig.texts)  # fig.texts holds the suptitle
    prefix = f"row {position}:"
    for title in titles:
        if title.get_text().startswith(prefix):
            title.set_text(f"row {row}:" + title.get_text()[len(prefix):])


def text_examples(frame, modalities, values, per_modality: int = 5) -> list[dict]:
    """Raw text of the rows whose text modality contributed most (only on request).

    ``values`` are the best strategy's contributions, (n_samples, n_modalities[, n_classes]).
    """
    from toolkit.encoders.text import TextEncoder

    examples = []
    mags = contribution_magnitudes(values)
    names = [m[0] for m in modalities]
    for name, enc, col in modalities:
        if not isinstance(enc, TextEncoder) or isinstance(col, list | tuple):
            continue
        j = names.index(name)
        for row in np.argsort(-np.nan_to_num(mags[:, j]))[:per_modality]:
            examples.append(
                {
                    "row": int(row),
                    "modality": name,
                    "text": str(frame[col].iloc[row]),
                    "contribution": float(values[row, j] if values.ndim == 2 else mags[row, j]),
                }
            )
    return examples


# -- the Methods paragraph ------------------------------------------------------------------


def _task_phrase(config: dict, summary: dict) -> str:
    if config["task"] == "regression":
        return "regression"
    metrics = next(iter(summary["strategies"].values()), {})
    return "binary classification" if "auroc" in metrics else "multi-class classification"


def _cv_phrase(config: dict, grouped_by: str | None) -> str:
    k, seed = config["evaluation"]["cv"], config["seed"]
    classification = config["task"] == "classification"
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


def _models_phrase(config: dict, summary: dict) -> str:
    strategies = ", ".join(html.escape(s) for s in summary["strategies"])
    if not config["evaluation"]["baselines"]:
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


def _metrics_phrase(config: dict, summary: dict) -> str:
    ev, primary = config["evaluation"], summary["primary_metric"]
    metrics = list(next(iter(summary["strategies"].values())))
    n_boot = ev["bootstrap"]
    text = f"Metrics: {', '.join(metrics)}"
    if n_boot > 0:
        text += ", " + _bootstrap_phrase(summary, n_boot)
    else:
        text += ", without intervals (evaluation.bootstrap: 0)"
    if "sensitivity" in metrics:
        text += f"; sensitivity and specificity at threshold {ev['threshold']}"
    direction = "lowest" if primary in LOWER_IS_BETTER else "highest"
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


def _rule_phrase(config: dict, summary: dict) -> str:
    rule = config["output"]["model_rule"]
    chosen = (summary.get("chosen") or {}).get("model")
    what = {
        "best_mean_primary": "the model (fusion strategy or single modality) with the best "
        f"out-of-fold {summary['primary_metric']}",
        "auto": "fusion='auto', choosing by inner cross-validation on the training rows",
    }.get(rule, f"the strategy named by the rule ({html.escape(rule.split(':', 1)[-1])})")
    return (
        f"Model rule (output.model_rule: {html.escape(rule)}): the reported and saved model is "
        f"{what}; here {html.escape(str(chosen or 'auto'))}."
    )


def _conformal_phrase(config: dict, grouped: bool) -> str:
    conformal = config["evaluation"]["conformal"]
    if not conformal["enabled"]:
        return ""
    kind = "prediction sets" if config["task"] == "classification" else "prediction intervals"
    return (
        f"Conformal: split-conformal {kind} at {conformal['confidence']:.0%} confidence (crepes), "
        f"each strategy refitted on {1 - conformal['calibration']:.0%} of each fold's training "
        f"rows and calibrated on the other {conformal['calibration']:.0%}"
        + (" (whole groups on one side)" if grouped else "")
        + ", Mondrian by modality-availability pattern; coverage is reported per pattern."
    )


def _robustness_phrase(config: dict) -> str:
    if not config["evaluation"]["robustness"]:
        return "Missing-modality robustness was not evaluated (evaluation.robustness: false)."
    return (
        "Robustness: each metric recomputed with each modality removed from the test rows "
        "(marked missing; a row left with no modality gets the training prior)."
    )


def _explanation_phrase(config: dict, summary: dict) -> str:
    explanation = config["explanation"]
    if not explanation["enabled"]:
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
    if explanation["removal"] == "background":
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
        f"Explanation: {kind} over modalities (removal: {explanation['removal']}), where "
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


def _interactions_phrase(config: dict, summary: dict) -> str:
    if not summary.get("interactions"):
        if config["output"].get("interactions", True):
            return ""  # more modalities than the exact limit: sampled values, no interactions
        return "Interactions were not computed (output.interactions: false)."
    return (
        "Interactions: the pairwise Shapley interaction index of every pair of modalities "
        "(Grabisch and Roubens), from the same 2^M coalition values as the Shapley values (no "
        "further model evaluation); each modality's Shapley value is its main effect plus "
        "half of each of its pair interactions. The table reports mean |main effect| and mean "
        "|interaction index| over the out-of-fold rows."
    )


def _intervals_phrase(config: dict, summary: dict) -> str:
    records = summary.get("contribution_intervals") or []
    if not records:
        if not config["output"].get("intervals", True):
            return "Contribution intervals were not computed (output.intervals: false)."
        return ""
    overs = {r["over"] for r in records}
    parts = []
    if overs & {"rows", "groups"}:
        unit = "groups (cluster bootstrap: all rows of each drawn group)" if "groups" in overs else "rows"
        n_boot = config["evaluation"]["bootstrap"]
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
        + "; ".join(parts) + "."
    )


def _drilldown_phrase(config: dict, summary: dict) -> str:
    drill = summary.get("drilldown") or {}
    out = config["output"]
    if not drill:
        if out.get("drilldown_rows", DEFAULTS["output"]["drilldown_rows"]) < 1:
            return "Drill-down was not computed (output.drilldown_rows: 0)."
        return ""
    return (
        f"Drill-down: on {len(drill['rows'])} test rows of fold {drill['fold'] + 1} (the most "
        "confident correct and incorrect ones, alternately; regression: the best and worst "
        f"predicted), the {html.escape(drill['model'])} model refitted as in that fold; each "
        "splittable modality's item is cut into parts (words, image grid cells, time segments, "
        "scan blocks) whose Owen values add up to the modality's Shapley value with missing-"
        "modality removal. A masked part is removed (words), filled with mid-grey (image "
        "cells), silenced (segments) or set to 0 (scan blocks) and the item is re-encoded. "
        f"Cost bound: exact for items of at most {drill['max_parts']} parts (2^d - 2 encoder "
        f"calls per row), else {drill['n_permutations']} sampled orders of the parts "
        f"(antithetic pairs); {drill['encoder_calls']:,} encoder calls in all."
    )


def _source_phrase(source: str) -> str:
    """What the data card says of the source: title, synthetic or not, licence, citation."""
    from toolkit.datasets import dataset_info

    info = dataset_info(source)
    kind = "SYNTHETIC data generated with known ground truth" if info.synthetic else "real data"
    return (
        f"Source: {html.escape(info.title)} ({kind}); licence: {html.escape(info.licence)}; "
        f"cite: {html.escape(info.citation)}."
    )


def methods_text(config: dict, summary: dict, *, grouped_by: str | None = None) -> str:
    """The report's Methods paragraph (HTML), true for ``config`` and its ``summary``.

    ``grouped_by`` names what rows were grouped by (a column or the data source's groups),
    or None when the folds were not grouped.
    """
    source = html.escape(config["data"]["source"])
    return " ".join(
        [
            f"Data: <code>{source}</code> ({summary['n_samples']} rows); task: "
            f"{_task_phrase(config, summary)}.",
            _source_phrase(config["data"]["source"]),
            _cv_phrase(config, grouped_by),
            _models_phrase(config, summary),
            _metrics_phrase(config, summary),
            _robustness_phrase(config),
            _explanation_phrase(config, summary),
            _conformal_phrase(config, grouped_by is not None),
        ]
    ).strip()


# -- the HTML page --------------------------------------------------------------------------


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(entry) -> str:
    value, low, high = entry["value"], entry["low"], entry["high"]
    if not np.isfinite(value):
        return "n/a"
    if np.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} <small>[{low:.3f}, {high:.3f}]</small>"


def _table(head, rows) -> str:
    """An HTML table; ``head`` and each row are lists of already-escaped cell strings."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _metrics_section(config: dict, summary: dict) -> str:
    metrics = list(next(iter(summary["strategies"].values())).keys())
    chosen = (summary.get("chosen") or {}).get("model")
    rows = []
    for group in ("strategies", "baselines"):
        kind = "fusion" if group == "strategies" else "single modality"
        for label, entry in summary[group].items():
            name = html.escape(label) + (" <b>(chosen)</b>" if label == chosen else "")
            rows.append([name, kind, *(_fmt(entry[m]) for m in metrics)])
    title = (
        "out-of-fold, 95% bootstrap intervals"
        if config["evaluation"]["bootstrap"]
        else "out-of-fold"
    )
    head = ["model", "kind", *(html.escape(m) for m in metrics)]
    return f"<h2>Metrics ({title})</h2>\n" + _table(head, rows)


def _comparison_section(summary: dict) -> str:
    if not summary["comparisons"]:
        return ""
    rows = []
    for k, v in summary["comparisons"].items():
        finite = np.isfinite(v["low"])
        rows.append([
            html.escape(k), html.escape(v["against"]), f"{v['difference']:+.3f}",
            f"[{v['low']:+.3f}, {v['high']:+.3f}]" if finite else "—",
            html.escape(format_p(v["p_value"], v.get("n_boot", 0))) if finite else "—",
        ])  # fmt: skip
    return "<h2>Each strategy against the best single modality</h2>\n" + _table(
        ["strategy", "against", "difference", "95% interval", "p"], rows
    )


def _contribution_section(summary: dict) -> str:
    explained = summary.get("explained_model", summary["best_strategy"])
    contrib = summary["mean_abs_contribution"].get(explained, {})
    if not contrib:
        return ""
    total = sum(contrib.values()) or 1.0
    metric = summary["primary_metric"]
    rows = []
    for n in summary["contribution_ranking"]:
        single = summary["baselines"].get(f"{n} only", {}).get(metric)
        rows.append([html.escape(n), f"{contrib[n]:.4f}", f"{contrib[n] / total:.1%}",
                     _fmt(single) if single else "—"])  # fmt: skip
    return (
        f"<h2>Modality contributions ({html.escape(explained)} fusion)</h2>\n"
        "<p>A share is the modality's part of the mean |Shapley value|: how much the model's "
        "output moves with it (its size), not how useful it is for prediction. The last column "
        "is what the modality achieves on its own.</p>"
        + _table(["modality", "mean |Shapley value|", "share", f"{html.escape(metric)} on its own"], rows)
    )


def _interactions_section(summary: dict) -> str:
    inter = summary.get("interactions") or {}
    if not inter:
        return ""
    rows = [
        [html.escape(m), "main effect", f"{v['mean_abs']:.4f}", f"{v['share']:.1%}"]
        for m, v in inter["main_effects"].items()
    ] + [
        [html.escape(" × ".join(p["modalities"])), "pair", f"{p['mean_abs_interaction']:.4f}",
         f"{p['share']:.1%}"]
        for p in inter["pairs"]
    ]  # fmt: skip
    return (
        f"<h2>Modality interactions ({html.escape(inter['model'])} fusion)</h2>\n"
        "<p>Does a pair of modalities act <i>together</i>? A pair's interaction index is what "
        "the two add jointly beyond their separate effects (positive: synergy, negative: "
        "redundancy); a main effect is what a modality adds alone. Mean absolute values over "
        f"the out-of-fold rows; pairs carry {inter['interaction_share']:.1%} of the total.</p>"
        + _table(["modalities", "kind", "mean |value|", "share of total"], rows)
    )


def _intervals_section(summary: dict) -> str:
    records = summary.get("contribution_intervals") or []
    if not records:
        return ""
    names = {
        "mean_abs": "mean |Shapley value|",
        "share": "mean per-row share",
        "mean": "mean Shapley value",
    }
    rows = [
        [html.escape(r["modality"]), names.get(r["statistic"], html.escape(r["statistic"])),
         html.escape(r["over"]), str(r["n"]), f"{r['estimate']:.4f}",
         f"[{r['low']:.4f}, {r['high']:.4f}]"]
        for r in records
        if r["statistic"] in ("mean_abs", "share")
    ]  # fmt: skip
    return (
        f"<h2>How sure are the contributions ({html.escape(summary['explained_model'])} "
        "fusion, 95% intervals)</h2>\n<p>Over rows (or groups): bootstrap of the out-of-fold "
        "explanations — which rows were explained. Over refits: spread across the folds' "
        "models — how the fit moves the attribution (see Methods). The mean per-row share is the "
        "average over rows of each row's |value| divided by that row's total (MM-SHAP); it "
        "weighs every row equally, so it differs from the share in the contributions table, "
        "which is the modality's part of the mean |Shapley value| (rows with large values "
        "weigh more).</p>"
        + _table(["modality", "statistic", "over", "n", "estimate", "95% interval"], rows)
    )


def _drilldown_section(config: dict, summary: dict, figures) -> str:
    drill = summary.get("drilldown") or {}
    if not drill:
        return ""
    rows, absent = [], []
    for r in drill["records"]:
        if r.get("absent"):
            absent.append(f"{html.escape(r['modality'])} (row {r['row']})")
            continue
        top = ", ".join(f"{html.escape(p['part'])}: {p['value']:+.4f}" for p in r["top_parts"])
        rows.append([str(r["row"]), html.escape(r["reason"]), html.escape(r["modality"]),
                     html.escape(str(r["class"] or "")), str(r["n_parts"]),
                     "exact" if r["exact"] else f"sampled (max s.e. {r['max_error_std']:.4f})",
                     f"{r['modality_value']:+.4f}", top])  # fmt: skip
    text = (
        f"<h2>Inside the modalities: drill-down ({html.escape(drill['model'])} fusion, "
        f"fold {drill['fold'] + 1})</h2>\n<p>Which parts of an item carried its modality's "
        "contribution: each part's Owen value; the parts of a row add up to the modality's "
        "Shapley value with missing-modality removal (the column 'modality value'). Top "
        "parts by |value|.</p>"
    )
    if config["explanation"]["removal"] != "missing":
        text += (
            f"<p>This study's contributions use {html.escape(config['explanation']['removal'])} "
            "removal, so a row's modality value here differs from its contribution above.</p>"
        )
    if not drill["text_shown"] and any(r["kind"] == "text" for r in drill["records"]):
        text += (
            "<p><b>Text withheld:</b> output.include_text is false, so words are shown by "
            "position only (word 3 is the text's third word) and no highlighted text is drawn.</p>"
        )
    if drill["skipped"]:
        text += "<p>Not drilled: " + "; ".join(
            f"{html.escape(m)} ({html.escape(why)})" for m, why in drill["skipped"].items()
        ) + ".</p>"  # fmt: skip
    if absent:
        text += "<p>Absent from the row (no parts): " + ", ".join(absent) + ".</p>"
    text += _table(["row", "chosen as", "modality", "class explained", "parts", "computed",
                    "modality value", "top parts"], rows)  # fmt: skip
    text += "".join(
        f"<figure>{_img(p)}<figcaption>{html.escape(t)}</figcaption></figure>" for t, p in figures
    )
    return text


def _headline_section(config: dict, summary: dict) -> str:
    from toolkit.datasets import dataset_info

    synthetic = dataset_info(config["data"]["source"]).synthetic
    banner = (
        '<p class="warn"><b>SYNTHETIC DATA.</b> These results describe a generated dataset, '
        "not patients or people.</p>"
        if synthetic
        else ""
    )
    verdict = (summary.get("headline") or {}).get("verdict", "")
    css = "good" if verdict == "helps" else "warn"
    return f'{banner}<p class="{css}">{html.escape(headline_text(summary))}</p>'


def _data_section(config: dict, summary: dict, n_groups) -> str:
    facts = card_facts(config["data"]["source"])
    rows = [[html.escape(k.replace("_", " ")), html.escape(v)] for k, v in facts.items()]
    out = "<h2>Data (from the data card)</h2>\n" + _table(["field", "value"], rows)
    folds = summary.get("folds_detail") or []
    if folds:
        head = ["fold", "rows"] + (["groups"] if "groups" in folds[0] else [])
        if "class_counts" in folds[0]:
            classes = list(folds[0]["class_counts"])
            head += [f"class {html.escape(c)}" for c in classes]
            head += ["prevalence"] if folds[0].get("prevalence") is not None else []
        else:
            head += ["target mean"]
        body = []
        for f in folds:
            row = [str(f["fold"] + 1), str(f["n"])] + ([str(f["groups"])] if "groups" in f else [])
            if "class_counts" in f:
                row += [str(v) for v in f["class_counts"].values()]
                row += [f"{f['prevalence']:.1%}"] if f.get("prevalence") is not None else []
            else:
                row += [f"{f['target_mean']:.3f}"]
            body.append(row)
        out += "<h3>Test rows per fold (prevalence per fold)</h3>" + _table(head, body)
    return out + _missingness_table(summary)


def _missingness_table(summary: dict) -> str:
    miss = summary.get("missingness")
    if not miss:
        return ""
    n = summary["n_samples"]
    rows = [[html.escape(m), f"{v:.1%}", str(round(v * n))] for m, v in miss["missing_share"].items()]
    patterns = [[html.escape(p), str(c), f"{c / n:.1%}"] for p, c in miss["patterns"].items()]
    cells = [
        [html.escape(m), html.escape(c), f"{v:.1%}", str(round(v * n))]
        for m, columns in (miss.get("cells") or {}).items()
        for c, v in columns.items()
    ]
    inside = (
        "<h3>Missing values inside modalities</h3><p>Columns of a present modality with "
        "missing values (the encoder imputes them and adds missingness indicators).</p>"
        + _table(["modality", "column", "missing", "rows"], cells)
        if cells
        else ""
    )
    return (
        "<h3>Missingness per modality</h3>" + _table(["modality", "missing", "rows"], rows)
        + "<h3>Availability patterns</h3>" + _table(["modalities present", "rows", "share"], patterns)
        + inside
    )  # fmt: skip


def _robustness_section(summary: dict) -> str:
    table = summary.get("robustness_intervals") or {}
    if not table:
        return ""
    metric = html.escape(summary["primary_metric"])
    rows = []
    for label, removed in table.items():
        full = summary["strategies"][label][summary["primary_metric"]]
        for name, e in removed.items():
            drop = {"value": e["drop"], "low": e["drop_low"], "high": e["drop_high"]}
            rows.append([html.escape(label), html.escape(name), _fmt(full), _fmt(e), _fmt(drop)])
    return (
        f"<h2>Missing-modality robustness ({metric}, 95% intervals)</h2>\n"
        + _table(["strategy", "removed", "all modalities", "without it", "drop (paired)"], rows)
    )


def _calibration_section(summary: dict) -> str:
    tables = summary.get("calibration") or {}
    chosen = (summary.get("chosen") or {}).get("model")
    shown = [label for label in (chosen, summary["best_strategy"]) if label in tables]
    if not shown:
        return ""
    out = "<h2>Calibration (quantile bins of the predicted probability, out-of-fold)</h2>"
    for label in dict.fromkeys(shown):
        rows = [[f"{b['low']:.3f}–{b['high']:.3f}", str(b["n"]), f"{b['mean_predicted']:.3f}",
                 f"{b['observed']:.3f}"] for b in tables[label]]  # fmt: skip
        out += f"<h3>{html.escape(label)}</h3>" + _table(
            ["predicted range", "rows", "mean predicted", "observed rate"], rows
        )
    return out


def _conformal_section(summary: dict) -> str:
    conformal = summary.get("conformal") or {}
    if not conformal:
        return ""
    target = conformal["confidence"]
    rows = []
    for label, patterns in conformal["strategies"].items():
        for pattern, v in patterns.items():
            size = v.get("mean_size", v.get("mean_width"))
            flag = "" if abs(v["coverage"] - target) <= 0.05 or v["n"] < 30 else " ⚠"
            rows.append([html.escape(label), html.escape(pattern), str(v["n"]),
                         f"{v['coverage']:.3f}{flag}", f"{size:.3f}",
                         f"{v.get('uninformative', 0.0):.0%}"])  # fmt: skip
    size_name = "mean set size" if "mean_size" in next(iter(next(iter(conformal["strategies"].values())).values())) else "mean interval width"
    return (
        f"<h2>Conformal coverage per availability pattern (asked: {target:.0%})</h2>\n"
        "<p>Coverage: share of test rows whose set / interval holds the true value; ⚠ marks a "
        "pattern more than 5 points off with 30+ rows. Uninformative: rows whose set holds "
        "every class or whose interval is infinite (a pattern too rare to calibrate); they "
        "are covered by construction, so a coverage reached through them says nothing.</p>"
        + _table(["strategy", "pattern", "rows", "coverage", size_name, "uninformative"], rows)
    )


def _limitations_section(config: dict, summary: dict, n_groups) -> str:
    items = "".join(f"<li>{html.escape(t)}</li>" for t in limitations(config, summary, n_groups=n_groups))
    return f"<h2>Limitations</h2><ul>{items}</ul>"


def _tripod_section(config: dict, summary: dict) -> str:
    rows = [[html.escape(t), html.escape(s), html.escape(w)] for t, s, w in tripod_checklist(config, summary)]
    return (
        "<h2>TRIPOD+AI checklist</h2><p>Topics of the TRIPOD+AI statement (Collins et al., BMJ "
        "2024;385:e078378) and where this report covers them; check the official checklist "
        "before submission.</p>" + _table(["topic", "status", "where"], rows)
    )


def _privacy_section(config: dict, examples) -> str:
    text = (
        "Raw note text is not included in this report."
        if not config["output"]["include_text"]
        else "Raw text was included on request (output.include_text)."
    )
    if examples:
        rows = [[str(e["row"]), html.escape(e["modality"]), f"{e['contribution']:+.3f}",
                 html.escape(e["text"])] for e in examples]  # fmt: skip
        text += "<h3>Texts that contributed most</h3>" + _table(
            ["row", "modality", "contribution", "text"], rows
        )
    return text


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}figure{display:inline-block;margin:8px}
img{max-width:520px}small{color:#666}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:8px}
.good{background:#e6f4ea;border-left:4px solid #2e7d32;padding:8px}"""


def write_report(
    run: Path, config: dict, summary: dict, *, figures, text_examples=(), grouped_by=None,
    n_groups=None, drilldown_figures=(),
) -> Path:  # fmt: skip
    """A self-contained report.html (figures embedded as PNG data URIs).

    Sections: headline (chosen model against the best single modality), data card,
    prevalence per fold and missingness, Methods, metrics, comparisons, robustness,
    calibration and conformal tables, contributions, interactions, contribution intervals,
    drill-down (with ``drilldown_figures``, [(title, path)] from :func:`drilldown_figures`),
    limitations, TRIPOD+AI checklist, privacy, figures. ``grouped_by`` is what the folds
    were grouped by (see :func:`methods_text`), ``n_groups`` how many groups there are.
    """
    name = html.escape(config["name"])
    figs = "".join(
        f"<figure>{_img(p)}<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in figures.items()
    )
    sections = [
        _headline_section(config, summary),
        _data_section(config, summary, n_groups),
        f"<h2>Methods</h2><p>{methods_text(config, summary, grouped_by=grouped_by)}</p>"
        f"<p>{_privacy_section(config, text_examples)}</p>",
        _metrics_section(config, summary),
        _comparison_section(summary),
        transfer_section(summary),
        _robustness_section(summary),
        _calibration_section(summary),
        _conformal_section(summary),
        _contribution_section(summary),
        _interactions_section(summary),
        _intervals_section(summary),
        _drilldown_section(config, summary, drilldown_figures),
        _limitations_section(config, summary, n_groups),
        _tripod_section(config, summary),
        f"<h2>Figures</h2>{figs}",
    ]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name} - study report</title>
<style>{STYLE}</style></head><body>
<h1>{name}</h1>
<p>Task: {html.escape(config["task"])}; primary metric {html.escape(summary["primary_metric"])}.</p>
{chr(10).join(x for x in sections if x)}
</body></html>"""
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
