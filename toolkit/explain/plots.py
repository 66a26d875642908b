"""Figures of the explanation extensions: interaction heatmap, interval error bars and the
drill-down views (highlighted words, image heatmap, segment bars over a waveform, scan
slices). Each returns the saved path when ``path`` is given, else the matplotlib Figure."""

from __future__ import annotations

import re

import numpy as np

from toolkit.explain.drilldown import rank_parts
from toolkit.explain.interactions import interaction_summary
from toolkit.explain.modality import class_position
from toolkit.explain.parts import cells as _cells

_CMAP = "RdBu_r"  # red: pushes the output up; blue: down


def _finish(fig, path):
    if path is None:
        return fig
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _figure(figsize):
    import matplotlib.pyplot as plt  # the caller's backend: inline in notebooks

    return plt.subplots(figsize=figsize)


def plot_interactions(explanation, path=None, class_index=None):
    """Heatmap of mean |interaction value| between modalities (diagonal: main effects).

    Parameters
    ----------
    explanation : shap.Explanation from :func:`toolkit.explain.interaction_values`
    path : str or path, optional
        Where to save a PNG; without it the Figure is returned.
    class_index : int, str or None
        Multi-class: one class (position or name); None sums over classes.
    """
    table = interaction_summary(explanation, class_index=class_index)
    M = len(table)
    fig, ax = _figure((1.2 * M + 2.5, 1.0 * M + 1.8))
    image = ax.imshow(table.to_numpy(), cmap="Purples", vmin=0)
    ax.set_xticks(range(M), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(M), table.index)
    top = float(table.to_numpy().max()) or 1.0
    for a in range(M):
        for b in range(M):
            value = table.iat[a, b]
            colour = "white" if value > 0.6 * top else "black"
            ax.text(b, a, f"{value:.3g}", ha="center", va="center", color=colour, fontsize=9)
    fig.colorbar(image, ax=ax, label="mean |interaction value|")
    ax.set_title("Modality interactions (diagonal: main effects)")
    return _finish(fig, path)


def plot_intervals(table, path=None, statistic="share"):
    """Error bars of one statistic per modality from :func:`contribution_intervals` or
    :func:`refit_intervals` (or both, concatenated: one bar per ``over``)."""
    rows = table[table["statistic"] == statistic]
    if rows.empty:
        raise ValueError(
            f"the table has no rows for statistic {statistic!r}; it has "
            f"{sorted(set(table['statistic']))}"
        )
    groups = list(dict.fromkeys(rows["over"]))
    modalities = list(dict.fromkeys(rows["modality"]))
    fig, ax = _figure((6.0, 0.5 * len(modalities) * len(groups) + 1.5))
    height = 0.8 / len(groups)
    for g, over in enumerate(groups):
        part = rows[rows["over"] == over].set_index("modality").loc[modalities]
        y = np.arange(len(modalities)) + (g - (len(groups) - 1) / 2) * height
        err = np.vstack([part["estimate"] - part["low"], part["high"] - part["estimate"]])
        level = part["confidence_level"].iloc[0]
        label = f"{level:.0%} CI over {over} (n={part['n'].iloc[0]})"
        ax.errorbar(
            part["estimate"], y, xerr=np.clip(err, 0, None), fmt="o", capsize=4, label=label
        )
    ax.set_yticks(range(len(modalities)), modalities)
    ax.invert_yaxis()
    names = {
        "share": "modality share",
        "mean_abs": "mean |Shapley value|",
        "mean": "mean Shapley value",
    }
    ax.set_xlabel(names.get(statistic, statistic))
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def _row(explanation, row: int, class_index):
    """One row's part values as a 1-D array (a class chosen for multi-class: by default the
    class the model gives the highest output for this row)."""
    n = len(explanation.values)
    if not isinstance(row, int | np.integer) or not -n <= row < n:
        raise IndexError(f"row {row!r} is out of range for an explanation of {n} rows")
    values = np.asarray(explanation.values[row], dtype=float)
    if values.ndim == 2:
        if class_index is None:
            output = np.asarray(explanation.base_values[row]) + values.sum(axis=0)
            k = int(np.argmax(output))
        else:
            k = class_position(explanation, class_index)
        return values[:, k]
    return values


def _norm(values):
    from matplotlib.colors import TwoSlopeNorm

    top = float(np.abs(values).max()) if np.size(values) else 0.0
    top = top or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-top, vmax=top)


def _item(explanation, row: int, what: str):
    display = getattr(explanation, "display_data", None)
    item = None if display is None else display[row]
    if item is None:
        raise ValueError(
            f"row {row} has no {what} to draw (the modality is absent from it, or the "
            "explanation does not come from toolkit.explain.drill_down)"
        )
    return item


def plot_text_parts(explanation, row=0, path=None, class_index=None, width=70):
    """The parts of one row's text (clauses, or words with ``Words()``), each highlighted by
    its value (red up, blue down).

    ``explanation`` comes from :func:`toolkit.explain.drill_down` on a text modality.
    ``width`` is the line length in characters.
    """
    import matplotlib.pyplot as plt

    _item(explanation, row, "text")
    values = _row(explanation, row, class_index)
    words = [str(w) for w in explanation.data[row]]
    lines, line, used = [], [], 0
    for word, value in zip(words, values, strict=True):
        if line and used + len(word) > width:
            lines.append(line)
            line, used = [], 0
        line.append((word, value, used))
        used += len(word) + 1
    if line:
        lines.append(line)
    norm, cmap = _norm(values), plt.get_cmap(_CMAP)
    fig, ax = _figure((0.11 * width + 1.5, 0.35 * max(len(lines), 1) + 0.9))
    ax.set_xlim(0, width)
    ax.set_ylim(len(lines) + 0.5, -0.5)
    ax.axis("off")
    for y, entries in enumerate(lines):
        for word, value, x in entries:
            ax.text(
                x, y, word, family="monospace", fontsize=10, va="center",
                bbox={"facecolor": cmap(norm(value)), "edgecolor": "none", "pad": 1.5},
            )  # fmt: skip
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.08, pad=0.02, label="part value")
    ax.set_title(f"row {row}: text part contributions (sum {values.sum():+.3g})", fontsize=10)
    return _finish(fig, path)


def _grid_shape(labels, pattern: str, what: str) -> tuple[int, ...]:
    found = [re.fullmatch(pattern, str(label)) for label in labels]
    if not found or not all(found):
        raise ValueError(
            f"the explanation's feature names {list(labels)[:4]} are not {what} labels from "
            "toolkit.explain.drill_down"
        )
    return tuple(
        max(int(g) for g in column) + 1 for column in zip(*(f.groups() for f in found), strict=True)
    )


def plot_image_parts(explanation, row=0, path=None, class_index=None, alpha=0.55):
    """One row's image with its grid cells coloured by their values (red up, blue down).

    ``explanation`` comes from :func:`toolkit.explain.drill_down` on an image modality.
    """
    import matplotlib.pyplot as plt

    values = _row(explanation, row, class_index)
    image = np.asarray(_item(explanation, row, "image"))
    rows, cols = _grid_shape(explanation.feature_names, r"r(\d+)c(\d+)", "image grid")
    heat = np.zeros(image.shape[:2])
    for cell, value in zip(_cells(image.shape[:2], (rows, cols), "image"), values, strict=True):
        heat[cell] = value
    norm = _norm(values)
    fig, ax = _figure((5.0, 4.2))
    shown = image[..., 0] if image.shape[2] == 1 else image
    ax.imshow(shown, cmap="gray" if image.shape[2] == 1 else None, vmin=0, vmax=1)
    overlay = ax.imshow(heat, cmap=_CMAP, norm=norm, alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(overlay, ax=ax, label="cell value")
    ax.set_title(f"row {row}: image cells (sum {values.sum():+.3g})", fontsize=10)
    plt.tight_layout()
    return _finish(fig, path)


def plot_audio_parts(explanation, row=0, path=None, class_index=None):
    """One row's waveform with a bar per time segment showing its value.

    ``explanation`` comes from :func:`toolkit.explain.drill_down` on an audio modality.
    """
    import matplotlib.pyplot as plt

    values = _row(explanation, row, class_index)
    wave, rate = _item(explanation, row, "clip")
    spans = []
    for label in explanation.feature_names:
        found = re.fullmatch(r"([\d.]+)-([\d.]+) s", str(label))
        if found is None:
            raise ValueError(
                f"feature name {label!r} is not a time segment label from toolkit.explain.drill_down"
            )
        spans.append((float(found.group(1)), float(found.group(2))))
    fig, ax = _figure((7.0, 3.2))
    t = np.arange(len(wave)) / rate
    ax.plot(t, wave, color="0.6", linewidth=0.6)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("waveform")
    bars = ax.twinx()
    norm, cmap = _norm(values), plt.get_cmap(_CMAP)
    for (start, stop), value in zip(spans, values, strict=True):
        bars.bar(start, value, width=stop - start, align="edge", color=cmap(norm(value)), alpha=0.8)
    bars.axhline(0.0, color="black", linewidth=0.6)
    top = float(np.abs(values).max()) or 1.0
    bars.set_ylim(-1.1 * top, 1.1 * top)
    bars.set_ylabel("segment value")
    ax.set_title(f"row {row}: time segments (sum {values.sum():+.3g})", fontsize=10)
    return _finish(fig, path)


def plot_scan_parts(explanation, row=0, path=None, class_index=None, alpha=0.5):
    """Three orthogonal slices of one row's volume through the centre of its top-ranked
    block (:func:`~toolkit.explain.rank_parts`: resolved blocks first, then by |value|),
    with the blocks' values overlaid and the top block outlined.

    ``explanation`` comes from :func:`toolkit.explain.drill_down` on a scan modality.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    values = _row(explanation, row, class_index)
    volume = np.asarray(_item(explanation, row, "volume"))
    counts = _grid_shape(explanation.feature_names, r"z(\d+)y(\d+)x(\d+)", "scan block")
    blocks = _cells(volume.shape, counts, "scan volume")
    heat = np.zeros(volume.shape)
    for block, value in zip(blocks, values, strict=True):
        heat[block] = value
    k = None if class_index is None else class_position(explanation, class_index)
    top = int(rank_parts(explanation, row, k)[0])
    box = blocks[top]
    through = [(s.start + s.stop - 1) // 2 for s in box]
    norm = _norm(values)
    fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.6))
    for axis, ax in enumerate(axes):
        index = [slice(None)] * 3
        index[axis] = through[axis]
        ax.imshow(volume[tuple(index)], cmap="gray", vmin=0, vmax=1)
        overlay = ax.imshow(heat[tuple(index)], cmap=_CMAP, norm=norm, alpha=alpha)
        rows_, cols_ = [box[a] for a in range(3) if a != axis]
        ax.add_patch(Rectangle((cols_.start - 0.5, rows_.start - 0.5), cols_.stop - cols_.start,
                               rows_.stop - rows_.start, fill=False, edgecolor="yellow",
                               linewidth=1.5))  # fmt: skip
        ax.set_title(f"axis {axis}, slice {through[axis]}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(overlay, ax=list(axes), label="block value", shrink=0.8)
    label = explanation.feature_names[top]
    fig.suptitle(
        f"row {row}: scan blocks (sum {values.sum():+.3g}); slices through the top block "
        f"{label} ({values[top]:+.3g}, outlined)",
        fontsize=10,
    )
    return _finish(fig, path)
