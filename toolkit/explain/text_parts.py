"""Text parts that respect negation and phrases: the clauses of a text, with NegEx-style
negation scopes kept inside one part.

A text is cut into sentences (at ``.``, ``!``, ``?`` followed by a space or the end, and at
line breaks) and each sentence into clauses (at ``;``, ``:``, ``,`` and before a
terminating conjunction such as "but", "however", "although", "except", "which"). A
negation cue ("no", "not", "without", "denies", "negative for", "no evidence of", ...;
longest match first, as in NegEx) governs its clause up to the clause's end; a comma does
not end that scope when what follows is a short list item ("no fever, cough or chills"),
unless that item asserts a finding of its own ("no effusion, consolidation present").
A coordinator just before a cue ("and no", "with no", "and there is no") starts a new
clause, so an affirmed finding and a negated one in the same sentence are two parts.

Each clause is one part of the drill-down (:func:`toolkit.explain.drill_down`), so masking a
negated finding removes its cue and the finding together, and the part's value is the
clause's, not the single word's (a word-level drill-down colours "consolidation" in
"No evidence of focal consolidation." towards the diagnosis). Each part is described
without its words ("a negated clause in sentence 2", "an affirmed clause (1 of 2) in
sentence 1", "a hedged clause in sentence 3"), which the study report shows when the text
itself is withheld.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from toolkit.explain.drilldown import Parts

#: Words, numbers (3.5, 12/08) and single punctuation marks.
TOKEN = re.compile(r"\d+(?:[.,:/]\d+)*|\w+(?:['\u2019-]\w+)*|[^\w\s]")

#: Cues, longest first at each position: pseudo-negations are not negations ("no change"),
#: hedges mark uncertainty ("cannot be excluded" is not a negation of the finding).
PSEUDO = (
    "no change", "no interval change", "no significant change", "no increase", "no further",
    "not only", "not necessarily", "without difficulty", "gram negative", "not certain whether",
)  # fmt: skip
HEDGES = (
    "cannot be excluded", "cannot be ruled out", "can not be excluded", "not be excluded",
    "not excluded", "not ruled out", "rule out", "possible", "possibly", "probable",
    "probably", "likely", "unlikely", "may", "might", "could", "questionable", "suspected",
    "suspicious for", "concerning for", "suggestive of", "suggests", "versus",
)  # fmt: skip
NEGATIONS = (
    "no evidence of", "no signs of", "no sign of", "without evidence of", "negative for",
    "absence of", "free of", "ruled out", "denies", "denied", "deny", "denying", "no", "not",
    "without", "never", "none", "neither", "nor", "cannot", "absent", "negative",
)  # fmt: skip
#: Words that start a new clause (and end a negation's scope).
TERMINATORS = (
    "but", "however", "although", "though", "yet", "except", "whereas", "while", "which",
    "aside from", "apart from", "other than",
)  # fmt: skip
#: Words that start a new clause when a negation cue follows within three words.
COORDINATORS = ("and", "with", "plus", "also")
#: Words that assert a finding: a comma segment holding one is a clause of its own, not an
#: item of the negated list before it ("no effusion, consolidation present").
ASSERTIONS = (
    "present", "noted", "seen", "identified", "demonstrated", "visible", "evident",
    "appreciated", "positive", "is", "are", "was", "were", "has", "have", "shows", "showed",
    "remains", "persists", "persistent", "new", "clear", "normal", "unremarkable", "stable",
)  # fmt: skip
#: A "." after one of these is not a sentence end.
ABBREVIATIONS = ("dr", "mr", "mrs", "ms", "prof", "approx", "fig", "vs")
CATEGORIES = ("affirmed", "negated", "hedged")


def _phrases(entries) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """First word -> [(phrase, kind)], longest phrase first."""
    table: dict[str, list] = {}
    for group, kind in entries:
        for phrase in group:
            words = tuple(phrase.split())
            table.setdefault(words[0], []).append((words, kind))
    return {w: sorted(e, key=lambda x: -len(x[0])) for w, e in table.items()}


_CUES = _phrases(((PSEUDO, "pseudo"), (HEDGES, "hedged"), (NEGATIONS, "negated")))
_TERMINATORS = _phrases(((TERMINATORS, "end"),))


def _match(words: list[str], i: int, table) -> tuple[int, str | None]:
    """(length, kind) of the longest entry of ``table`` starting at ``words[i]``."""
    for phrase, kind in table.get(words[i], ()):
        if tuple(words[i : i + len(phrase)]) == phrase:
            return len(phrase), kind
    if table is _CUES and words[i].endswith(("n't", "n\u2019t")):
        return 1, "negated"
    return 0, None


def cue_kinds(words: list[str]) -> list[str | None]:
    """Per (lower-case) token: ``"negated"``, ``"hedged"`` or ``"pseudo"`` where a cue
    starts (a multi-word cue marks its first token, the rest None), None elsewhere.

    Examples
    --------
    >>> cue_kinds("no evidence of consolidation , no change".split())
    ['negated', None, None, None, None, 'pseudo', None]
    """
    kinds: list[str | None] = [None] * len(words)
    i = 0
    while i < len(words):
        length, kind = _match(words, i, _CUES)
        if length:
            kinds[i] = kind
        i += max(length, 1)
    return kinds


def _sentence_ends(text: str, spans: list[tuple[int, int]], words: list[str]) -> set[int]:
    """Token positions after which a sentence ends."""
    ends = set()
    for k, (_, end) in enumerate(spans):
        last = k == len(spans) - 1
        if not last and "\n" in text[end : spans[k + 1][0]]:
            ends.add(k)
        if words[k] not in (".", "!", "?", "\u2026") or last:
            continue
        spaced = spans[k + 1][0] > end
        abbreviated = k > 0 and words[k - 1] in ABBREVIATIONS
        dotted = k > 1 and words[k - 2] == "." and len(words[k - 1]) == 1  # "e.g."
        if spaced and not abbreviated and not dotted:
            ends.add(k)
    return ends


def _is_word(token: str) -> bool:
    return bool(re.match(r"\w", token))


def _list_item(words: list[str], start: int, kinds) -> bool:
    """Whether the comma segment from ``start`` continues a negated list: up to three words
    (or led by "or" / "nor") with no cue or terminator of its own."""
    segment = []
    for k in range(start, len(words)):
        if words[k] in (",", ";", ":", ".", "!", "?"):
            break
        if kinds[k] is not None or _match(words, k, _TERMINATORS)[0] or words[k] in ASSERTIONS:
            return False
        segment.append(words[k])
    n_words = sum(_is_word(w) for w in segment)
    return n_words > 0 and (n_words <= 3 or segment[0] in ("or", "nor"))


def _starts_clause(words: list[str], k: int, kinds) -> bool:
    """Whether token ``k`` starts a new clause: a terminator, or a coordinator with a
    negation cue within the next three words."""
    if _match(words, k, _TERMINATORS)[0]:
        return True
    return words[k] in COORDINATORS and "negated" in kinds[k + 1 : k + 4]


def clauses(text: str) -> list[dict]:
    """The clauses of ``text``: per clause its ``span`` (start, end) in ``text``, its
    ``sentence`` (0-based) and its ``category`` ("negated" when it holds a negation cue,
    else "hedged" when it holds a hedge cue, else "affirmed").

    Examples
    --------
    >>> text = "Lungs are clear with no effusion. Possible consolidation, but no fever."
    >>> for c in clauses(text):
    ...     print(c["sentence"], c["category"], repr(text[slice(*c["span"])]))
    0 affirmed 'Lungs are clear'
    0 negated 'with no effusion.'
    1 hedged 'Possible consolidation,'
    1 negated 'but no fever.'
    """
    found = list(TOKEN.finditer(text))
    spans = [m.span() for m in found]
    words = [m.group().lower() for m in found]
    kinds = cue_kinds(words)
    ends = _sentence_ends(text, spans, words)
    groups, current, sentence = [], [], 0
    for k in range(len(words)):
        negated = any(kinds[j] == "negated" for j in current)
        if current and any(_is_word(words[j]) for j in current) and _starts_clause(words, k, kinds):
            groups.append((current, sentence))
            current = []
        current.append(k)
        boundary = words[k] in (";", ":") or (
            words[k] == "," and not (negated and _list_item(words, k + 1, kinds))
        )
        if k in ends or boundary:
            groups.append((current, sentence))
            current = []
            sentence += k in ends
    if current:
        groups.append((current, sentence))
    return _merge_punctuation(groups, spans, words, kinds)


def _merge_punctuation(groups, spans, words, kinds) -> list[dict]:
    """Clauses from token groups; a group without a word joins the clause before it (or
    is left out when it comes first: punctuation alone is no part)."""
    out: list[dict] = []
    for tokens, sentence in groups:
        if not any(_is_word(words[k]) for k in tokens):
            if out:
                out[-1]["span"] = (out[-1]["span"][0], spans[tokens[-1]][1])
            continue
        found = {kinds[k] for k in tokens}
        category = "negated" if "negated" in found else "hedged" if "hedged" in found else None
        out.append(
            {
                "span": (spans[tokens[0]][0], spans[tokens[-1]][1]),
                "sentence": sentence,
                "category": category or "affirmed",
            }
        )
    rank = {s: r for r, s in enumerate(sorted({c["sentence"] for c in out}))}
    for c in out:  # sentences numbered among those with a word
        c["sentence"] = rank[c["sentence"]]
    return out


def describe(found: list[dict]) -> list[str]:
    """Names of clauses that reveal no words: "a negated clause in sentence 2", or with
    several clauses in one sentence "an affirmed clause (1 of 2) in sentence 1"."""
    per_sentence = Counter(c["sentence"] for c in found)
    seen: Counter = Counter()
    names = []
    for c in found:
        s = c["sentence"]
        seen[s] += 1
        article = "an" if c["category"] == "affirmed" else "a"
        where = f" ({seen[s]} of {per_sentence[s]})" if per_sentence[s] > 1 else ""
        names.append(f"{article} {c['category']} clause{where} in sentence {s + 1}")
    return names


def sentences(found: list[dict]) -> list[list[int]] | None:
    """The clauses grouped by sentence (positions into ``found``): the coarse level of an
    Owen hierarchy, sentences then their clauses; None for a single sentence (flat)."""
    groups: dict[int, list[int]] = {}
    for k, c in enumerate(found):
        groups.setdefault(c["sentence"], []).append(k)
    return list(groups.values()) if len(groups) > 1 else None


class Clauses:
    """Masker of a text modality whose parts are clauses, negation scopes kept whole.

    The default masker of :class:`~toolkit.encoders.TextEncoder`. A masked clause is
    removed (the kept clauses are joined by single spaces, each with its own punctuation),
    and the text is encoded again, so it works with any text encoder. The parts' labels
    are the clauses' text (without a trailing comma, semicolon or colon); their ``names``
    describe them without words ("a negated clause in sentence 2") and become the
    explanation's ``feature_names``. A text of several sentences nests its clauses in
    their sentences (``groups``: an Owen hierarchy, so a note of 6 sentences of 2 clauses
    is exact with 446 masked texts instead of 4,094). Use :class:`~toolkit.explain.Words`
    for word-level parts.

    Examples
    --------
    >>> from toolkit.explain import Clauses
    >>> parts = Clauses().split("Heart size normal. No evidence of focal consolidation.", None)
    >>> parts.labels
    ['Heart size normal.', 'No evidence of focal consolidation.']
    >>> parts.names
    ['an affirmed clause in sentence 1', 'a negated clause in sentence 2']
    >>> Clauses().mask(parts, [True, False])
    'Heart size normal.'
    """

    kind = "text"
    n_parts = None  # varies with the text

    def split(self, item, encoder) -> Parts:
        """The clauses of one text item, read as ``encoder`` reads it."""
        from toolkit.io import read_text

        text = (read_text(item) if encoder is None else encoder.read_item(item)) or ""
        found = clauses(text)
        labels = [text[slice(*c["span"])].rstrip(",;:").rstrip() for c in found]
        spans = [c["span"] for c in found]
        return Parts(text, labels, spans, names=describe(found), groups=sentences(found))

    def mask(self, parts: Parts, keep) -> str:
        """The text with only the kept clauses, in their order."""
        text = parts.item
        kept = [text[s:e] for (s, e), k in zip(parts.regions, keep, strict=True) if k]
        return " ".join(kept)

    def summary(self, parts: Parts) -> np.ndarray:
        return np.asarray(parts.labels, dtype=object)
