"""The "Transfer across groups" part of a study whose data have groups (``data.groups``).

:func:`transfer_summary` is ``metrics.json``'s ``"transfer"`` entry: for each modality, the
check of :func:`toolkit.diagnostics.group_transfer` (its score within seen groups against
across held-out groups, the drop and its interval, whether it tells the groups apart, the
flag and a sentence), and the chosen model's score on each held-out group, read from the
study's own out-of-fold predictions (its folds hold out whole groups), so no model is
refitted for it. :func:`transfer_section` renders that entry as HTML: the report shows
the numbers of ``metrics.json``, formatted, and nothing else.

Folds are numbered from 0, as everywhere in a run folder (``predictions.csv``'s ``fold``
column, ``folds/fold_0.json``, ``metrics.json``'s ``folds_detail``): the entry's ``"folds"``
and each group's ``"fold"`` are those numbers, and the report shows them unchanged.

Group identifiers (e.g. patient ids) are withheld unless ``output.include_group_ids`` is
true: :func:`pseudonyms` names each group "patient 1", "patient 2", ... in the order of
its first row in the data (the row order of ``predictions.csv``), and the entry, its
sentences and the report use those names. The scores are the same either way: they are
computed on the real groups, and only the names are replaced.
"""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pandas as pd

from toolkit.diagnostics import group_scores, group_transfer
from toolkit.diagnostics.result import plain, scorer


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
    plain word, or one before an id suffix ('speaker' -> 'speakers', 'patient_id' and
    'PatientID' -> 'patients', 'family' -> 'families', 'clients' as it is), else 'groups'
    ('pid', 'site_no', 'mrn')."""
    word = re.sub(r"(?<=[a-z])(?:ID|Id)$|[_\- ](?:id|ID|Id)$", "", column or "").lower()
    if not (word.isalpha() and len(word) > 3) or word.endswith("ss"):
        return "groups"
    if word.endswith("s"):
        return word
    if word.endswith("y") and word[-2] not in "aeiou":
        return f"{word[:-1]}ies"
    return f"{word}s"


def _singular(plural: str) -> str:
    """The singular of a plural of :func:`_plural`."""
    return f"{plural[:-3]}y" if plural.endswith("ies") else plural.removesuffix("s")


def _model_label(summary: dict, results) -> str:
    chosen = (summary.get("chosen") or {}).get("model")
    return chosen if chosen in results.models else summary["best_strategy"]


def pseudonym_word(column: str | None) -> str:
    """The word of a group's pseudonym for the groups' column: 'patient' ('patient_id'),
    'speaker' ('speaker'), else 'group' (the singular of :func:`_plural`)."""
    return _singular(_plural(column))


def pseudonyms(groups, group_name: str) -> dict:
    """{group: pseudonym}: "patient 1", "patient 2", ... (the singular of ``group_name``,
    the plural of :func:`_plural`) in the order of each group's first row in ``groups``
    (the data's row order), so the same data always gets the same names."""
    word = _singular(group_name)
    order = pd.unique(pd.Series(np.asarray(groups, dtype=object)))
    return {plain(g): f"{word} {k}" for k, g in enumerate(order, start=1)}


def _rename(held_out: dict, names: dict) -> dict:
    """``held_out`` (of :func:`_held_out`) with every group named by ``names``: the table,
    ordered by pseudonym ("patient 1" first), and the model's worst and best group."""
    table = held_out["table"].rename(index=names)
    number = {name: k for k, name in enumerate(names.values())}
    table = table.iloc[np.argsort([number[g] for g in table.index], kind="stable")]
    model = dict(held_out["model"])
    for key in ("worst_group", "best_group"):
        if model.get(key) is not None:
            model[key] = names[model[key]]
    return {**held_out, "table": table, "model": model}


#: Where a refusal of :func:`group_transfer` quotes a group: "one group only ('p07')",
#: "occurs in group 'p07' only", "are in one group (10004235)" (a string group quoted, a
#: number as it is).
_QUOTED_GROUP = re.compile(
    r"(group only \(|in group |in one group \()('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s)]+)"
)


def _withhold_ids(reason: str, names: dict) -> str:
    """A refusal of :func:`group_transfer` with every group it quotes ('p07') replaced by
    its pseudonym ('patient 7')."""
    by_repr = {repr(group): repr(name) for group, name in names.items()}
    reason = _QUOTED_GROUP.sub(lambda m: m[1] + by_repr.get(m[2], m[2]), reason)
    for group, name in by_repr.items():
        if group[:1] in "'\"":  # a quoted (string) group anywhere else; numbers are not
            reason = reason.replace(group, name)  # searched for (they would match counts)
    return reason


def transfer_summary(
    plan, results, summary: dict, *, cache_dir=None, group_name=None, include_group_ids=False
) -> dict:
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
    include_group_ids : bool, default=False
        ``output.include_group_ids``: name each group by its identifier in the data; by
        default by its pseudonym (:func:`pseudonyms`: "patient 1", ... by first
        appearance). ``"group_ids"`` says which ("given" or "pseudonyms").

    Returns
    -------
    dict
        :meth:`toolkit.diagnostics.TransferCheck.to_dict` with ``computed: True``,
        ``model_source`` and ``note``; or ``{"computed": False, "reason": ...}`` when the
        groups do not allow the check (e.g. a class lies in one group only).
    """
    metric, note = _metric(summary["primary_metric"], plan.classification)
    name = _plural(group_name)
    names = None if include_group_ids else pseudonyms(plan.groups, name)
    ids = {"group_ids": "given" if include_group_ids else "pseudonyms"}
    estimator = plan.model(plan.modalities, memory=cache_dir)
    try:  # on the real groups: the folds, and so the scores, do not depend on the names
        check = group_transfer(
            estimator, plan.frame, plan.y, plan.groups, cv=int(summary["folds"]),
            scoring=metric, model=False, group_name=name,
            random_state=plan.seed,
        )  # fmt: skip
    except ValueError as exc:
        reason = str(exc) if names is None else _withhold_ids(str(exc), names)
        return {"computed": False, "reason": reason, **ids}
    label = _model_label(summary, results)
    held_out = _held_out(results, label, metric, plan.classification, name)
    if names is not None:
        held_out = _rename(held_out, names)
    check = dataclasses.replace(check, groups=held_out.pop("table"), model=held_out.pop("model"))
    return {
        "computed": True,
        **check.to_dict(),
        **held_out,
        **ids,
        "group_column": group_name,
        "model_source": "the study's out-of-fold predictions (folds hold out whole groups)",
        "note": note,
    }


#: The per-group score shown where the check's score is undefined within most groups:
#: one defined on a single row of a single class (classification) or a single row.
_PER_GROUP_FALLBACK = {True: "brier", False: "mae"}
_WORDS = {"roc_auc": "AUROC", "r2": "R²", "brier": "Brier score", "mae": "mean absolute error"}


def _held_out(results, label: str, metric: str, classification: bool, gn: str) -> dict:
    """The chosen model on each held-out group and on each fold of held-out groups.

    Where ``metric`` is undefined on most groups (AUROC within a patient whose 1-3 visits
    hold one class), the per-group table shows the Brier score (classification) or the
    mean absolute error (regression) instead, and ``groups_note`` says why."""
    output, groups, fold_of = results.models[label], results.groups, results.fold_of
    ids = np.unique(fold_of)  # the study's fold numbers (from 0, as in predictions.csv)
    folds = [(None, np.flatnonzero(fold_of == k)) for k in ids]
    table, model = group_scores(
        results.y, output, groups, scoring=metric, folds=folds, label=label
    )  # fmt: skip
    note, per_group = "", metric
    unscored = len(table) - model["n_groups"]
    if model["n_groups"] < len(table) / 2:
        per_group = _PER_GROUP_FALLBACK[classification]
        note = _unscored_note(table, metric, per_group, classification, gn)
        table, model = group_scores(
            results.y, output, groups, scoring=per_group, folds=folds, label=label
        )  # fmt: skip
    elif unscored:
        note = (
            f"{unscored} of {len(table)} {gn} could not be scored by {_WORDS.get(metric, metric)} "
            "(too few rows, or one class only); they are left out of the table."
        )
    table["fold"] = ids[table["fold"].to_numpy()]  # group_scores numbers ``folds`` by position
    return {
        "table": table,
        "model": model,
        "groups_metric": per_group,
        "groups_note": note,
        "folds": _fold_scores(
            results, output, zip(ids, folds, strict=True), metric, classification
        ),
    }


def _unscored_note(table, metric: str, per_group: str, classification: bool, gn: str) -> str:
    sizes = table["n_rows"]
    span = f"{sizes.min()}" if sizes.min() == sizes.max() else f"{sizes.min()}-{sizes.max()}"
    need = "both classes" if classification else "at least 2 rows with different targets"
    shown = {"brier": "Brier score (the mean squared error of the predicted probabilities",
             "mae": "mean absolute error (of the prediction"}[per_group]  # fmt: skip
    return (
        f"{_WORDS.get(metric, metric)} is not given per group: it needs {need} within a "
        f"group, and {len(table) - int(table['score'].notna().sum())} of {len(table)} {gn} "
        f"({span} rows each) do not have them. Its value on each fold of held-out {gn} is "
        f"shown instead, and each group's {shown}, defined for a single row; lower is better)."
    )


def _fold_scores(results, output, numbered, metric: str, classification: bool) -> list[dict]:
    """The model's ``metric`` on each fold of held-out groups (each pools whole groups);
    ``numbered`` pairs each fold's number in the study (from 0) with its (train, test)."""
    fn = scorer(metric, True, classification)[1]
    return [
        {
            "fold": int(k),
            "n_rows": len(rows),
            "n_groups": len(np.unique(results.groups[rows])),
            "score": plain(fn(results.y[rows], output[rows])),
        }
        for k, (_, rows) in numbered
    ]


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


#: Rows of the per-group table in the report (the worst first; metrics.json has them all).
_SHOWN_GROUPS = 20


def _group_rows(entry: dict) -> tuple[list[list[str]], str]:
    """The scored groups, worst first, at most ``_SHOWN_GROUPS``; and a caption."""
    scored = [g for g in entry["groups"] or [] if g["score"] is not None]
    higher = entry["model"].get("greater_is_better", True)
    scored.sort(key=lambda g: g["score"], reverse=not higher)
    rows = [
        [html.escape(str(g["group"])), str(g["n_rows"]), str(g["fold"]), _num(g["score"])]
        for g in scored[:_SHOWN_GROUPS]
    ]
    caption = ""
    if len(scored) > _SHOWN_GROUPS:
        caption = (
            f"<p>The {_SHOWN_GROUPS} worst of {len(scored)} scored groups; metrics.json "
            '("transfer" → "groups") lists every group.</p>'
        )
    return rows, caption


def _model_part(entry: dict) -> str:
    """The chosen model on each fold of held-out groups and on each held-out group."""
    model, metric = entry["model"], html.escape(entry["metric"])
    gn = html.escape(entry["group_name"])
    text = (
        f"<h3>{html.escape(model['label'])} on held-out {gn} (from "
        f"{html.escape(entry['model_source'])})</h3>"
    )
    folds = entry.get("folds") or []
    if folds:
        text += (
            f"<p>{metric} on each fold of held-out {gn} (each fold pools whole {gn}; folds "
            "are numbered from 0, as in metrics.json and predictions.csv):</p>"
        )
        text += _table(
            ["fold", gn, "rows", metric],
            [[str(f["fold"]), str(f["n_groups"]), str(f["n_rows"]), _num(f["score"])]
             for f in folds],
        )  # fmt: skip
    if entry.get("groups_note"):
        text += f"<p>{html.escape(entry['groups_note'])}</p>"
    if not model["n_groups"]:
        return text
    per = html.escape(entry.get("groups_metric", entry["metric"]))
    better = "higher" if model.get("greater_is_better", True) else "lower"
    text += (
        f"<p>Per group, {per} ({better} is better): overall {_num(model['pooled'])}; "
        f"worst group {html.escape(str(model['worst_group']))} {_num(model['worst'])}, best "
        f"{html.escape(str(model['best_group']))} {_num(model['best'])}; mean "
        f"{_num(model['mean'])}, s.d. {_num(model['std'])}, spread {_num(model['spread'])} "
        f"over {model['n_groups']} scored groups.</p>"
    )
    rows, caption = _group_rows(entry)
    return text + _table(["group", "rows", "fold", per], rows) + caption + _names_note(entry)


def _names_note(entry: dict) -> str:
    """How the groups are named: by pseudonym (the default) or by their identifiers ("" for
    an entry that does not say)."""
    gn = html.escape(entry["group_name"])
    if entry.get("group_ids") not in ("given", "pseudonyms"):
        return ""
    if entry["group_ids"] == "given":
        return (
            f"<p>{gn.capitalize()} are named by their identifiers in the data "
            "(output.include_group_ids: true; set it to false to name them by pseudonym).</p>"
        )
    return (
        f"<p>{gn.capitalize()} are named by pseudonym, numbered in the order of their first "
        "row in the data (the row order of predictions.csv); their identifiers are withheld "
        "(output.include_group_ids: false).</p>"
    )


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
    if entry.get("model"):
        text += _model_part(entry)
    return head + text
