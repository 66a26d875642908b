"""Figures (PNG) and a self-contained HTML report of a study run."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def write_figures(
    run: Path, config, classes, y, oof, baselines, robust, contributions, names, summary
) -> dict[str, Path]:
    """Write the run's figures; return {title: path}."""
    plt = _plt()
    from sklearn import metrics as skm

    figures: dict[str, Path] = {}
    best = summary["best_strategy"]
    classification = classes is not None
    models = {**oof, **baselines}
    if classification and len(classes) == 2 and len(np.unique(y)) == 2:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for label, pred in models.items():
            fpr, tpr, _ = skm.roc_curve(y, pred[:, 1])
            ax.plot(
                fpr,
                tpr,
                label=f"{label} (AUROC {skm.roc_auc_score(y, pred[:, 1]):.3f})",
                lw=2 if label in oof else 1,
                ls="-" if label in oof else "--",
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (out-of-fold)")
        ax.legend(fontsize=7, loc="lower right")
        figures["ROC curves"] = _save(fig, run / "roc.png")
        from sklearn.calibration import calibration_curve

        fig, ax = plt.subplots(figsize=(5, 4.5))
        for label in oof:
            frac, mean = calibration_curve(y, oof[label][:, 1], n_bins=8, strategy="quantile")
            ax.plot(mean, frac, marker="o", label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(
            xlabel="predicted probability",
            ylabel="observed frequency",
            title="Calibration (out-of-fold)",
        )
        ax.legend(fontsize=7)
        figures["Calibration"] = _save(fig, run / "calibration.png")
    if classification:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.ConfusionMatrixDisplay.from_predictions(
            y,
            np.argmax(oof[best], axis=1),
            display_labels=[str(c) for c in classes],
            ax=ax,
            colorbar=False,
        )
        ax.set_title(f"Confusion matrix ({best} fusion)")
        figures["Confusion matrix"] = _save(fig, run / "confusion_matrix.png")
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(y, oof[best], s=8, alpha=0.6)
        ax.set(xlabel="true", ylabel="predicted", title=f"Predictions ({best} fusion)")
        figures["Predicted vs true"] = _save(fig, run / "predictions.png")
    values = contributions.get(best)
    if values is not None and not np.isnan(values).all():
        import shap

        if values.ndim == 3:
            values = np.abs(values).sum(axis=2)
        exp = shap.Explanation(
            values=values,
            base_values=np.zeros(len(values)),
            data=np.ones_like(values),
            feature_names=names,
        )
        plt.figure()
        shap.plots.bar(exp, show=False)
        figures["Mean |contribution| per modality"] = _save(
            plt.gcf(), run / "contributions_bar.png"
        )
        plt.figure()
        shap.plots.beeswarm(exp, show=False, color_bar=False)
        figures["Per-sample contributions"] = _save(plt.gcf(), run / "contributions_beeswarm.png")
    if robust:
        metric = summary["primary_metric"]
        fig, ax = plt.subplots(figsize=(6, 3.8))
        labels = list(oof)
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
        figures["Missing-modality robustness"] = _save(fig, run / "robustness.png")
    return figures


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(entry) -> str:
    value, low, high = entry["value"], entry["low"], entry["high"]
    if np.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} <small>[{low:.3f}, {high:.3f}]</small>"


def write_report(run: Path, config, summary, figures, text_examples=()) -> Path:
    """A self-contained report.html (figures embedded as PNG data URIs)."""
    metrics = list(next(iter(summary["strategies"].values())).keys())
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = []
    for group in ("strategies", "baselines"):
        for label, entry in summary[group].items():
            kind = "fusion" if group == "strategies" else "single modality"
            cells = "".join(f"<td>{_fmt(entry[m])}</td>" for m in metrics)
            body.append(f"<tr><td>{html.escape(label)}</td><td>{kind}</td>{cells}</tr>")
    comp = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v['against'])}</td><td>{v['difference']:+.3f}</td>"
        f"<td>[{v['low']:+.3f}, {v['high']:+.3f}]</td><td>{v['p_value']:.3f}</td></tr>"
        for k, v in summary["comparisons"].items()
    )
    contrib = summary["mean_abs_contribution"].get(summary["best_strategy"], {})
    total = sum(contrib.values()) or 1.0
    contrib_rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{contrib[n]:.4f}</td><td>{contrib[n] / total:.1%}</td></tr>"
        for n in summary["contribution_ranking"]
    )
    figs = "".join(
        f"<figure>{_img(p)}<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in figures.items()
    )
    data = config["data"]
    grouped = (
        "grouped by " + html.escape(str(data.get("groups") or "the source's patient id"))
        if summary.get("grouped")
        else "not grouped"
    )
    methods = (
        f"Data: <code>{html.escape(data['source'])}</code> ({summary['n_samples']} rows). "
        f"Evaluation: {summary['folds']}-fold cross-validation ({'stratified' if config['task'] == 'classification' else 'unstratified'}, {grouped}); "
        "encoders were fitted on the training folds only, and every prediction reported is out-of-fold. "
        f"Strategies: {', '.join(html.escape(s) for s in summary['strategies'])} fusion, compared with one model per single modality. "
        f"Metrics: {', '.join(metrics)}, with percentile bootstrap 95% intervals ({config['evaluation']['bootstrap']} resamples of the out-of-fold predictions); "
        f"each strategy is compared with the best single modality ({html.escape(str(summary['best_single_modality']))}) by a paired bootstrap of the difference in {summary['primary_metric']}. "
        "Robustness: each metric recomputed with each modality removed from the test rows (marked missing). "
        "Explanation: exact Shapley values over modalities, where a coalition's value is the model's output with the other modalities marked missing "
        "and the empty coalition's value is the training prior; computed for every test row of every fold."
    )
    privacy = (
        "Raw note text is not included in this report."
        if not config["output"]["include_text"]
        else "Raw text was included on request (output.include_text)."
    )
    if text_examples:
        rows = "".join(
            f"<tr><td>{e['row']}</td><td>{html.escape(e['modality'])}</td><td>{e['contribution']:+.3f}</td><td>{html.escape(e['text'])}</td></tr>"
            for e in text_examples
        )
        privacy += (
            "<h3>Texts that contributed most</h3><table><tr><th>row</th><th>modality</th>"
            f"<th>contribution</th><th>text</th></tr>{rows}</table>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(config["name"])} - study report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}th{{background:#f3f3f3}}figure{{display:inline-block;margin:8px}}
img{{max-width:520px}}small{{color:#666}}</style></head><body>
<h1>{html.escape(config["name"])}</h1>
<p>Task: {html.escape(config["task"])}. Best strategy by {html.escape(summary["primary_metric"])}: <b>{html.escape(summary["best_strategy"])}</b>.</p>
<h2>Methods</h2><p>{methods}</p><p>{privacy}</p>
<h2>Metrics (out-of-fold, 95% bootstrap intervals)</h2>
<table><tr><th>model</th><th>kind</th>{head}</tr>{"".join(body)}</table>
<h2>Each strategy against the best single modality</h2>
<table><tr><th>strategy</th><th>against</th><th>difference</th><th>95% interval</th><th>p</th></tr>{comp}</table>
<h2>Modality contributions ({html.escape(summary["best_strategy"])} fusion)</h2>
<table><tr><th>modality</th><th>mean |Shapley value|</th><th>share</th></tr>{contrib_rows}</table>
<h2>Figures</h2>{figs}
</body></html>"""
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
