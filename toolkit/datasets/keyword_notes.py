"""``make_keyword_notes``: short synthetic clinical notes whose label is one keyword's finding,
affirmed or negated, at a random place: a known answer for text drill-down.

Not a registered dataset (no data card): a small seeded generator for tests of
:func:`toolkit.explain.drill_down` with :class:`~toolkit.explain.Clauses`, in the spirit of
scikit-learn's ``make_classification``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from toolkit.datasets._common import check_int

#: The keyword's sentence when the finding is present (label 1) ...
AFFIRMED = (
    "Focal {} is present.", "There is {} in the left lower lobe.", "{} noted.",
    "Findings consistent with {}.", "New {} at the right base.",
)  # fmt: skip
#: ... and when it is absent (label 0): its negated forms.
NEGATED = (
    "No {}.", "No evidence of focal {}.", "Negative for {}.", "Without {}.",
    "There is no {} in the left lower lobe.",
)  # fmt: skip
#: Sentences that carry nothing: neutral statements and other findings, some negated, so
#: that neither a negation cue nor a finding word alone tells the label.
FILLER = (
    "Patient seen on the ward.", "Heart size is normal.", "No pleural effusion.",
    "Denies fever.", "History of hypertension.", "Mild cough for three days.",
    "No pneumothorax.", "Vital signs reviewed.", "Small effusion noted.",
    "Negative for chills.", "Lives alone.", "Trachea is midline.",
)  # fmt: skip


def make_keyword_notes(n_samples=200, *, keyword="consolidation", n_filler=(2, 5),
                       random_state=None) -> Bunch:  # fmt: skip
    """Notes of ``n_filler`` filler sentences plus one sentence about ``keyword``, inserted at
    a random place: affirmed ("Focal consolidation is present.") when the label is 1, in a
    negated form ("No evidence of focal consolidation.") when it is 0.

    Parameters
    ----------
    n_samples : int, default=200
    keyword : str, default="consolidation"
        The finding that decides the label (a word not in the fillers).
    n_filler : (int, int), default=(2, 5)
        Least and most filler sentences per note (drawn uniformly).
    random_state : int, RandomState or None

    Returns
    -------
    Bunch
        ``frame`` (DataFrame with ``note`` and ``label``), ``target`` (int array of shape
        (n_samples,)), ``keyword_sentence`` (0-based sentence of the keyword, per row) and
        ``negated`` (bool array: the keyword's sentence is a negated form; ``== (target
        == 0)``).

    Examples
    --------
    >>> from toolkit.datasets.keyword_notes import make_keyword_notes
    >>> notes = make_keyword_notes(3, random_state=0)
    >>> notes.frame["note"].iloc[0]
    'Heart size is normal. No pneumothorax. No evidence of focal consolidation.'
    >>> notes.target.tolist(), notes.keyword_sentence.tolist()
    ([0, 1, 1], [2, 2, 2])
    """
    n = check_int("n_samples", n_samples)
    low, high = _filler_range(n_filler)
    if not isinstance(keyword, str) or not keyword.strip() or " " in keyword.strip():
        raise ValueError(f"keyword must be one word, got {keyword!r}")
    if any(keyword.lower() in s.lower() for s in FILLER):
        raise ValueError(f"keyword {keyword!r} occurs in the filler sentences; choose another")
    rng = check_random_state(random_state)
    target = rng.randint(0, 2, n)
    notes, where = [], np.empty(n, dtype=int)
    for i, label in enumerate(target):
        sentences = list(rng.choice(FILLER, rng.randint(low, high + 1), replace=False))
        forms = AFFIRMED if label else NEGATED
        sentence = forms[rng.randint(len(forms))].format(keyword)
        where[i] = rng.randint(len(sentences) + 1)
        sentences.insert(where[i], sentence[0].upper() + sentence[1:])
        notes.append(" ".join(sentences))
    frame = pd.DataFrame({"note": notes, "label": target})
    return Bunch(frame=frame, target=target, keyword_sentence=where, negated=target == 0)


def _filler_range(n_filler) -> tuple[int, int]:
    pair = tuple(n_filler) if isinstance(n_filler, tuple | list) else ()
    ok = len(pair) == 2 and all(isinstance(v, int | np.integer) for v in pair)
    if not ok or not 0 <= pair[0] <= pair[1] <= len(FILLER):
        raise ValueError(
            f"n_filler must be two integers 0 <= low <= high <= {len(FILLER)}, got {n_filler!r}"
        )
    return int(pair[0]), int(pair[1])
