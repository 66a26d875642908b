"""Trust, second wave (issue 25), for the estimators, fusion strategies, conformal
prediction, study data and explanations: nothing silently wrong (auto with one group, the
target as a feature, raw text vocabulary in a saved model, a y indexed in another order)
and clear errors naming the thing and the fix (a modality in one class only, groups = the
target, too few calibration rows, an infinite fine-tuning target, a bad SHAP background).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from toolkit import (
    EarlyFusion,
    Embeddings,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
    TextEncoder,
)
from toolkit.conformal import ConformalPredictor, min_calibration_rows
from toolkit.exceptions import LeakageWarning
from toolkit.explain import value_function
from toolkit.fusion import AutoFusion
from toolkit.study import ConfigError, load_config
from toolkit.study.data import prepare_study
from toolkit.study.model_card import model_card, text_vocabulary, vocabulary_paragraph

N = 40


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], N // 2)
    frame = pd.DataFrame({"a": rng.normal(size=N) + y, "b": rng.normal(size=N)})
    return frame, y


def _mods():
    return [("a", TabularEncoder(), ["a"]), ("b", TabularEncoder(), ["b"])]


@pytest.fixture(scope="module")
def fitted(data):
    frame, y = data
    return MultimodalClassifier(_mods(), fusion="early", random_state=0).fit(frame, y)


# -- study configs on a small manifest ---------------------------------------------------


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A 24-row CSV: a label, a copy of it under other names, groups equal to it, groups
    of two rows, a scan value only for class 1, and short notes."""
    rng = np.random.RandomState(0)
    label = np.array([0, 1] * 12)
    words = np.array(["calm quiet evening", "sharp chest pain"])
    frame = pd.DataFrame({
        "age": rng.normal(50, 10, 24).round(), "label": label,
        "diagnosis": np.where(label == 1, "sick", "well"), "pid": label,
        "patient": np.arange(24) // 2, "scan": np.where(label == 1, rng.normal(size=24), np.nan),
        "note": [f"{w} note {i}" for i, w in enumerate(words[label])],
    })  # fmt: skip
    folder = tmp_path_factory.mktemp("manifest")
    frame.to_csv(folder / "m.csv", index=False)
    return folder


def _config(folder, modalities="[{name: labs, encoder: TabularEncoder, columns: [age]}]",
            data="", extra=""):  # fmt: skip
    path = folder / "study.yaml"
    path.write_text(
        f"name: mf\ntask: classification\n"
        f"data: {{source: load_manifest, params: {{csv: m.csv}}, target: label{data}}}\n"
        f"modalities: {modalities}\nfusion: [late]\n{extra}\n"
    )
    return load_config(path)


# -- silently wrong: fusion="auto" with one group ----------------------------------------


def test_auto_with_one_group_falls_back_and_says_which_and_why(data):
    frame, y = data
    emb = Embeddings({"a": frame[["a"]].to_numpy(), "b": frame[["b"]].to_numpy()})
    auto = AutoFusion(candidates=["early", "late"], singles=False, random_state=0)
    with pytest.warns(
        UserWarning,
        match=r"fusion='auto' could not compare its candidates on held-out rows: every "
        r"training row is in one group \(the given groups\), so no split keeps groups apart. "
        r"It falls back to its first candidate, 'early', untested",
    ):
        auto.fit(emb, y, n_classes=2, groups=np.zeros(N))
    assert auto.chosen_ == "early"
    assert "one group" in auto.fallback_reason_
    # no table of zeros to pick a winner from: the scores say there were none
    assert np.isnan(auto.cv_results_["mean_test_score"]).all()


def test_auto_that_could_compare_has_no_fallback(data):
    frame, y = data
    emb = Embeddings({"a": frame[["a"]].to_numpy(), "b": frame[["b"]].to_numpy()})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fusion='auto'")
        auto = AutoFusion(candidates=["late"], random_state=0, pseudo_groups=False)
        auto.fit(emb, y, n_classes=2, groups=np.arange(N) % 4)
    assert auto.fallback_reason_ is None
    assert np.isfinite(auto.cv_results_["mean_test_score"]).all()


# -- silently wrong: the target as a feature ---------------------------------------------


def test_estimator_warns_when_a_feature_column_is_the_target(data):
    frame, y = data
    leaky = frame.assign(diag=np.where(y == 1, "sick", "well"))
    mods = [("a", TabularEncoder(), ["a"]), ("labs", TabularEncoder(), ["b", "diag"])]
    with pytest.warns(
        LeakageWarning,
        match=r"column 'diag' of modality 'labs' holds the target y in all 40 rows \(the same "
        r"values, or a one-to-one relabeling of them\).*Remove the column",
    ):
        MultimodalClassifier(mods, fusion="early", random_state=0).fit(leaky, y)
    target = frame["a"].to_numpy() * 2
    with pytest.warns(LeakageWarning, match="column 'b' of modality 'b' holds the target y"):
        MultimodalRegressor(_mods(), fusion="early", random_state=0).fit(
            frame.assign(b=target), target
        )


def test_study_refuses_the_target_or_a_copy_of_it_as_a_feature(manifest):
    cols = "[{name: labs, encoder: TabularEncoder, columns: [age, label]}]"
    with pytest.raises(
        ConfigError,
        match=r"^modalities\[0\].columns: column 'label' is the target \(data.target\); a "
        r"model given its own label scores perfectly \(AUROC 1.000\).*Remove it",
    ):
        prepare_study(_config(manifest, cols))
    cols = "[{name: labs, encoder: TabularEncoder, columns: [age]}, {name: dx, encoder: " \
        "TabularEncoder, columns: [diagnosis]}]"  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"^modalities\[1\].columns: column 'diagnosis' holds the target 'label' in every "
        r"row \(the same values, or the same classes under other names\)",
    ):
        prepare_study(_config(manifest, cols))


# -- silently wrong: raw text vocabulary in the saved model ------------------------------


def test_model_card_and_report_name_an_encoder_that_keeps_text_vocabulary(manifest):
    from toolkit.encoders.backends import TEXT_BACKENDS

    frame = pd.read_csv(manifest / "m.csv")
    mods = [("labs", TabularEncoder(), ["age"]), ("note", TextEncoder(n_components=2), "note")]
    model = MultimodalClassifier(mods, fusion="early", random_state=0).fit(frame, frame.label)
    (entry,) = text_vocabulary(model)
    word = model.encoders_["note"].vectorizer_.transformer_list[0][1]
    assert entry["modality"] == "note" and entry["encoder"] == "TextEncoder(backend='tfidf')"
    assert entry["terms"] > len(word.vocabulary_) > 0 and "chest" in word.vocabulary_
    config = _config(manifest, extra="output: {include_text: false}")
    summary = {
        "chosen": {"rule": "fixed:early", "model": "early", "kind": "fusion"},
        "strategies": {}, "baselines": {}, "primary_metric": "auroc", "folds": 3,
        "n_samples": 24, "headline": {"against": None}, "mean_abs_contribution": {},
    }  # fmt: skip
    fix = "backend: hashing" if "hashing" in TEXT_BACKENDS else "a pretrained text backend"
    card = model_card(config, summary, model).splitlines()
    assert [line for line in card if line.startswith("- Raw text vocabulary")] == [
        "- Raw text vocabulary: the saved model keeps raw text vocabulary of its training texts "
        f"in model.skops (modality 'note': TextEncoder(backend='tfidf'), {entry['terms']:,} "
        "words and n-grams); anyone with the model folder can read these terms. "
        "output.include_text: false keeps raw text out of the report only, not out of the "
        f"model; to keep none, use {fix}"
    ]
    # write_model_card's summary is the report's: its privacy paragraph says the same
    assert summary["text_vocabulary"] == [entry]
    assert vocabulary_paragraph(config, summary).startswith(
        '<p class="warn"><b>Saved model:</b> The saved model keeps raw text vocabulary of its '
        "training texts in model.skops (modality &#x27;note&#x27;"
    )
    tabular = MultimodalClassifier(mods[:1], random_state=0).fit(frame, frame.label)
    assert text_vocabulary(tabular) == []
    summary.pop("text_vocabulary")
    assert "- Raw text vocabulary: no encoder of the saved model keeps words of its training " \
        "texts" in model_card(config, summary, tabular)  # fmt: skip


# -- silently wrong: y indexed in another order than X -----------------------------------


def test_y_with_permuted_index_is_paired_by_label(data, fitted):
    frame, y = data
    order = np.random.default_rng(1).permutation(N)
    shuffled = pd.Series(y, index=frame.index)[order]
    model = MultimodalClassifier(_mods(), fusion="early", random_state=0).fit(frame, shuffled)
    np.testing.assert_array_equal(model.predict_proba(frame), fitted.predict_proba(frame))
    assert model.score(frame, shuffled) == fitted.score(frame, y)
    sets = [
        ConformalPredictor(MultimodalClassifier(_mods(), fusion="early", random_state=0),
                           random_state=0).fit(frame, labels).predict_set(frame)
        for labels in (shuffled, y)
    ]  # fmt: skip
    np.testing.assert_array_equal(sets[0], sets[1])


def test_y_with_other_index_labels_is_refused(data):
    frame, y = data
    with pytest.raises(
        ValueError,
        match=r"^y's index does not match X's \(y has index label\(s\) \[100, 101, 102, 103, "
        r"104\] that X's index lacks.*pass y.to_numpy\(\) to pair by position",
    ):
        MultimodalClassifier(_mods(), random_state=0).fit(
            frame, pd.Series(y, index=frame.index + 100)
        )


# -- unclear: a modality present in one class only ---------------------------------------


def test_a_modality_in_one_class_only_is_refused_naming_it_and_the_counts(data, manifest):
    frame, y = data
    labels = np.where(y == 1, "yes", "no")
    gappy = frame.assign(b=np.where(y == 1, frame["b"], np.nan))
    message = (
        r"modality 'b' is present only in rows of class 'yes' \(20 rows; absent from all 20 "
        r"rows of the other classes\): whether a row has it alone predicts the label"
    )
    for fusion in ("early", "late"):
        with pytest.raises(ValueError, match=message):
            MultimodalClassifier(_mods(), fusion=fusion, random_state=0).fit(gappy, labels)
    emb = Embeddings({"a": frame[["a"]].to_numpy(), "b": gappy[["b"]].to_numpy()})
    with pytest.raises(ValueError, match=r"modality 'b' is present only in rows of class code 1"):
        EarlyFusion(random_state=0).fit(emb, y, n_classes=2)
    mods = "[{name: labs, encoder: TabularEncoder, columns: [age]}, {name: scan, encoder: " \
        "TabularEncoder, columns: [scan]}]"  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"^modalities\[1\].columns: modality 'scan' is present only in rows of class 1 "
        r"\(12 rows; absent from all 12 rows of the other classes\)",
    ):
        prepare_study(_config(manifest, mods))


# -- unclear: groups = the target --------------------------------------------------------


def test_groups_equal_to_the_target_are_refused(data, manifest):
    frame, y = data
    with pytest.raises(
        ValueError,
        match=r"^groups: all 20 rows of class 0 are in one group \(0\); groups are the labels "
        r"under other names.*not the labels, or fit without groups",
    ):
        MultimodalClassifier(_mods(), random_state=0).fit(frame, y, groups=y)
    with pytest.raises(
        ConfigError,
        match=r"^data.groups \('pid'\): all 12 rows of class 0 are in one group \(0\); the "
        r"groups are the target under other names: grouped folds test that group",
    ):
        prepare_study(_config(manifest, data=", groups: pid"))
    assert prepare_study(_config(manifest, data=", groups: patient")).groups is not None


# -- unclear: too few calibration rows ---------------------------------------------------


def test_conformal_calibration_share_too_large_for_the_rows(data, manifest):
    frame, y = data
    assert min_calibration_rows(0.9) == 9 and min_calibration_rows(0.95) == 19
    model = MultimodalClassifier(_mods(), fusion="early", random_state=0)
    with pytest.raises(
        ValueError,
        match=r"^calibration_size=0.95 of 24 rows holds out 23 calibration rows and leaves 1 to "
        r"fit the model on; confidence=0.9 \(alpha = 0.1\) needs at least 9 calibration rows "
        r"\(ceil\(1 / alpha\) - 1;.* use calibration_size between 0.38 and 0.91",
    ):
        ConformalPredictor(model, calibration_size=0.95).fit(frame.iloc[:24], y[8:32])
    config = _config(
        manifest, extra="evaluation: {cv: 5, conformal: {enabled: true, calibration: 0.95}}"
    )
    with pytest.raises(
        ConfigError,
        match=r"^evaluation.conformal.calibration: calibration=0.95 of 19 rows holds out 19 "
        r"calibration rows and leaves 0 to fit the model on; .*needs at least 9 calibration",
    ):
        prepare_study(config)
    config = dataclasses.replace(config, evaluation=dataclasses.replace(
        config.evaluation, conformal=dataclasses.replace(config.evaluation.conformal,
                                                         calibration=0.6)))  # fmt: skip
    assert math.ceil(0.6 * 19) >= 9 and prepare_study(config).splits


# -- unclear: an infinite fine-tuning target ---------------------------------------------


def test_fine_tuning_on_an_infinite_target_names_the_row():
    from toolkit import ImageEncoder

    rng = np.random.default_rng(0)
    images = pd.Series([rng.random((8, 8)).astype(np.float32) for _ in range(12)], name="face")
    target = rng.normal(size=12)
    target[4] = np.inf
    encoder = ImageEncoder(backend="cnn", widths=[2], max_epochs=1, device="cpu", progress=False)
    with pytest.raises(
        ValueError,
        match=r"^y holds 1 NaN or infinite target\(s\) at rows \[4\] \(e.g. inf\); a network "
        r"cannot learn from them, whatever the learning rate",
    ):
        encoder.fit(images, target)


# -- unclear: a bad SHAP background ------------------------------------------------------


def test_a_bad_background_is_named_not_blamed_on_x(data, fitted):
    frame, _ = data
    explain = lambda background: value_function(  # noqa: E731
        fitted, frame.head(3), removal="background", background=background
    )
    with pytest.raises(
        ValueError,
        match=r"^background \(the rows that stand in for a removed modality\) is not usable: "
        r"modality 'b' needs column\(s\) \['b'\], which the background does not have",
    ):
        explain(frame[["a"]])
    with pytest.raises(ValueError, match=r"^background holds no rows"):
        explain(frame.iloc[:0])
    with pytest.raises(
        ValueError, match=r"^background .* is not usable: 1 row\(s\) have every modality missing"
    ):
        explain(pd.DataFrame({"a": [np.nan, 0.5], "b": [np.nan, 0.1]}))
    with pytest.raises(ValueError, match=r"^background: the Embeddings hold modalities \['a'\]"):
        explain(fitted.embed(frame).select(["a"]))
    assert explain(frame).all_coalitions().shape == (4, 3)
