"""Text parts that respect negation and phrases (toolkit.explain.text_parts): clauses with
NegEx-style negation scopes, names that reveal no words, and a known answer (a keyword whose
negated form means the opposite, at a random place)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from toolkit import EarlyFusion, MultimodalClassifier, TabularEncoder, TextEncoder
from toolkit.datasets.keyword_notes import make_keyword_notes
from toolkit.explain import Clauses, drill_down
from toolkit.explain.text_parts import clauses, cue_kinds, describe
from toolkit.study.drilldown import DrillDown, summarize_drilldown, withheld_names


def _split(text):
    return [(text[slice(*c["span"])], c["category"], c["sentence"]) for c in clauses(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No evidence of focal consolidation.", [("No evidence of focal consolidation.", "negated", 0)]),
        (  # a negated list is one scope; a comma before a new clause ends it
            "No fever, cough or chills. Heart size normal, lungs are clear.",
            [("No fever, cough or chills.", "negated", 0), ("Heart size normal,", "affirmed", 1),
             ("lungs are clear.", "affirmed", 1)],
        ),
        (  # a coordinator before a cue and a terminator start new clauses
            "Lungs are clear with no effusion. Possible consolidation, but no fever.",
            [("Lungs are clear", "affirmed", 0), ("with no effusion.", "negated", 0),
             ("Possible consolidation,", "hedged", 1), ("but no fever.", "negated", 1)],
        ),
        (  # a hedge is not a negation; a pseudo-negation is not one either
            "Pneumonia cannot be excluded; no change in the effusion.",
            [("Pneumonia cannot be excluded;", "hedged", 0),
             ("no change in the effusion.", "affirmed", 0)],
        ),
        (  # decimals, abbreviations, line breaks, n't, a post-negation "not seen"
            "Temp 38.5 today. Dr. Smith saw e.g. the chest\nPatient doesn't smoke. Mass not seen",
            [("Temp 38.5 today.", "affirmed", 0), ("Dr. Smith saw e.g. the chest", "affirmed", 1),
             ("Patient doesn't smoke.", "negated", 2), ("Mass not seen", "negated", 3)],
        ),
        (  # a comma item that asserts a finding of its own ends the negated list
            "No effusion, consolidation present. Negative for effusion, positive for mass.",
            [("No effusion,", "negated", 0), ("consolidation present.", "affirmed", 0),
             ("Negative for effusion,", "negated", 1), ("positive for mass.", "affirmed", 1)],
        ),
        ("", []),
        (" . , ", []),  # punctuation alone is no part
    ],
)  # fmt: skip
def test_clauses_keep_negation_scopes_whole(text, expected):
    assert _split(text) == expected


def test_cues_longest_first():
    words = "denies fever , negative for chills , gram negative , not only".split()
    assert cue_kinds(words) == [
        "negated", None, None, "negated", None, None, None, "pseudo", None, None, "pseudo", None
    ]  # fmt: skip


def test_masker_names_reveal_no_words_and_masking_removes_cue_and_finding_together():
    text = "Heart size normal. There is pneumonia and no effusion; no consolidation."
    parts = Clauses().split(text, None)
    assert parts.labels == ["Heart size normal.", "There is pneumonia", "and no effusion",
                            "no consolidation."]  # fmt: skip
    assert parts.names == [
        "an affirmed clause in sentence 1",
        "an affirmed clause (1 of 3) in sentence 2",
        "a negated clause (2 of 3) in sentence 2",
        "a negated clause (3 of 3) in sentence 2",
    ]
    assert not any(w in name for name in parts.names for w in ("pneumonia", "effusion", "no "))
    assert Clauses().mask(parts, [True, True, False, True]) == (
        "Heart size normal. There is pneumonia no consolidation."
    )
    assert Clauses().mask(parts, [True, True, True, True]) == text
    assert describe([]) == []
    assert TextEncoder().masker().kind == "text" and isinstance(TextEncoder().masker(), Clauses)


def test_long_notes_nest_clauses_in_sentences_and_stay_exact(keyword_drill):
    clf, frame, *_ = keyword_drill
    note = " ".join(
        ["Heart size normal, lungs are clear."] * 5 + ["Consolidation noted, no fever."]
    )
    parts = Clauses().split(note, None)
    assert parts.groups == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    assert Clauses().split("No fever, cough or chills.", None).groups is None  # one sentence
    rows = frame.iloc[:1].assign(note=note)
    explanation = drill_down(clf, rows, "note", max_parts=10)  # 12 parts, 446 masked texts
    assert len(explanation.values[0]) == 12 and (explanation.error_std[0] == 0).all()
    assert np.sum(explanation.values[0]) == pytest.approx(clf.explain(rows).values[0, 0])
    assert int(np.argmax(np.abs(explanation.values[0]))) == 10  # "Consolidation noted"


def test_keyword_notes_generator():
    a, b = make_keyword_notes(50, random_state=3), make_keyword_notes(50, random_state=3)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert set(a.target) == {0, 1} and (a.negated == (a.target == 0)).all()
    for note, label, k in zip(a.frame["note"], a.target, a.keyword_sentence, strict=True):
        sentences = [c for c in clauses(note) if c["sentence"] == k]
        assert len(sentences) == 1
        assert "consolidation" in note[slice(*sentences[0]["span"])].lower()
        assert sentences[0]["category"] == ("affirmed" if label else "negated")
        assert note.count("onsolidation") == 1
    with pytest.raises(ValueError, match="keyword 'effusion' occurs in the filler sentences"):
        make_keyword_notes(5, keyword="effusion")
    with pytest.raises(ValueError, match="keyword must be one word"):
        make_keyword_notes(5, keyword="two words")
    with pytest.raises(ValueError, match=r"n_filler must be two integers 0 <= low <= high <= 12"):
        make_keyword_notes(5, n_filler=(3, 2))


@pytest.fixture(scope="module")
def keyword_drill():
    """A model fitted on 300 keyword notes, drilled on 15 positive and 15 negative others."""
    notes = make_keyword_notes(400, random_state=0)
    frame = notes.frame.assign(lab=np.random.default_rng(0).normal(size=400))
    mods = [
        ("note", TextEncoder(n_components=64, random_state=0), "note"),
        ("lab", TabularEncoder(), ["lab"]),
    ]
    clf = MultimodalClassifier(mods, fusion=EarlyFusion(estimator=LogisticRegression()),
                               random_state=0).fit(frame.iloc[:300], notes.target[:300])  # fmt: skip
    test = np.arange(300, 400)
    rows = np.concatenate([test[notes.target[test] == 1][:15], test[notes.target[test] == 0][:15]])
    explanation = drill_down(clf, frame.iloc[rows], "note")
    return clf, frame.iloc[rows], notes, rows, explanation


def test_known_answer_keyword_clause_ranks_first_with_the_sign_of_its_clause(keyword_drill):
    clf, frame, notes, rows, explanation = keyword_drill
    hits = {0: [], 1: []}
    for j, i in enumerate(rows):
        values = np.asarray(explanation.values[j])
        found = clauses(frame["note"].iloc[j])
        keyword = [p for p, c in enumerate(found) if c["sentence"] == notes.keyword_sentence[i]]
        top = int(np.argmax(np.abs(values)))
        label = notes.target[i]
        sign = 1 if label else -1  # the negated form pulls away from the diagnosis
        hits[label].append(top == keyword[0] and np.sign(values[top]) == sign)
        if label == 0:  # the cue and the finding are one part, named without words
            assert "consolidation" in explanation.data[j][keyword[0]]
            name = explanation.feature_names[j][keyword[0]]
            assert name.startswith("a negated clause") and "consolidation" not in name
    assert np.mean(hits[1]) >= 0.9, hits
    assert np.mean(hits[0]) >= 0.9, hits
    totals = [np.sum(v) for v in explanation.values]  # the parts add up to the text's value
    np.testing.assert_allclose(totals, clf.explain(frame).values[:, 0], atol=1e-9)


def test_withheld_text_shows_part_categories(keyword_drill):
    _, frame, _, rows, explanation = keyword_drill
    drill = DrillDown("early", 0, list(rows[:4]), ["r"] * 4, ["1"] * 4, None,
                      explanations={"note": explanation}, kinds={"note": "text"})  # fmt: skip
    hidden = summarize_drilldown(drill, include_text=False, max_parts=10)
    shown = summarize_drilldown(drill, include_text=True, max_parts=10)
    for record, text in zip(hidden["records"], frame["note"], strict=False):
        parts = [p["part"] for p in record["top_parts"]]
        assert all(p.startswith(("an affirmed clause", "a negated clause")) for p in parts)
        assert not any(word in p for p in parts for word in text.lower().split() if len(word) > 3)
    assert shown["records"][0]["top_parts"][0]["part"] in frame["note"].iloc[0]
    names = withheld_names(explanation, 0)
    assert len(names) == len(explanation.values[0]) and names == list(explanation.feature_names[0])
