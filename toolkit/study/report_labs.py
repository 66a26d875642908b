"""The report's lab section: exact Owen values of the columns (or column groups) of each
tabular modality (:mod:`toolkit.study.labs`), one table per modality and the top columns of
the rows the drill-down shows."""

from __future__ import annotations

import html

from toolkit.study.drilldown import TOO_SMALL


def _table(head, rows) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _modality_table(name: str, stats: dict) -> str:
    groups = stats.get("groups") or {}
    rows = []
    for player in stats["ranking"]:
        label = html.escape(player)
        if player in groups:
            label += f" <small>({html.escape(', '.join(groups[player]))})</small>"
        rows.append([label, f"{stats['mean_abs'][player]:.4f}", f"{stats['share'][player]:.1%}",
                     f"{stats['mean'][player]:+.4f}",
                     f"{stats['ranked_first'][player]:.0%}"])  # fmt: skip
    head = ["column" + (" or group" if groups else ""), "mean |Owen value|", "share",
            "mean value", "rows where it ranks first"]  # fmt: skip
    text = f"<h3>{html.escape(name)} ({stats['n_rows']} rows)</h3>"
    carried = sum(stats["mean_abs"].values())
    if carried < TOO_SMALL:
        text += (
            f"<p><i>Too small to rank: the columns carry {carried:.4f} in all on average "
            f"(&lt; {TOO_SMALL:g}), so their shares below describe noise in a modality the "
            "model barely uses.</i></p>"
        )
    text += _table(head, rows)
    if stats.get("presence_mean") is not None:
        text += (
            f"<p>Having {html.escape(name)} at all (with other rows' values): "
            f"{stats['presence_mean']:+.4f} on average, not in the shares above.</p>"
        )
    return text


def _body(labs: dict) -> str:
    """The tables of one model's lab drill-down."""
    text = "".join(_modality_table(n, s) for n, s in labs["modalities"].items())
    if labs.get("rows"):
        rows = [
            [str(r["row"]), html.escape(r["modality"]), f"{r['modality_value']:+.4f}",
             f"{r.get('presence_value', 0.0):+.4f}",
             ", ".join(f"{html.escape(p['part'])}: {p['value']:+.4f}" for p in r["top_parts"])]
            for r in labs["rows"]
        ]  # fmt: skip
        text += "<h3>The drilled rows</h3>" + _table(
            ["row", "modality", "modality value", "of which presence", "top columns"], rows
        )
    if labs.get("skipped"):
        text += "<p>Not drilled: " + "; ".join(
            f"{html.escape(m)} ({html.escape(why)})" for m, why in labs["skipped"].items()
        ) + ".</p>"  # fmt: skip
    return text


def labs_section(summary: dict) -> str:
    """The HTML of ``summary["labs"]`` ('' when the study has no tabular modality): the
    explained strategy's tables, then (``"saved"``) those of the saved model when it is one
    table alone."""
    labs = summary.get("labs") or {}
    saved = labs.get("saved") or {}
    if not labs.get("modalities") and not saved:
        return ""
    first = labs if labs.get("modalities") else saved
    single = first["model"].endswith(" only")
    model = f"{first['model']}, the saved model" if single else f"{first['model']} fusion"
    text = (
        f"<h2>Inside the tables: each column's share ({html.escape(model)}, "
        f"fold {first['fold']})</h2>\n<p>Exact Owen values of the columns of each tabular "
        "modality on every test row of the fold: a column left out takes other test rows' "
        "values (the output averaged over them), so a normal value counts against what high "
        "values support and a column the model does not use gets about 0. A row's presence "
        "value (having the table at all, with other rows' values) plus its column values add "
        "up to the modality's Shapley value with missing-modality removal. Columns a config groups "
        "(column_groups) count as one. Ranked by mean |value|; the last column is how often "
        "the column has the row's largest |value|.</p>"
    )
    text += _body(first)
    if saved and first is not saved:
        text += (
            f"<h3>The saved model: {html.escape(saved['model'])}</h3><p>The same, for the "
            "model this study saves (its table alone).</p>" + _body(saved)
        )
    return text
