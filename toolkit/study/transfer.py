"""The "Transfer across groups" part of a study whose data have groups (``data.groups``).

:func:`transfer_summary` is ``metrics.json``'s ``"transfer"`` entry: for each modality, the
check of :func:`toolkit.diagnostics.group_transfer` (its score within seen groups against
across held-out groups, the drop and its interval, whether it tells the groups apart, the
flag and a sentence), and the chosen model's score on each held-out group, read from the
study's own out-of-fold predictions (its folds hold out whole groups), so no model is
refitted for it. :func:`transfer_section` renders that entry as HTML: the report shows
the numbers of ``metrics.json``, formatted, and nothing else.
"""

from __future__ import annotations

import dataclasses
import html

import numpy as np

from toolkit.diagnostics import group_scores, group_transfer


def _metric(primary: str, classification: bool) -> tuple[str, str]:
    """(score, note): the check's score, a named score of :func:`group_transfer` without a
    unit (so that one ``min_gap`` means the same on every study): AUROC when it is the
    study's primary metric, else accuracy (classification) or R² (regression)."""
    if classification:
        name = "roc_auc" if primary == "auroc" else "accuracy"
    else:
        name = "r2"
    same = {"roc_auc": "auroc"}.get(name, name) == primary
    note = "" if same else f" (the study's primary metric is {primary})"
    return name, note


def _plural(column: str | None) -> str:
    """What a group is, in the sentences: the groups' column as a plural noun when it is a
    plain word ('speaker' -> 'speakers'), else 'groups' ('pid', 'site_id')."""
    word = (column or "").lower()
    if word.isalpha() and len(word) > 3 and not word.endswith("s"):
        return f"{word}s"
    return "groups"


def _model_label(summary: dict, results) -> str:
    chosen = (summary.get("chosen") or {}).get("model")
    return chosen if chosen in results.models else summary["best_strategy"]


def transfer_summary(plan, results, summary: dict, *, cache_dir=None, group_name=None) -> dict:
    """The ``"transfer"`` entry of a grouped study's ``metrics.json``.

    Parameters
    ----------
    plan : toolkit.study.orchestration.FoldPlan
        The study's rows, target (class codes), modalities, groups and seed.
    results : toolkit.study.summary.OutOfFold
        The study's out-of-fold outputs (its folds hold out whole groups).
    summary : dict
        The study summary (primary metric, folds, chosen model).
    cache_dir : path, optional
        The study's embedding cache, so fixed encoders are not run twice.
    group_name : str, optional
        The groups' column: the sentences call a group by it ('speaker' -> 'speakers';
        'groups' when it is not a plain word).

    Returns
    -------
    dict
        :meth:`toolkit.diagnostics.TransferCheck.to_dict` with ``computed: True``,
        ``model_source`` and ``note``; or ``{"computed": False, "reason": ...}`` when the
        groups do not allow the check (e.g. a class lies in one group only).
    """
    metric, note = _metric(summary["primary_metric"], plan.classification)
    name = _plural(group_name)
    estimator = plan.model(plan.modalities, memory=cache_dir)
    try:
        check = group_transfer(
            estimator, plan.frame, plan.y, plan.groups, cv=int(summary["folds"]),
            scoring=metric, model=False, group_name=name,
            random_state=plan.seed,
        )  # fmt: skip
    except ValueError as exc:
        return {"computed": False, "reason": str(exc)}
    label = _model_label(summary, results)
    folds = [(None, np.flatnonzero(results.fold_of == k)) for k in np.unique(results.fold_of)]
    table, model = group_scores(
        results.y, results.models[label], results.groups, scoring=metric,
        folds=folds, label=label,
    )  # fmt: skip
    check = dataclasses.replace(check, groups=table, model=model)
    return {
        "computed": True,
        **check.to_dict(),
        "group_column": group_name,
        "model_source": "the study's out-of-fold predictions (folds hold out whole groups)",
        "note": note,
    }


def _num(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval(low, high, signed: bool = False) -> str:
    if low is None or high is None:
        return ""
    return f" <small>[{_num(low, signed)}, {_num(high, signed)}]</small>"


def _table(head, rows) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="transfer"><tr>{th}</tr>{body}</table>'


def _modality_rows(entry: dict) -> list[list[str]]:
    rows = []
    for m in entry["modalities"]:
        apart = f"{_num(m['group_id'])} (chance {_num(m['group_id_chance'])})"
        rows.append([
            html.escape(m["modality"]), str(m["n_rows"]), _num(m["within"]),
            _num(m["across"]) + _interval(m["across_low"], m["across_high"]),
            _num(m["gap"], True) + _interval(m["gap_low"], m["gap_high"], True),
            apart, ("<b>flagged</b>: " if m["flagged"] else "") + html.escape(m["status"]),
        ])  # fmt: skip
    return rows


def _group_rows(entry: dict) -> list[list[str]]:
    return [
        [html.escape(str(g["group"])), str(g["n_rows"]), str(g["fold"] + 1), _num(g["score"])]
        for g in entry["groups"] or []
    ]


def transfer_section(summary: dict) -> str:
    """The report's "Transfer across groups" section from ``summary["transfer"]`` ("" when
    the study has no groups)."""
    entry = summary.get("transfer")
    if not entry:
        return ""
    head = "<h2>Transfer across groups</h2>\n"
    if not entry.get("computed"):
        return head + f"<p>Not computed: {html.escape(entry['reason'])}</p>"
    metric, gn = html.escape(entry["metric"]), html.escape(entry["group_name"])
    column = entry.get("group_column")
    column = f", the '{html.escape(column)}' column" if column else ""
    text = (
        f"<p>Does each modality's signal carry over to {gn} never seen in training? Each "
        "modality alone, through a simple standardized linear head, scored by "
        f"{metric}{html.escape(entry['note'])}: <i>within</i> by "
        f"{entry['n_splits']['within']}-fold cross-validation over rows (test rows from {gn} "
        f"seen in training), <i>across</i> by {entry['n_splits']['across']}-fold "
        f"cross-validation holding out whole {gn} ({entry['n_groups']} in all{column}). "
        f"Drop = within − across, with a paired 95% bootstrap interval over {gn} "
        f"({entry['n_boot']} resamples). A modality is flagged when the drop is at least "
        f"{entry['min_gap']:g} and its interval lies above 0. 'Tells them apart': "
        "cross-validated accuracy of naming each row's group from the modality alone.</p>"
    )
    items = "".join(f"<li>{html.escape(s)}</li>" for s in entry["sentences"])
    text += f"<ul>{items}</ul>"
    text += _table(
        ["modality", "rows", "within", "across [95%]", "drop [95%]", "tells them apart",
         "verdict"], _modality_rows(entry),
    )  # fmt: skip
    model = entry.get("model")
    if model:
        text += (
            f"<h3>{html.escape(model['label'])} on each held-out group ({metric}, from "
            f"{html.escape(entry['model_source'])})</h3>"
            f"<p>Overall {_num(model['pooled'])}; worst group "
            f"{html.escape(str(model['worst_group']))} {_num(model['worst'])}, best "
            f"{html.escape(str(model['best_group']))} {_num(model['best'])}; mean "
            f"{_num(model['mean'])}, s.d. {_num(model['std'])}, spread {_num(model['spread'])} "
            f"over {model['n_groups']} scored groups.</p>"
        )
        text += _table(["group", "rows", "fold", html.escape(entry["metric"])], _group_rows(entry))
    return head + text
