"""Classification, calibration, bootstrap and fairness metrics against scikit-learn and hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve as sk_roc_curve

from medfm.errors import MedfmError
from medfm.eval.bootstrap import bootstrap, resamples
from medfm.eval.calibration import expected_calibration_error, reliability_curve
from medfm.eval.cls_metrics import (
    average_precision,
    macro,
    multilabel_auc,
    one_vs_rest_auc,
    rates_at,
    roc_auc,
    roc_curve,
)
from medfm.eval.fairness import subgroup_analysis
from medfm.eval.operating_point import OperatingPoint


def binary_data(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(labels * 1.2 + rng.normal(0, 1, n))))
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_average_precision_match_scikit_learn(seed, ties):
    scores, labels = binary_data(seed, ties=ties)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_undefined_metrics_are_nan():
    assert np.isnan(roc_auc([0.1, 0.9], [1, 1]))
    assert np.isnan(average_precision([0.1, 0.9], [0, 0]))
    rates = rates_at(np.array([0.1, 0.2]), np.array([0, 0]), 0.5)
    assert np.isnan(rates["sensitivity"]) and np.isnan(rates["ppv"]) and rates["specificity"] == 1.0


def test_rates_at_a_threshold_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    # called positive: 0.9, 0.8, 0.7, 0.6 (>= 0.6): TP 3, FP 1, FN 1, TN 3
    assert rates_at(scores, labels, 0.6) == {"sensitivity": 0.75, "specificity": 0.75, "ppv": 0.75, "npv": 0.75}
    assert rates_at(scores, labels, 0.65) == {"sensitivity": 0.5, "specificity": 0.75, "ppv": 2 / 3, "npv": 0.6}


def test_bad_labels_are_a_one_line_error():
    with pytest.raises(MedfmError, match="binary labels must be 0 or 1"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(MedfmError, match=r"must both be \(N,\)"):
        roc_auc([0.1, 0.2], [0, 1, 1])


def test_multiclass_and_multilabel_auc_match_scikit_learn():
    rng = np.random.default_rng(3)
    n, k = 400, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per_class = one_vs_rest_auc(probs, labels)
    assert macro(per_class) == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    np.testing.assert_allclose(per_class, roc_auc_score(np.eye(k)[labels], probs, average=None))
    multi = rng.integers(0, 2, (n, k))
    multi_scores = multi * 0.8 + rng.normal(0, 1, (n, k))
    per_label = multilabel_auc(multi_scores, multi)
    assert macro(per_label) == pytest.approx(roc_auc_score(multi, multi_scores, average="macro"))
    np.testing.assert_allclose(per_label, roc_auc_score(multi, multi_scores, average=None))
    assert np.isnan(macro(one_vs_rest_auc(probs[labels != 3], labels[labels != 3])))


@pytest.mark.parametrize("seed", range(3))
def test_reliability_curve_and_ece_match_scikit_learn_and_hand_values(seed):
    scores, labels = binary_data(seed, n=500)
    curve = reliability_curve(scores, labels, n_bins=10)
    sk_true, sk_pred = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    filled = curve.counts > 0
    np.testing.assert_allclose(curve.fraction_positive[filled], sk_true)
    np.testing.assert_allclose(curve.mean_predicted[filled], sk_pred)
    expected = sum(
        c / len(scores) * abs(t - p) for c, t, p in zip(curve.counts[filled], sk_true, sk_pred)
    )
    assert expected_calibration_error(scores, labels) == pytest.approx(expected)
    # two bins by hand: (0.2, 0.4) with labels (0, 1) and (0.9) with label 1
    assert expected_calibration_error(np.array([0.2, 0.4, 0.9]), np.array([0, 1, 1]), n_bins=2) == pytest.approx(
        2 / 3 * abs(0.5 - 0.3) + 1 / 3 * abs(1 - 0.9)
    )
    with pytest.raises(MedfmError, match=r"probabilities in \[0, 1\]"):
        expected_calibration_error(np.array([0.2, 1.4]), np.array([0, 1]))


def test_operating_point_is_an_estimator_that_meets_its_target():
    scores, labels = binary_data(0, n=500)
    fpr, tpr, thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
    for value in (0.8, 0.9, 0.95):
        point = OperatingPoint(target="sensitivity", value=value)
        assert point.fit(scores, labels) is point
        rates = rates_at(scores, labels, point.threshold_)
        assert rates["sensitivity"] >= value and rates["sensitivity"] == point.sensitivity_
        # the highest threshold that reaches the target, so the best specificity there
        assert point.threshold_ == thresholds[np.flatnonzero(tpr >= value)[0]]
        spec = OperatingPoint(target="specificity", value=value).fit(scores, labels)
        assert spec.specificity_ >= value
        assert spec.threshold_ == thresholds[np.flatnonzero(1 - fpr >= value)[-1]]
    youden = OperatingPoint().fit(scores, labels)
    assert youden.sensitivity_ + youden.specificity_ - 1 == pytest.approx(np.max(tpr - fpr))
    np.testing.assert_array_equal(youden.predict(scores), scores >= youden.threshold_)


def test_operating_point_errors_name_the_problem():
    with pytest.raises(MedfmError, match="not fitted yet"):
        OperatingPoint().predict(np.array([0.5]))
    with pytest.raises(MedfmError, match="target must be one of sensitivity, specificity, youden; got 'recall'"):
        OperatingPoint(target="recall", value=0.9).fit(np.array([0.1, 0.9]), np.array([0, 1]))
    with pytest.raises(MedfmError, match="needs a value between 0 and 1"):
        OperatingPoint(target="sensitivity").fit(np.array([0.1, 0.9]), np.array([0, 1]))


def test_patient_level_resampling_keeps_each_patients_rows_together():
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    for rows in resamples(6, clusters=patients, n_boot=200, seed=1):
        drawn = patients[rows]
        for patient, size in (("a", 3), ("b", 1), ("c", 2)):
            assert np.sum(drawn == patient) % size == 0
        assert len(set(np.flatnonzero(patients == "a")) & set(rows)) in (0, 3)
    # three patients drawn each time, so lengths vary with who was drawn
    assert {len(r) for r in resamples(6, clusters=patients, n_boot=200, seed=1)} > {6}


def test_bootstrap_interval_is_seeded_and_covers_a_known_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 2.0, 400)
    stat = lambda rows: {"mean": values[rows].mean()}  # noqa: E731
    first = bootstrap(stat, len(values), n_boot=500, seed=7)["mean"]
    assert first == bootstrap(stat, len(values), n_boot=500, seed=7)["mean"]
    assert first.value == pytest.approx(values.mean())
    # the percentile interval of a mean is close to the normal one, ±1.96 s/√n
    half_width = 1.96 * values.std() / np.sqrt(len(values))
    assert first.low == pytest.approx(values.mean() - half_width, abs=0.08)
    assert first.high == pytest.approx(values.mean() + half_width, abs=0.08)


def test_patient_level_intervals_are_wider_when_a_patients_rows_agree():
    rng = np.random.default_rng(1)
    patient_effect = rng.normal(0, 1, 50)
    patients = np.repeat(np.arange(50), 8)
    values = patient_effect[patients] + rng.normal(0, 0.1, len(patients))
    stat = lambda rows: {"mean": values[rows].mean()}  # noqa: E731
    by_row = bootstrap(stat, len(values), n_boot=400)["mean"]
    by_patient = bootstrap(stat, len(values), clusters=patients, n_boot=400)["mean"]
    assert (by_patient.high - by_patient.low) > 2 * (by_row.high - by_row.low)


def test_subgroup_metrics_gaps_and_equalised_odds_by_hand():
    # group A: perfect at 0.5; group B: one false positive and one false negative
    scores = np.array([0.9, 0.8, 0.2, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.1])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 0])
    groups = np.array(["A"] * 4 + ["B"] * 6)
    result = subgroup_analysis(scores, labels, groups, threshold=0.5, n_boot=200, seed=0)
    a, b = result.groups["A"], result.groups["B"]
    assert result.sizes == {"A": (4, 2), "B": (6, 3)}
    assert a["sensitivity"].value == 1.0 and a["specificity"].value == 1.0
    assert b["sensitivity"].value == pytest.approx(2 / 3) and b["specificity"].value == pytest.approx(2 / 3)
    assert a["auc"].value == roc_auc_score(labels[:4], scores[:4])
    assert b["auc"].value == pytest.approx(roc_auc_score(labels[4:], scores[4:]))
    assert result.gaps["sensitivity"]["difference"].value == pytest.approx(1 / 3)
    assert result.gaps["auc"]["ratio"].value == pytest.approx(b["auc"].value / 1.0)
    # TPR gap 1/3, FPR gap 1/3 - 0
    assert result.equalised_odds_difference.value == pytest.approx(1 / 3)
    for estimate in (b["auc"], result.gaps["auc"]["difference"], result.equalised_odds_difference):
        assert estimate.low <= estimate.value <= estimate.high or np.isnan(estimate.low)


def test_equalised_odds_difference_takes_the_larger_of_the_two_rate_gaps():
    rng = np.random.default_rng(5)
    n = 600
    groups = rng.choice(["x", "y", "z"], n)
    labels = rng.integers(0, 2, n)
    scores = rng.uniform(0, 1, n) + 0.3 * labels + 0.2 * (groups == "z")
    result = subgroup_analysis(scores, labels, groups, threshold=0.6, n_boot=50)
    tprs, fprs = [], []
    for g in "xyz":
        m = groups == g
        tprs.append(np.mean(scores[m][labels[m] == 1] >= 0.6))
        fprs.append(np.mean(scores[m][labels[m] == 0] >= 0.6))
    expected = max(max(tprs) - min(tprs), max(fprs) - min(fprs))
    assert result.equalised_odds_difference.value == pytest.approx(expected)
    assert result.equalised_odds_difference.n_valid == 50


def _reversed(value):
    """``value`` with every dict's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    return value


def test_the_report_names_its_metrics_and_does_not_follow_key_order(tmp_path):
    import csv
    import re

    from medfm.eval.evaluate_cls import evaluate_classification
    from medfm.eval.fairness import SUBGROUP_METRICS
    from medfm.eval.reports.classification import write_classification_report

    scores, labels = binary_data(0, n=80)
    with open(tmp_path / "scores.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id", "score"], *([f"r{i}", s] for i, s in enumerate(scores))])
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id", "label", "site"], *([f"r{i}", y, "ab"[i % 2]] for i, y in enumerate(labels))])
    result = evaluate_classification(tmp_path / "scores.csv", tmp_path / "labels.csv", groups=["site"], n_boot=50)
    pages = []
    for summary in (result.summary, _reversed(result.summary)):
        result.summary = summary
        pages.append(write_classification_report(result, tmp_path / "report.html").read_text())
    headers = [re.findall(r"<th>([^<]*)</th>", page) for page in pages]
    assert headers[0] == headers[1]
    assert ["group", "n", "positive", *SUBGROUP_METRICS] == headers[0][headers[0].index("group"):][:3 + len(SUBGROUP_METRICS)]
    order = [re.findall(r"<td>(auc|auprc|sensitivity|specificity|ppv|npv)</td>", page) for page in pages]
    assert order[0] == order[1] == ["auc", "auprc", "sensitivity", "specificity", "ppv", "npv", *SUBGROUP_METRICS]
