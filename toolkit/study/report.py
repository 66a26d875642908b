"""The self-contained HTML report of a study run (figures: :mod:`toolkit.study.report_figures`;
the Methods paragraph: :mod:`toolkit.study.report_methods`).

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

from toolkit.study.config import StudyConfig
from toolkit.study.disclosure import card_facts, headline_text, limitations, tripod_checklist
from toolkit.study.metrics import METRICS, format_p
from toolkit.study.model_card import vocabulary_paragraph
from toolkit.study.report_figures import drilldown_figures, text_examples, write_figures
from toolkit.study.report_labs import labs_section
from toolkit.study.report_methods import methods_text
from toolkit.study.transfer import pseudonym_word, transfer_section

__all__ = [
    "drilldown_figures", "methods_text", "modality_kinds", "text_examples", "write_figures",
    "write_report",
]  # fmt: skip


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(entry, spec: str = ".3f") -> str:
    value, low, high = entry["value"], entry["low"], entry["high"]
    if not np.isfinite(value):
        return "n/a"
    if np.isnan(low):
        return f"{value:{spec}}"
    return f"{value:{spec}} <small>[{low:{spec}}, {high:{spec}}]</small>"


def _metric_head(name: str) -> str:
    """A metric's column head: its name, with its display name and direction on hover."""
    metric = METRICS.get(name)
    if metric is None:
        return html.escape(name)
    better = f"{metric.direction} is better" if metric.ranks else f"ideal value {metric.ideal:g}"
    return f'<span title="{html.escape(metric.display)}; {better}">{html.escape(name)}</span>'


def _format(name: str) -> str:
    metric = METRICS.get(name)
    return metric.format if metric is not None else ".3f"


def _table(head, rows) -> str:
    """An HTML table; ``head`` and each row are lists of already-escaped cell strings."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _metrics_section(config: StudyConfig, summary: dict) -> str:
    metrics = list(next(iter(summary["strategies"].values())).keys())
    chosen = (summary.get("chosen") or {}).get("model")
    rows = []
    for group in ("strategies", "baselines"):
        kind = "fusion" if group == "strategies" else "single modality"
        for label, entry in summary[group].items():
            name = html.escape(label) + (" <b>(chosen)</b>" if label == chosen else "")
            rows.append([name, kind, *(_fmt(entry[m], _format(m)) for m in metrics)])
    title = "out-of-fold, 95% bootstrap intervals" if config.evaluation.bootstrap else "out-of-fold"
    head = ["model", "kind", *(_metric_head(m) for m in metrics)]
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
            html.escape(format_p(v["p_value"], v.get("n_boot", 0),
                                 v.get("p_value_upper_bound", False))) if finite else "—",
        ])  # fmt: skip
    return "<h2>Each strategy against the best single modality</h2>\n" + _table(
        ["strategy", "against", "difference", "95% interval", "p"], rows
    )


def explained_note(summary: dict) -> str:
    """A paragraph when the explained model is not the saved one (a single modality chosen:
    its model has no modalities to weigh, so the explanations are of the best strategy)."""
    chosen = (summary.get("chosen") or {}).get("model")
    explained = summary.get("explained_model")
    if not chosen or not explained or chosen == explained:
        return ""
    return (
        f"<p><b>Not the saved model:</b> this study saves {html.escape(chosen)} (see the "
        f"headline); the explanations in this report (contributions, their intervals, "
        f"interactions, drill-downs) are of {html.escape(explained)} fusion, the best "
        f"strategy, since a one-modality model has no modalities to weigh. Where the saved "
        "model is one table, 'Inside the tables' also explains it.</p>"
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
        + explained_note(summary)
        + "<p>A share is the modality's part of the mean |Shapley value|: how much the model's "
        "output moves with it (its size), not how useful it is for prediction. The last column "
        "is what the modality achieves on its own.</p>"
        + _table(
            ["modality", "mean |Shapley value|", "share", f"{html.escape(metric)} on its own"], rows
        )
    )


def _interactions_section(summary: dict) -> str:
    inter = summary.get("interactions") or {}
    if not inter:
        return ""
    rows = [
        [html.escape(m), "main effect", f"{v['mean_abs']:.4f}", f"{v['share']:.1%}", ""]
        for m, v in inter["main_effects"].items()
    ] + [
        [html.escape(" × ".join(p["modalities"])), "pair", f"{p['mean_abs_interaction']:.4f}",
         f"{p['share']:.1%}",
         "" if p.get("synergy") is None else f"{p['synergy']:.0%} / {1 - p['synergy']:.0%}"]
        for p in inter["pairs"]
    ]  # fmt: skip
    return (
        f"<h2>Modality interactions ({html.escape(inter['model'])} fusion)</h2>\n"
        "<p>Does a pair of modalities act <i>together</i>? A pair's interaction index is what "
        "the two add jointly beyond their separate effects (positive: synergy, negative: "
        "redundancy); a main effect is what a modality adds alone. Mean absolute values over "
        f"the out-of-fold rows; pairs carry {inter['interaction_share']:.1%} of the total. "
        "The last column splits a pair's rows by sign: synergy (the pair pushes further the "
        "way the two push alone) / redundancy (it takes back part of their separate effects; "
        "two modalities that carry the same information).</p>"
        + _table(["modalities", "kind", "mean |value|", "share of total",
                  "rows: synergy / redundancy"], rows)
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


def _drilldown_section(config: StudyConfig, summary: dict, figures) -> str:
    drill = summary.get("drilldown") or {}
    if not drill:
        return ""
    rows, absent = [], []
    for r in drill["records"]:
        if r.get("absent"):
            absent.append(f"{html.escape(r['modality'])} (row {r['row']})")
            continue
        top = _top_parts_text(r)
        resolved = f"{r['n_resolved']} of {r['n_parts']}" if "n_resolved" in r else ""
        rows.append([str(r["row"]), html.escape(r["reason"]), html.escape(r["modality"]),
                     html.escape(str(r["class"] or "")), str(r["n_parts"]),
                     "exact" if r["exact"] else f"sampled (max s.e. {r['max_error_std']:.4f})",
                     resolved, f"{r['modality_value']:+.4f}", top])  # fmt: skip
    text = (
        f"<h2>Inside the modalities: drill-down ({html.escape(drill['model'])} fusion, "
        f"fold {drill['fold']})</h2>\n<p>Which parts of an item carried its modality's "
        "contribution: each part's Owen value; the parts of a row add up to the modality's "
        "Shapley value with missing-modality removal (the column 'modality value'). Parts "
        "may be nested (a scan's 64 blocks in 8, an image's 16 cells in 4: Owen values over "
        "the hierarchy). Top parts: resolved ones first, then by |value|. A sampled part "
        "shows its standard error (s.e.); one marked <b>?</b> has a 95% interval that "
        "includes 0, so its value may be noise (an exact part is resolved unless it is 0); "
        "one marked <i>(negligible)</i> carries under 1% of the row's total |value| and never "
        "ranks above a part that matters. 'resolved' counts the parts that are both. A "
        "row whose parts carry under 0.01 (probability) in all is too small to drill. "
        "Scan figures show slices through the top-ranked block.</p>"
    ) + explained_note(summary)
    if config.explanation.removal != "missing":
        text += (
            f"<p>This study's contributions use {html.escape(config.explanation.removal)} "
            "removal, so a row's modality value here differs from its contribution above.</p>"
        )
    if not drill["text_shown"] and any(r["kind"] == "text" for r in drill["records"]):
        text += (
            "<p><b>Text withheld:</b> output.include_text is false, so each text part (a "
            "clause, a negation cue kept with its scope) is named by its kind and place only "
            "(e.g. 'a negated clause in sentence 2') and no highlighted text is drawn.</p>"
        )
    if drill["skipped"]:
        text += "<p>Not drilled: " + "; ".join(
            f"{html.escape(m)} ({html.escape(why)})" for m, why in drill["skipped"].items()
        ) + ".</p>"  # fmt: skip
    if absent:
        text += "<p>Absent from the row (no parts): " + ", ".join(absent) + ".</p>"
    text += _table(["row", "chosen as", "modality", "class explained", "parts", "computed",
                    "resolved", "modality value", "top parts"], rows)  # fmt: skip
    text += "".join(
        f"<figure>{_img(p)}<figcaption>{html.escape(t)}</figcaption></figure>" for t, p in figures
    )
    return text


def _top_parts_text(record: dict) -> str:
    """The 'top parts' cell of a drilled row: the parts, after a note when the row is too
    small to drill or none of its parts is resolved and material."""
    parts = ", ".join(_part_text(p, record["exact"]) for p in record["top_parts"])
    if record.get("too_small"):
        return (f"<i>too small to drill: the parts carry {record['abs_total']:.4f} in all "
                f"(&lt; 0.01)</i>; {parts}")  # fmt: skip
    if record.get("equal_split"):
        return (f"<i>every part has the same value: the model responds to the item being "
                f"there, not to which parts it holds</i>; {parts}")  # fmt: skip
    if record.get("n_resolved") == 0:
        return f"<i>no part resolved above noise</i>; {parts}"
    return parts


def _part_text(part: dict, exact: bool) -> str:
    """``name: value`` of a drill-down part, with its s.e. when sampled and ``?`` when its
    interval includes 0."""
    text = f"{html.escape(part['part'])}: {part['value']:+.4f}"
    if not exact and "error_std" in part:
        text += f" (s.e. {part['error_std']:.4f})"
    text += "" if part.get("resolved", True) else " <b>?</b>"
    return text + ("" if part.get("material", True) else " <i>(negligible)</i>")


def _headline_section(config: StudyConfig, summary: dict) -> str:
    from toolkit.datasets import dataset_info

    synthetic = dataset_info(config.data.source).synthetic
    banner = (
        '<p class="warn"><b>SYNTHETIC DATA.</b> These results describe a generated dataset, '
        "not patients or people.</p>"
        if synthetic
        else ""
    )
    if summary.get("quick"):
        banner = (
            f'<p class="warn"><b>{html.escape(summary["quick"].upper())}.</b> Rows, folds, '
            "resamples and encoders were cut to test the config (mmtk run --quick); no number "
            "here describes the study.</p>" + banner
        )
    verdict = (summary.get("headline") or {}).get("verdict", "")
    css = "good" if verdict == "helps" else "warn"
    return f'{banner}<p class="{css}">{html.escape(headline_text(summary))}</p>'


def _data_section(config: StudyConfig, summary: dict, n_groups) -> str:
    facts = card_facts(config.data.source)
    rows = [[html.escape(k.replace("_", " ")), html.escape(v)] for k, v in facts.items()]
    out = "<h2>Data (from the data card)</h2>\n" + _table(["field", "value"], rows)
    out += _prevalence_line(summary)
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
            row = [str(f["fold"]), str(f["n"])] + ([str(f["groups"])] if "groups" in f else [])
            if "class_counts" in f:
                row += [str(v) for v in f["class_counts"].values()]
                row += [f"{f['prevalence']:.1%}"] if f.get("prevalence") is not None else []
            else:
                row += [f"{f['target_mean']:.3f}"]
            body.append(row)
        out += (
            "<h3>Test rows per fold (prevalence per fold)</h3><p>Folds are numbered from 0 "
            "here and everywhere in the run folder: metrics.json, predictions.csv, "
            "folds/fold_0.json and the run's progress lines.</p>" + _table(head, body)
        )
    return out + _missingness_table(summary)


def _prevalence_line(summary: dict) -> str:
    """One line: the whole study's prevalence (binary) or class shares (multi-class)."""
    prev = summary.get("prevalence")
    if not prev:
        return ""
    n = prev["n"]
    if "prevalence" in prev:
        c = prev["positive_class"]
        text = (f"Prevalence (all {n} rows): {prev['prevalence']:.1%} "
                f"({prev['class_counts'][c]} of {n} rows are class {c}).")  # fmt: skip
    else:
        shares = ", ".join(f"{c} {v:.1%}" for c, v in prev["class_shares"].items())
        text = f"Class shares (all {n} rows): {shares}."
    return f'<p class="prevalence">{html.escape(text)}</p>'


def _missingness_table(summary: dict) -> str:
    miss = summary.get("missingness")
    if not miss:
        return ""
    n = summary["n_samples"]
    rows = [
        [html.escape(m), f"{v:.1%}", str(round(v * n))] for m, v in miss["missing_share"].items()
    ]
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
    return f"<h2>Missing-modality robustness ({metric}, 95% intervals)</h2>\n" + _table(
        ["strategy", "removed", "all modalities", "without it", "drop (paired)"], rows
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
    size_name = (
        "mean set size"
        if "mean_size" in next(iter(next(iter(conformal["strategies"].values())).values()))
        else "mean interval width"
    )
    return (
        f"<h2>Conformal coverage per availability pattern (asked: {target:.0%})</h2>\n"
        "<p>Coverage: share of test rows whose set / interval holds the true value; ⚠ marks a "
        "pattern more than 5 points off with 30+ rows. Uninformative: rows whose set holds "
        "every class or whose interval is infinite: the model is too unsure of the row to rule "
        "out any class at this confidence, or the row's pattern had too few calibration rows; "
        "they are covered by construction, so a coverage reached through them says nothing. "
        "The row 'all' pools every pattern (one pattern: the same numbers).</p>"
        + _table(["strategy", "pattern", "rows", "coverage", size_name, "uninformative"], rows)
    )


def _limitations_section(config: StudyConfig, summary: dict, n_groups) -> str:
    items = "".join(
        f"<li>{html.escape(t)}</li>" for t in limitations(config, summary, n_groups=n_groups)
    )
    return f"<h2>Limitations</h2><ul>{items}</ul>"


def _tripod_section(config: StudyConfig, summary: dict) -> str:
    rows = [
        [html.escape(t), html.escape(s), html.escape(w)]
        for t, s, w in tripod_checklist(config, summary)
    ]
    return (
        "<h2>TRIPOD+AI checklist</h2><p>Topics of the TRIPOD+AI statement (Collins et al., BMJ "
        "2024;385:e078378) and where this report covers them; check the official checklist "
        "before submission.</p>" + _table(["topic", "status", "where"], rows)
    )


#: Drill-down kinds whose figures draw the row itself (a picture, a scan slice, a clip's
#: waveform): drawn only with ``output.include_images: true``.
PICTURE_KINDS = ("image", "scan", "audio")


def _privacy_section(config: StudyConfig, examples, kinds: dict, grouped_by=None) -> str:
    """What the report holds of the rows themselves: the raw text of each text modality
    (``output.include_text``), pictures of rows (``output.include_images``), named by
    modality, and, for a study with groups (``grouped_by``), the group identifiers
    (``output.include_group_ids``); ``kinds`` is {modality: kind} (:func:`modality_kinds`)."""
    out, text = config.output, [n for n, k in kinds.items() if k == "text"]
    pictures = [n for n, k in kinds.items() if k in PICTURE_KINDS]
    parts = []
    if text:
        names = ", ".join(f"'{n}'" for n in text)
        parts.append(
            f"Raw text of {names} is included on request (output.include_text)."
            if out.include_text
            else f"Raw text of {names} is not included in this report (output.include_text: "
            "false; words are shown by position only)."
        )
    if pictures:
        names = ", ".join(f"'{n}'" for n in pictures)
        parts.append(
            f"Pictures of rows ({names}) are shown in the drill-down figures "
            "(output.include_images: true; set it to false to withhold them)."
            if out.include_images
            else f"Pictures of rows ({names}) are withheld (output.include_images: false); "
            "their parts are listed by name only."
        )
    if grouped_by:
        column = config.data.groups
        ids = f"Group identifiers (the '{column}' column)" if column else "Group identifiers"
        word = pseudonym_word(column or "group")
        parts.append(
            f"{ids} are shown in this report and metrics.json (output.include_group_ids: "
            "true; set it to false to show pseudonyms)."
            if out.include_group_ids
            else f"{ids} are withheld from this report and metrics.json "
            f"(output.include_group_ids: false): groups are named '{word} 1', '{word} 2', ... "
            "in the order of their first row in the data; predictions.csv keeps each row's "
            "group as given."
        )
    html_text = html.escape(" ".join(parts))
    if examples:
        rows = [[str(e["row"]), html.escape(e["modality"]), f"{e['contribution']:+.3f}",
                 html.escape(e["text"])] for e in examples]  # fmt: skip
        html_text += "<h3>Texts that contributed most</h3>" + _table(
            ["row", "modality", "contribution", "text"], rows
        )
    return html_text


def modality_kinds(modalities) -> dict[str, str]:
    """{modality: the kind of its parts ("text", "image", "audio", "scan"), or "table" /
    "features"} from the encoders of ``(name, encoder, columns)`` triples."""
    kinds = {}
    for name, encoder, _ in modalities:
        masker = encoder.masker() if callable(getattr(encoder, "masker", None)) else None
        if masker is not None:
            kinds[name] = masker.kind
        else:
            kinds[name] = "table" if getattr(encoder, "parts_are_features", False) else "features"
    return kinds


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}figure{display:inline-block;margin:8px}
img{max-width:520px}small{color:#666}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:8px}
.good{background:#e6f4ea;border-left:4px solid #2e7d32;padding:8px}"""


def write_report(
    run: Path, config: StudyConfig, summary: dict, *, figures, text_examples=(), grouped_by=None,
    n_groups=None, drilldown_figures=(), modality_kinds=None,
) -> Path:  # fmt: skip
    """A self-contained report.html (figures embedded as PNG data URIs).

    Sections: headline (chosen model against the best single modality), data card,
    prevalence per fold and missingness, Methods, metrics, comparisons, robustness,
    calibration and conformal tables, contributions, interactions, contribution intervals,
    drill-down (with ``drilldown_figures``, [(title, path)] from :func:`drilldown_figures`),
    the labs (Owen values per column of each table), limitations, TRIPOD+AI checklist,
    privacy, figures. ``grouped_by`` is what the folds were grouped by (see
    :func:`methods_text`), ``n_groups`` how many groups there are, ``modality_kinds``
    {modality: kind} (:func:`modality_kinds`; names the text and picture modalities in the
    privacy note).
    """
    name = html.escape(config.name)
    figs = "".join(
        f"<figure>{_img(p)}<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in figures.items()
    )
    sections = [
        _headline_section(config, summary),
        _data_section(config, summary, n_groups),
        f"<h2>Methods</h2><p>{methods_text(config, summary, grouped_by=grouped_by)}</p>"
        f"<p>{_privacy_section(config, text_examples, modality_kinds or {}, grouped_by)}</p>"
        + vocabulary_paragraph(config, summary),
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
        labs_section(summary),
        _limitations_section(config, summary, n_groups),
        _tripod_section(config, summary),
        f"<h2>Figures</h2>{figs}",
    ]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name} - study report</title>
<style>{STYLE}</style></head><body>
<h1>{name}</h1>
<p>Task: {html.escape(config.task)}; primary metric {html.escape(summary["primary_metric"])}.</p>
{chr(10).join(x for x in sections if x)}
</body></html>"""
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
