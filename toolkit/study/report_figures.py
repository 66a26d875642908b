"""The figures (PNG) of a study run: ROC and calibration curves, the confusion matrix or
predicted-vs-true scatter, contributions, interactions, contribution intervals,
robustness, and the drill-down figures; and the raw-text examples shown on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.explain import contribution_magnitudes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


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
            title.set_text(f"row {row}:" + title.get_text()[len(prefix) :])


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
