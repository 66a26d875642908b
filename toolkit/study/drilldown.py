"""The study report's drill-down: for a few test rows of the last fold, the Owen values of
the parts of each modality that can be split (words of a text, cells of an image, time
segments of a clip, blocks of a scan), from :func:`toolkit.explain.drill_down`.

The explained strategy is refitted on the last fold's training rows, as the fold fitted it
(same seed, encoders, labels and groups: the same model, whose out-of-fold outputs picked
the rows), because the drill-down re-encodes masked raw items with the model's encoders.
Rows are chosen deterministically: the most confident correct and the most confident
incorrect test rows, alternately (binary: the true positives first among the correct rows,
as the positive class is explained; regression: the best and the worst predicted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.study.orchestration import LastFoldModels

#: Random orders walked per sampled row (items with more than ``drilldown_max_parts`` parts).
N_PERMUTATIONS = 16


@dataclass
class DrillDown:
    """The drill-down of one strategy on some test rows of one fold."""

    model: str
    fold: int
    rows: list  # study row positions
    reasons: list  # why each row was chosen
    classes: list | None  # the class explained for each row (classification), as text
    codes: list | None  # its position among the classes (multi-class only; binary: None)
    explanations: dict = field(default_factory=dict)  # modality -> shap.Explanation
    kinds: dict = field(default_factory=dict)  # modality -> "text", "image", "audio", "scan"
    skipped: dict = field(default_factory=dict)  # modality -> why it was not drilled
    encoder_calls: int = 0
    masking: dict = field(default_factory=dict)  # modality -> how a part is removed


def drillable(modalities) -> tuple[dict, dict]:
    """``({name: kind}, {name: reason})``: the modalities the drill-down can split (one
    column read by a text, image, audio or scan encoder that does not learn from the
    labels) and why each other one is left out."""
    kinds, skipped = {}, {}
    for name, encoder, cols in modalities:
        masker = encoder.masker() if callable(getattr(encoder, "masker", None)) else None
        if masker is None and getattr(encoder, "parts_are_features", False):
            skipped[name] = "a table: drilled column by column in 'Inside the tables'"
        elif masker is None:
            skipped[name] = f"{type(encoder).__name__} has no parts to drill into"
        elif isinstance(cols, list | tuple) and len(cols) != 1:
            skipped[name] = f"reads {len(cols)} columns (the drill-down splits one item per row)"
        elif getattr(encoder, "supervised", False):
            skipped[name] = (
                f"{type(encoder).__name__} learns from the labels (its head outputs, not its "
                "features, feed the fusion; the drill-down re-encodes features)"
            )
        else:
            kinds[name] = masker.kind
    return kinds, skipped


def pick_rows(output: np.ndarray, y: np.ndarray, classification: bool, n: int, *,
              positive: int | None = None) -> list:  # fmt: skip
    """``[(position, reason)]``: ``n`` positions into ``output`` / ``y``, alternating the
    most confident correct and the most confident incorrect rows (classification), or the
    best and the worst predicted rows (regression); ties broken by position. With
    ``positive`` (a binary task whose positive class is explained), the correct rows of that
    class come first ("most confident true positive": why the model called a case
    positive), then the other correct rows."""
    order = np.arange(len(y))
    if classification:
        predicted, confidence = output.argmax(axis=1), output.max(axis=1)
        correct = predicted == y
        first = order[correct][np.argsort(-confidence[correct], kind="stable")]
        second = order[~correct][np.argsort(-confidence[~correct], kind="stable")]
        names = ("most confident correct", "most confident incorrect")
        if positive is not None and np.any(y[first] == positive):
            first = np.concatenate([first[y[first] == positive], first[y[first] != positive]])
            names = ("most confident true positive", names[1])
    else:
        error = np.abs(output - y)
        first = order[np.argsort(error, kind="stable")]
        second = order[np.argsort(-error, kind="stable")]
        names = ("best predicted", "worst predicted")
    chosen, seen = [], set()
    for k in range(max(len(first), len(second))):
        for ranked, name in ((first, names[0]), (second, names[1])):
            if k < len(ranked) and ranked[k] not in seen and len(chosen) < n:
                seen.add(ranked[k])
                if name.endswith("true positive") and y[ranked[k]] != positive:
                    name = "most confident correct"  # the true positives ran out
                chosen.append((int(ranked[k]), name))
    return chosen


def run_drilldown(plan, label: str, results, splits, *, n_rows: int, max_parts: int,
                  cache_dir=None, models=None) -> DrillDown | None:  # fmt: skip
    """Drill into the modalities of strategy ``label`` on ``n_rows`` test rows of the last
    fold (None when no modality can be split, or ``n_rows`` is 0)."""
    from toolkit.explain import drill_down, drill_down_cost

    kinds, skipped = drillable(plan.modalities)
    if n_rows < 1 or not kinds:
        return None
    fold = len(splits) - 1
    test = np.asarray(splits[fold][1])
    positive = 1 if plan.classification and plan.n_classes == 2 else None
    picked = pick_rows(results.oof[label][test], plan.y[test], plan.classification, n_rows,
                       positive=positive)  # fmt: skip
    rows = [int(test[p]) for p, _ in picked]
    classes = codes = None  # the class whose probability is explained in each row
    if plan.classification and plan.n_classes == 2:
        classes = [str(results.classes[1])] * len(rows)  # binary: the positive class
    elif plan.classification:
        codes = [int(c) for c in results.oof[label][rows].argmax(axis=1)]  # the predicted one
        classes = [str(results.classes[c]) for c in codes]
    out = DrillDown(label, fold, rows, [r for _, r in picked], classes, codes, kinds=kinds,
                    skipped=skipped)  # fmt: skip
    out.masking = {name: masking_phrase(encoder.masker())
                   for name, encoder, _ in plan.modalities if name in kinds}  # fmt: skip
    model = (models or LastFoldModels(plan, results, splits, cache_dir))(label)
    frame = plan.frame.iloc[rows]
    for name in kinds:
        explanation = drill_down(
            model, frame, name, max_parts=max_parts, n_permutations=N_PERMUTATIONS,
            random_state=plan.seed,
        )  # fmt: skip
        out.explanations[name] = explanation
        calls = getattr(explanation, "encoder_calls", None)  # drill_down counts its own
        for i in range(len(rows)):
            d = len(np.asarray(explanation.values[i]))
            if calls is not None:
                out.encoder_calls += int(calls[i])
            elif frame_has(explanation, i) and d:
                out.encoder_calls += drill_down_cost(
                    d, len(plan.names), max_parts=max_parts, n_permutations=N_PERMUTATIONS
                )["encoder_calls"]
    return out


_FILLS = {"mean": "the item's mean", "blur": "a blur of the item itself",
          "floor": "noise at the clip's noise floor"}  # fmt: skip
_PARTS = {"text": "clauses", "image": "image cells", "audio": "time segments",
          "scan": "scan blocks"}  # fmt: skip


def masking_phrase(masker) -> str:
    """How ``masker`` (an encoder's default drill-down masker) removes a part, for the
    report's Methods: read from the masker, so the text follows the code."""
    kind = getattr(masker, "kind", "")
    parts = _PARTS.get(kind, f"{kind} parts")
    fill = getattr(masker, "fill", None)
    if fill is None:
        return f"{parts} are removed"
    taken = _FILLS.get(fill, f"the constant {fill!r}") if isinstance(fill, str) else (
        f"the constant {fill:g}")  # fmt: skip
    return f"masked {parts} take {taken}"


def frame_has(explanation, i: int) -> bool:
    """Whether row ``i`` of a drill-down has the modality (its item was read)."""
    return explanation.display_data[i] is not None


def part_values(explanation, i: int, class_position: int | None) -> np.ndarray:
    """Row ``i``'s part values as a 1-D array (one class for multi-class)."""
    values = np.asarray(explanation.values[i], dtype=float)
    return values[:, class_position] if values.ndim == 2 else values


def part_errors(explanation, i: int, class_position: int | None) -> np.ndarray:
    errors = getattr(explanation, "error_std", None)
    if errors is None:  # exact values without a standard error (explain_features)
        return np.zeros(len(part_values(explanation, i, class_position)))
    errors = np.asarray(errors[i], dtype=float)
    return errors[:, class_position] if errors.ndim == 2 else errors


def part_resolved(explanation, i: int, class_position: int | None) -> np.ndarray:
    """Whether each of row ``i``'s parts is resolved (its interval excludes 0; computed
    exactly, its value is not 0)."""
    done = getattr(explanation, "resolved", None)
    if done is None:
        return part_values(explanation, i, class_position) != 0
    done = np.asarray(done[i], dtype=bool)
    return done[:, class_position] if done.ndim == 2 else done


def row_exact(explanation, i: int) -> bool:
    """Whether row ``i``'s values were computed exactly (not sampled)."""
    exact = getattr(explanation, "exact", None)
    return True if exact is None else bool(exact[i])


def withheld_names(explanation, i: int) -> list[str]:
    """Names of row ``i``'s text parts that reveal no words: the masker's (``Clauses``: "a
    negated clause in sentence 2"), or the part's position ("word 3") where the parts are
    named by their words (``Words``)."""
    data = [str(w) for w in explanation.data[i]]
    names = [str(w) for w in explanation.feature_names[i]]
    return [f"word {j + 1}" for j in range(len(data))] if names == data else names


#: A classifier's row whose parts carry less than this (probability) in all is too small to
#: drill: its parts are listed, but the report says so instead of ranking them.
TOO_SMALL = 0.01


def _row_record(dd: DrillDown, name: str, explanation, i: int, *, include_text: bool,
                top: int) -> dict:  # fmt: skip
    """One drilled row of one modality: the sum, the counts and the ``top`` parts (resolved
    and material first, :func:`toolkit.explain.hierarchy.rank`)."""
    from toolkit.explain.hierarchy import material, rank

    k = None if dd.codes is None else dd.codes[i]
    values = part_values(explanation, i, k)
    errors = part_errors(explanation, i, k)
    if dd.kinds[name] == "text":
        labels = [str(w) for w in explanation.data[i]]
        if not include_text:
            labels = withheld_names(explanation, i)
    else:
        labels = [str(lbl) for lbl in explanation.feature_names]
    done, big = part_resolved(explanation, i, k), material(values)
    total = float(np.abs(values).sum())
    return {
        "row": dd.rows[i], "modality": name, "kind": dd.kinds[name],
        "reason": dd.reasons[i],
        "class": None if dd.classes is None else dd.classes[i],
        "n_parts": len(values), "exact": row_exact(explanation, i),
        "n_resolved": int((done & big).sum()),
        "modality_value": float(values.sum()),
        "abs_total": total,
        "too_small": dd.classes is not None and total < TOO_SMALL,
        "equal_split": bool(len(values) > 1 and total > 0
                            and np.ptp(values) <= 1e-6 * np.abs(values).max()),  # fmt: skip
        "max_error_std": float(errors.max()) if len(errors) else 0.0,
        "top_parts": [{"part": labels[j], "value": float(values[j]),
                       "error_std": float(errors[j]), "resolved": bool(done[j]),
                       "material": bool(big[j]),
                       "share_of_abs": float(abs(values[j]) / (total or 1.0))}
                      for j in rank(values, done)[:top]],
    }  # fmt: skip


def summarize_drilldown(dd: DrillDown | None, *, include_text: bool, max_parts: int,
                        top: int = 5) -> dict:  # fmt: skip
    """The drill-down's numbers for ``metrics.json`` and the report: per drilled row and
    modality, the parts, the sum (the modality's Shapley value under missing-modality
    removal) and the ``top`` parts, each with its standard error, its ``resolved`` mark
    (95% interval excludes 0) and its ``material`` mark (>= 1% of the row's total |value|),
    resolved material parts first, each set by |value|; ``n_resolved`` counts the resolved
    material parts and ``too_small`` marks a classifier's row whose parts carry less than
    ``TOO_SMALL`` in all. Unless ``include_text``, text parts are named without their words
    (:func:`withheld_names`)."""
    if dd is None:
        return {}
    records = []
    for name, explanation in dd.explanations.items():
        for i, row in enumerate(dd.rows):
            if not frame_has(explanation, i):
                records.append({"row": row, "modality": name, "kind": dd.kinds[name],
                                "reason": dd.reasons[i], "absent": True})  # fmt: skip
                continue
            records.append(_row_record(dd, name, explanation, i, include_text=include_text,
                                       top=top))  # fmt: skip
    return {
        "model": dd.model,
        "fold": dd.fold,
        "rows": dd.rows,
        "reasons": dd.reasons,
        "max_parts": max_parts,
        "n_permutations": N_PERMUTATIONS,
        "encoder_calls": dd.encoder_calls,
        "text_shown": include_text,
        "skipped": dd.skipped,
        "masking": dd.masking,
        "records": records,
    }
