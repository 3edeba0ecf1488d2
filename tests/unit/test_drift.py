"""Drift and live quality, the pure parts: PSI against a training reference, ROC AUC,
calibration, precision of the high tier, how a sampled prediction is labelled, and the
gauges a report becomes (services/scoring/drift.py, services/scorer/quality.py)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import roc_auc_score

from services.scorer.quality import Cohort, QualityMetrics, Sample, judge, reference_of
from services.scoring import drift
from services.scoring.features import DAY_MS

NAMES = ("days_since_last_activity", "spend_365", "has_cadence")


def _population(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    return np.column_stack([rng.exponential(30.0 + shift, n), rng.lognormal(5.0, 1.0, n),
                            (rng.random(n) < 0.7).astype(float)])


def _reference(rng: np.random.Generator) -> dict:
    X = _population(rng, 5000)
    return drift.build_reference(X, NAMES, rng.beta(2, 5, 5000), snapshot="test")


def _codes(ref: dict, X: np.ndarray, scores: np.ndarray) -> list[str]:
    return [drift.bin_codes(ref, dict(zip(NAMES, row, strict=True)), s)
            for row, s in zip(X, scores, strict=True)]


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert 0.0 < drift.psi([0.5, 0.5], [0.45, 0.55]) < 0.1
    assert drift.psi([0.5, 0.5], [0.1, 0.9]) > 0.25
    assert np.isfinite(drift.psi([0.0, 1.0], [1.0, 0.0]))  # empty bins are floored, not infinite


def test_a_reference_has_decile_bins_and_a_binary_feature_few() -> None:
    ref = _reference(np.random.default_rng(1))
    assert drift.usable(ref) and ref["rows"] == 5000
    spend = ref["features"]["spend_365"]
    assert len(spend["edges"]) == 9 and all(abs(p - 0.1) < 0.01 for p in spend["proportions"])
    binary = ref["features"]["has_cadence"]
    assert len(binary["edges"]) <= 2 and abs(sum(binary["proportions"]) - 1) < 1e-6
    assert not drift.usable(None) and not drift.usable({"version": 0})


def test_reference_leaves_out_the_customers_training_never_snapshots() -> None:
    X = np.array([[10.0, 1.0, 1.0], [400.0, 1.0, 1.0]])
    assert drift.build_reference(X, NAMES, np.array([0.1, 0.9]), snapshot="t")["rows"] == 1


def test_live_samples_like_the_training_snapshot_are_stable_and_a_shift_shows() -> None:
    rng = np.random.default_rng(2)
    ref = _reference(rng)
    same = drift.psi_from_codes(ref, _codes(ref, _population(rng, 2000), rng.beta(2, 5, 2000)))
    assert set(same) == {*NAMES, drift.SCORE}
    assert max(same.values()) < 0.05
    moved = drift.psi_from_codes(ref, _codes(ref, _population(rng, 2000, shift=60.0),
                                             rng.beta(5, 2, 2000)))
    assert moved["days_since_last_activity"] > 0.25 and moved[drift.SCORE] > 0.25
    assert moved["spend_365"] < 0.05  # only what moved
    # a sample without a feature bins it "-" and leaves it out of that feature's PSI
    code = drift.bin_codes(ref, {"spend_365": 100.0}, 0.5)
    assert code[0] == "-" and code[2] == "-" and len(code) == len(NAMES) + 1
    assert set(drift.psi_from_codes(ref, [code])) == {"spend_365", drift.SCORE}


def test_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) * 0.5 + y * 0.3, 1)  # coarse: many ties
    assert drift.roc_auc(y.tolist(), s.tolist()) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert drift.roc_auc([1, 1], [0.2, 0.4]) is None


def test_auc_difference_is_the_two_aucs_apart_with_the_bootstraps_spread() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    y = (rng.random(n) < 0.3).astype(int)
    a = y + rng.normal(0.0, 1.0, n)
    b = np.round(0.8 * y + 0.5 * (a - y) + rng.normal(0.0, 1.0, n), 1)  # correlated, with ties
    got = drift.auc_difference(y.tolist(), a.tolist(), b.tolist())
    assert got is not None
    diff, se = got
    assert diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    boot = []
    for _ in range(400):
        i = rng.integers(0, n, n)
        boot.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert se == pytest.approx(float(np.std(boot)), rel=0.15)
    assert drift.auc_difference(y.tolist(), a.tolist(), a.tolist()) == (0.0, 0.0)
    assert drift.auc_difference([1, 0, 0], [0.9, 0.1, 0.2], [0.5, 0.4, 0.3]) is None


def test_calibration_brier_and_precision() -> None:
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.95, 0.85, 0.9, 0.9]
    table = drift.calibration(y, p)
    assert [r["bin"] for r in table] == ["0.0-0.1", "0.1-0.2", "0.8-0.9", "0.9-1.0"]
    top = table[-1]
    assert top["rows"] == 3 and top["observed"] == pytest.approx(2 / 3)
    assert top["predicted"] == pytest.approx((0.95 + 0.9 + 0.9) / 3)
    assert drift.calibration_error(table) == pytest.approx(
        sum(r["rows"] * abs(r["predicted"] - r["observed"]) for r in table) / 6)
    assert drift.brier([1, 0], [1.0, 0.5]) == pytest.approx(0.125)
    assert drift.precision(y, [False, False, True, False, True, True]) == pytest.approx(2 / 3)
    assert drift.precision(y, [False] * 6) is None


def test_a_prediction_is_labelled_by_activity_within_the_horizon() -> None:
    t, h = 100 * DAY_MS, 60 * DAY_MS
    assert drift.label(t, t, h) == 1  # nothing after the prediction
    assert drift.label(t, None, h) == 1
    assert drift.label(t, t + 1, h) == 0  # back right after
    assert drift.label(t, t + h, h) == 0  # back on the horizon's last instant
    # back only after the horizon: the summary says whether they came within it
    assert drift.label(t, t + h + 1, h, lambda a, b: False) == 1
    assert drift.label(t, t + h + 1, h, lambda a, b: True) == 0


def test_judge_needs_enough_labelled_predictions() -> None:
    samples = [Sample(0.9, "high", 0, "", 1), Sample(0.2, "low", 0, "", 0),
               Sample(0.8, "high", 0, "", 0), Sample(0.5, "medium", 0, "")]
    few = judge(samples, min_labelled=4)
    assert few == {"labelled": 3, "pending": 1}
    r = judge(samples, min_labelled=3)
    assert r["auc"] == 1.0 and r["high_precision"] == 0.5 and r["churn_rate"] == pytest.approx(1 / 3)
    assert r["brier"] == pytest.approx((0.01 + 0.04 + 0.64) / 3)


def test_judge_compares_the_model_with_recency_on_the_same_predictions() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(3000) < 0.3).astype(int)
    days = np.round(rng.exponential(10.0, 3000) + 25.0 * y, 3)  # the churned were away longer
    score = 0.5 + 0.1 * rng.standard_normal(3000) + 0.05 * y  # a model that learned little
    samples = [Sample(float(p), "low", 0, "", int(label), float(d))
               for p, label, d in zip(score, y, days, strict=True)]
    # entries written before recency was kept are judged, but not compared
    samples += [Sample(0.9, "high", 0, "", 1), Sample(0.1, "low", 0, "", 0)]
    r = judge(samples, min_labelled=200)
    assert r["labelled"] == 3002 and r["recency_samples"] == 3000
    assert r["recency_auc"] == pytest.approx(roc_auc_score(y, days), abs=1e-12)
    model_auc = roc_auc_score(y, score)
    assert r["auc_over_recency"] == pytest.approx(model_auc - r["recency_auc"], abs=1e-12)
    assert r["auc_over_recency"] + 2 * r["auc_over_recency_stderr"] < 0  # what the alert asks
    # fewer than min_labelled with recency: no comparison
    r = judge(samples[:150] + [Sample(0.5, "low", 0, "", 0)] * 100, min_labelled=200)
    assert r["recency_samples"] == 150 and "auc_over_recency" not in r


def test_cohort_entries_round_trip() -> None:
    s = Sample(0.1234567, "medium", 1_700_000_000_000, "0123", None, 12.5)
    back = Sample.loads(s.dumps())
    assert back == Sample(0.123457, "medium", 1_700_000_000_000, "0123", None, 12.5)
    # an entry written before recency was kept still reads
    assert Sample.loads('[0.5,"low",1,"",0]') == Sample(0.5, "low", 1, "", 0, None)
    assert Sample.loads("not json") is None
    c = Cohort("odd|version-1", 20_000, 60)
    assert Cohort.parse(c.member) == c and Cohort.parse("junk") is None


def test_gauges_follow_the_report_and_say_when_drift_cannot_be_computed() -> None:
    registry = CollectorRegistry()
    metrics = QualityMetrics(registry)
    metrics.export({"at": 1.0, "versions": {
        "new-1": {"labelled": 300, "pending": 20, "auc": 0.81, "brier": 0.15,
                  "calibration_error": 0.03, "high_precision": 0.7, "churn_rate": 0.4,
                  "holdout_auc": 0.9, "reference": True, "score_psi": 0.02,
                  "recency_auc": 0.84, "auc_over_recency": -0.03, "recency_samples": 280,
                  "auc_over_recency_stderr": 0.01,
                  "feature_psi": {"spend_365": 0.3},
                  "calibration": [{"bin": "0.9-1.0", "rows": 5, "predicted": 0.95,
                                   "observed": 0.8}]},
        "old-1": {"labelled": 5, "pending": 0, "reference": False, "holdout_auc": None}}})

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("churnwatch_model_live_auc", model_version="new-1") == 0.81
    assert value("churnwatch_model_holdout_auc", model_version="new-1") == 0.9
    assert value("churnwatch_model_live_recency_auc", model_version="new-1") == 0.84
    assert value("churnwatch_model_live_auc_over_recency", model_version="new-1") == -0.03
    assert value("churnwatch_model_live_auc_over_recency_stderr", model_version="new-1") == 0.01
    assert value("churnwatch_model_live_recency_auc", model_version="old-1") is None
    assert value("churnwatch_model_live_recency_samples", model_version="new-1") == 280
    assert value("churnwatch_model_live_recency_samples", model_version="old-1") is None
    assert value("churnwatch_model_feature_psi", model_version="new-1", feature="spend_365") == 0.3
    assert value("churnwatch_model_live_observed_churn", model_version="new-1", bin="0.9-1.0") == 0.8
    assert value("churnwatch_model_drift_reference", model_version="old-1") == 0
    assert value("churnwatch_model_live_auc", model_version="old-1") is None
    assert value("churnwatch_model_live_samples", model_version="old-1", state="labelled") == 5
    # a version no longer reported disappears (bounded label values)
    metrics.export({"at": 2.0, "versions": {"new-1": {"labelled": 1, "pending": 0}}})
    assert value("churnwatch_model_drift_reference", model_version="old-1") is None
    assert value("churnwatch_model_live_auc", model_version="new-1") is None
    assert value("churnwatch_model_quality_last_pass_timestamp_seconds") == 2.0


def test_a_model_without_a_reference_has_no_drift() -> None:
    class Old:
        card = {"holdout": {"model": {"roc_auc": 0.9}}}  # trained before the reference

    class Scorecard:
        version = "scorecard-1"

    assert reference_of(Old()) is None and reference_of(Scorecard()) is None
