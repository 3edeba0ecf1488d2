"""Model artifacts: the shipped default model, refusing incompatible artifacts with the reason,
explanations with the customer's own numbers, and the cost of one batch predict."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from services.common.exceptions import ConfigError, ModelError
from services.common.settings import load_settings
from services.scoring.engine import Engine, Subject
from services.scoring.features import FEATURE_NAMES, compute_features
from services.scoring.model import (
    DEFAULT_MODEL_PATH,
    SklearnModel,
    feature_matrix,
    load_model,
    read_artifact,
)
from services.scoring.rules import load_rules
from services.scoring.scorecard import Scorecard
from services.scoring.tiers import Thresholds
from services.synth import generate
from services.training.dataset import build_snapshots, observation_dates
from services.training.default_model import UNTIL
from tests.data import regular
from tests.unit.test_features import acts, at


@pytest.fixture(scope="module")
def default() -> SklearnModel:
    model = load_model(None)
    assert isinstance(model, SklearnModel), "the shipped default model did not load"
    return model


@pytest.fixture(scope="module")
def fixed_rows() -> np.ndarray:
    """A fixed input: point-in-time snapshots of generated retail customers."""
    events, _ = generate(preset="retail", customers=150, start=UNTIL.replace(year=2025), end=UNTIL,
                         seed=99)
    by_cid: dict[str, list[Any]] = {}
    for e in events:
        by_cid.setdefault(e["customer_id"], []).extend(acts([e]))
    first = min(a.ts for v in by_cid.values() for a in v)
    dates = observation_dates(first, int(UNTIL.timestamp() * 1000), 30, warmup_days=60)[-3:]
    return build_snapshots(by_cid, dates, 30).X


def test_the_default_model_ships_and_serves_when_nothing_is_configured(default: SklearnModel) -> None:
    assert DEFAULT_MODEL_PATH.stat().st_size < 2_000_000
    assert default.feature_names == FEATURE_NAMES
    assert default.version.startswith(("gradient_boosting-", "logistic_regression-", "random_forest-",
                                       "portable_logistic-"))
    assert default.card["data_range"][1].startswith("2026-06")
    assert default.card["holdout"]["model"]["roc_auc"] >= 0.85
    assert isinstance(load_model(Path("scorecard")), Scorecard)
    assert load_settings(model="scorecard").model == Path("scorecard")


def _blob(**over: Any) -> dict[str, Any]:
    blob = dict(joblib.load(DEFAULT_MODEL_PATH))
    blob.update(over)
    return blob


@pytest.mark.parametrize(("change", "why"), [
    ({"feature_schema": 1}, "trained on feature schema 1, this churnwatch computes schema 3"),
    ({"feature_names": [*FEATURE_NAMES, "shoe_size"]}, r"needs features \['shoe_size'\]"),
    ({"format_version": 1}, "has artifact format 1, this churnwatch reads format 2"),
    ({"sklearn_version": "0.24.2"}, "trained with scikit-learn 0.24.2, this installation has"),
    ({"format": "pickle"}, "is not a churnwatch model artifact"),
    ({"estimator": "not a model"}, "holds no classifier with predict_proba"),
])
def test_incompatible_artifacts_are_refused_with_the_reason(tmp_path: Path, change: dict[str, Any],
                                                           why: str) -> None:
    path = tmp_path / "bad.joblib"
    joblib.dump(_blob(**change), path)
    with pytest.raises(ModelError, match=why):
        read_artifact(path)
    with pytest.raises(ConfigError, match=f"CHURNWATCH_MODEL={path} cannot be served: .*{why}"):
        load_model(path)  # what the scorer and the API do at start-up


def test_unreadable_and_missing_artifacts(tmp_path: Path) -> None:
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"definitely not a pickle")
    with pytest.raises(ModelError, match="cannot read model artifact"):
        read_artifact(junk)
    with pytest.raises(ModelError, match="does not exist"):
        read_artifact(tmp_path / "nope.joblib")
    with pytest.raises(ConfigError, match="CHURNWATCH_MODEL=.*is not a file"):
        load_settings(model=tmp_path / "nope.joblib")


def test_explanations_use_the_customers_own_numbers(default: SklearnModel) -> None:
    engine = Engine(default, Thresholds(), rules=load_rules(None, "salon"))
    history = acts(regular("r", every_days=28, count=10))
    late, on_time = at(28 * 9 + 63), at(28 * 9 + 5)
    [gone, fine] = engine.assess([Subject("r", history), Subject("r", history)], late,
                                 with_history=False)
    assert gone.tier in ("medium", "high") and gone.model_version == default.version
    # the salon rule (2 x cadence overdue) raises the tier above the score's own, and says so
    assert gone.reasons[0].code == "tier_raised_by_rule"
    assert "rule" in gone.reasons[0].text and f"{gone.score:.2f}" in gone.reasons[0].text
    top = gone.reasons[1]
    assert top.code == "overdue"
    assert top.text == "63 days since the last visit; usually every 28 days"
    assert top.text_zh == "距上次到店已63天；平时每28天一次"
    [regular_now] = engine.assess([Subject("r", history)], on_time, with_history=False)
    assert regular_now.tier == "low" and regular_now.score < gone.score
    # model reasons: attributions in log-odds from the artifact's surrogate, no model call
    f = compute_features(history, late)
    contrib = default.attributions(feature_matrix(default, [f]))
    assert contrib is not None and contrib.shape == (1, len(FEATURE_NAMES))
    assert all(r.text and r.text_zh for r in gone.reasons)


def test_one_vectorised_predict_per_batch_is_cheap(default: SklearnModel, fixed_rows: np.ndarray) -> None:
    rows = np.resize(fixed_rows, (1000, fixed_rows.shape[1]))
    default.predict(rows)  # warm up
    best = min(_timed(lambda: default.predict(rows)) for _ in range(5))
    per_row_us = best / 1000 * 1e6
    sys.stderr.write(f"default model predict: {per_row_us:.1f} us/row in a batch of 1000\n")
    assert per_row_us < 200


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_make_model_rebuilds_the_default_with_the_same_predictions(
        default: SklearnModel, fixed_rows: np.ndarray, tmp_path: Path) -> None:
    from services.training.default_model import build

    report = build(tmp_path, travel=False)  # the leave-one-out check: tests/unit/test_travel.py
    rebuilt = read_artifact(tmp_path / DEFAULT_MODEL_PATH.name)
    assert np.allclose(rebuilt.predict(fixed_rows), default.predict(fixed_rows), atol=1e-9)
    assert rebuilt.version == default.version == report.model_version
    for suffix in (".report.json", ".card.json", ".roc.png", ".calibration.png"):
        assert (tmp_path / (DEFAULT_MODEL_PATH.name + suffix)).stat().st_size > 0


def test_shipped_model_files_name_no_path_of_the_machine_that_built_them(tmp_path: Path) -> None:
    """A clone lives anywhere: the shipped report names files by their repository path."""
    import json

    from services.training.default_model import _repo_relative

    folder = DEFAULT_MODEL_PATH.parent
    for name in ("churn.joblib.report.json", "churn.joblib.card.json"):
        text = (folder / name).read_text()
        assert not re.search(r'"/(work|home|tmp|root|Users)/', text), f"{name} holds an absolute path"

    root = Path(__file__).resolve().parents[2]
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"out": f"{root}/services/x.joblib", "n": 1,
                                  "plots": {"roc": f"{root}/a.png", "elsewhere": "/srv/b.png"}}))
    _repo_relative(report)
    assert json.loads(report.read_text()) == {
        "out": "services/x.joblib", "n": 1, "plots": {"roc": "a.png", "elsewhere": "/srv/b.png"}}


def test_shadow_comparison_counts_agreement_and_moves_to_and_from_high() -> None:
    from services.scoring.shadow import compare

    rows = [(0.9, "high", 0.95, "high"), (0.8, "high", 0.4, "medium"), (0.2, "low", 0.8, "high"),
            (0.1, "low", 0.05, "low")]
    out = compare(rows)
    assert out["customers"] == 4 and out["tier_agreement"] == 0.5
    assert out["tiers"]["high"] == {"low": 0, "medium": 1, "high": 1}
    assert out["shadow_raises_to_high"] == 1 and out["shadow_lowers_from_high"] == 1
    assert out["spearman"] == 0.8 and out["mean_abs_score_diff"] == 0.275
    assert compare([])["customers"] == 0 and "note" in compare([])
