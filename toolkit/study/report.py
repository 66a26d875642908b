"""Figures (PNG) and a self-contained HTML report of a study run.

The report's Methods paragraph is built from the config (task, cross-validation kind,
grouping, strategies, baselines, metrics and bootstrap, robustness, explanation and its
removal method), so what it says is what the run did.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from toolkit.explain import contribution_magnitudes
from toolkit.study.orchestration import MAX_BACKGROUND
from toolkit.study.summary import LOWER_IS_BETTER


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
        np.argmax(results.oof[best], axis=1),
        display_labels=[str(c) for c in results.classes],
        ax=ax,
        colorbar=False,
    )
    ax.set_title(f"Confusion matrix ({best} fusion)")
    return _save(fig, run / "confusion_matrix.png")


def _scatter(run: Path, results, best: str) -> Path:
    fig, ax = _plt().subplots(figsize=(4.5, 4))
    ax.scatter(results.y, results.oof[best], s=8, alpha=0.6)
    ax.set(xlabel="true", ylabel="predicted", title=f"Predictions ({best} fusion)")
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


def write_figures(run: Path, results, summary: dict) -> dict[str, Path]:
    """Write the run's figures from its :class:`~toolkit.study.summary.OutOfFold` outputs
    and summary; return {title: path}."""
    figures: dict[str, Path] = {}
    best = summary["best_strategy"]
    if results.classification:
        if len(results.classes) == 2 and len(np.unique(results.y)) == 2:
            figures["ROC curves"] = _roc(run, results)
            figures["Calibration"] = _calibration(run, results)
        figures["Confusion matrix"] = _confusion(run, results, best)
    else:
        figures["Predicted vs true"] = _scatter(run, results, best)
    figures.update(_contribution_plots(run, results, best))
    if results.robust:
        figures["Missing-modality robustness"] = _robustness_plot(run, results, summary)
    return figures


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


def _metrics_phrase(config: dict, summary: dict) -> str:
    ev, primary = config["evaluation"], summary["primary_metric"]
    metrics = list(next(iter(summary["strategies"].values())))
    n_boot = ev["bootstrap"]
    text = f"Metrics: {', '.join(metrics)}"
    if n_boot > 0:
        text += f", with percentile bootstrap 95% intervals ({n_boot} resamples of the out-of-fold predictions)"
    else:
        text += ", without intervals (evaluation.bootstrap: 0)"
    if "sensitivity" in metrics:
        text += f"; sensitivity and specificity at threshold {ev['threshold']}"
    direction = "lowest" if primary in LOWER_IS_BETTER else "highest"
    text += f". The best strategy is the one with the {direction} {primary}"
    against = summary.get("best_single_modality")
    if against:
        test = (
            f"by a paired bootstrap of the difference in {primary}"
            if n_boot > 0
            else f"by the difference in {primary} (no bootstrap, so no interval or p-value)"
        )
        text += (
            f"; each strategy is compared with the best single modality "
            f"({html.escape(str(against))}) {test}"
        )
    return text + "."


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
    return (
        f"Explanation: {kind} over modalities (removal: {explanation['removal']}), where "
        f"{how}; computed for every test row of every fold."
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
        ]
    )


# -- the HTML page --------------------------------------------------------------------------


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(entry) -> str:
    value, low, high = entry["value"], entry["low"], entry["high"]
    if np.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} <small>[{low:.3f}, {high:.3f}]</small>"


def _metrics_section(config: dict, summary: dict) -> str:
    metrics = list(next(iter(summary["strategies"].values())).keys())
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = []
    for group in ("strategies", "baselines"):
        kind = "fusion" if group == "strategies" else "single modality"
        for label, entry in summary[group].items():
            cells = "".join(f"<td>{_fmt(entry[m])}</td>" for m in metrics)
            body.append(f"<tr><td>{html.escape(label)}</td><td>{kind}</td>{cells}</tr>")
    title = (
        "out-of-fold, 95% bootstrap intervals"
        if config["evaluation"]["bootstrap"]
        else "out-of-fold"
    )
    return (
        f"<h2>Metrics ({title})</h2>\n"
        f"<table><tr><th>model</th><th>kind</th>{head}</tr>{''.join(body)}</table>"
    )


def _comparison_section(summary: dict) -> str:
    if not summary["comparisons"]:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v['against'])}</td><td>{v['difference']:+.3f}</td>"
        + (
            f"<td>[{v['low']:+.3f}, {v['high']:+.3f}]</td><td>{v['p_value']:.3f}</td></tr>"
            if np.isfinite(v["low"])
            else "<td>—</td><td>—</td></tr>"
        )
        for k, v in summary["comparisons"].items()
    )
    return (
        "<h2>Each strategy against the best single modality</h2>\n<table><tr><th>strategy</th>"
        f"<th>against</th><th>difference</th><th>95% interval</th><th>p</th></tr>{rows}</table>"
    )


def _contribution_section(summary: dict) -> str:
    best = summary["best_strategy"]
    contrib = summary["mean_abs_contribution"].get(best, {})
    if not contrib:
        return ""
    total = sum(contrib.values()) or 1.0
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{contrib[n]:.4f}</td><td>{contrib[n] / total:.1%}</td></tr>"
        for n in summary["contribution_ranking"]
    )
    return (
        f"<h2>Modality contributions ({html.escape(best)} fusion)</h2>\n<table><tr>"
        f"<th>modality</th><th>mean |Shapley value|</th><th>share</th></tr>{rows}</table>"
    )


def _privacy_section(config: dict, examples) -> str:
    text = (
        "Raw note text is not included in this report."
        if not config["output"]["include_text"]
        else "Raw text was included on request (output.include_text)."
    )
    if examples:
        rows = "".join(
            f"<tr><td>{e['row']}</td><td>{html.escape(e['modality'])}</td><td>{e['contribution']:+.3f}</td><td>{html.escape(e['text'])}</td></tr>"
            for e in examples
        )
        text += (
            "<h3>Texts that contributed most</h3><table><tr><th>row</th><th>modality</th>"
            f"<th>contribution</th><th>text</th></tr>{rows}</table>"
        )
    return text


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}figure{display:inline-block;margin:8px}
img{max-width:520px}small{color:#666}"""


def write_report(
    run: Path, config: dict, summary: dict, *, figures, text_examples=(), grouped_by=None
) -> Path:
    """A self-contained report.html (figures embedded as PNG data URIs).

    ``grouped_by`` is what the folds were grouped by (see :func:`methods_text`).
    """
    name, best = html.escape(config["name"]), html.escape(summary["best_strategy"])
    figs = "".join(
        f"<figure>{_img(p)}<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in figures.items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name} - study report</title>
<style>{STYLE}</style></head><body>
<h1>{name}</h1>
<p>Task: {html.escape(config["task"])}. Best strategy by {html.escape(summary["primary_metric"])}: <b>{best}</b>.</p>
<h2>Methods</h2><p>{methods_text(config, summary, grouped_by=grouped_by)}</p><p>{_privacy_section(config, text_examples)}</p>
{_metrics_section(config, summary)}
{_comparison_section(summary)}
{_contribution_section(summary)}
<h2>Figures</h2>{figs}
</body></html>"""
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
