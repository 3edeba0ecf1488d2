"""Drift and live quality on a real Redis and broker: customers scored by the real processor
under the event clock, one quality pass samples their predictions, the clock moves past the
horizon, the next pass labels them by whether each came back, and the gauges say how well the
model did and how far the population moved from the training reference."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.common.kafka import start_producer
from services.common.redisconn import Keys, make_redis
from services.scorer.processor import Processor, Record
from services.scorer.quality import QualityTracker
from services.scoring.drift import build_reference
from services.scoring.engine import Engine
from services.scoring.features import FEATURE_NAMES
from services.scoring.model import SklearnModel, feature_matrix, load_model
from services.state.store import StateStore, read_states

pytestmark = pytest.mark.integration


def _event(cid: str, n: int, at: datetime, kind: str = "visit") -> dict[str, Any]:
    return {"event_id": f"{cid}-{n}", "type": kind, "customer_id": cid,
            "occurred_at": at.isoformat(), "store_id": "store-1",
            **({"amount": 40.0} if kind == "transaction" else {})}


@pytest.mark.parametrize("redis_kind", ["single", "cluster"])
async def test_live_outcomes_and_drift_per_model_version(redis_kind: str,
                                                         request: pytest.FixtureRequest) -> None:
    # every key is a single key: the same pass runs on a Redis Cluster
    factory = request.getfixturevalue("settings_factory" if redis_kind == "single"
                                      else "cluster_settings_factory")
    settings = factory(clock="event", quality_min_labelled=10, quality_sample_size=500)
    served = load_model(settings.model)
    assert isinstance(served, SklearnModel)
    horizon = int(served.card["horizon_days"])
    t0 = (datetime.now(UTC) - timedelta(days=horizon + 60)).replace(hour=12, minute=0, second=0,
                                                                     microsecond=0)
    regulars = [f"reg-{i}" for i in range(15)]
    gone = [f"gone-{i}" for i in range(15)]
    events = [_event(c, w, t0 - timedelta(days=7 * (52 - w)), "transaction" if w % 2 else "visit")
              for c in regulars for w in range(53)]
    events += [_event(c, 0, t0 - timedelta(days=150 + i), "transaction")
               for i, c in enumerate(gone)]

    redis = make_redis(settings)
    producer = await start_producer(settings)
    store = StateStore.from_settings(redis, settings)
    # the served model with a training reference in its card (the shipped default model was
    # built before references existed): drift is measured against it
    model = SklearnModel(served.estimator, served.feature_names, served.version,
                         {**served.card}, served.explainer)
    rng = np.random.default_rng(7)
    X = feature_matrix(model, [{n: float(rng.exponential(20.0)) for n in FEATURE_NAMES}
                               for _ in range(200)])
    model.card["reference"] = build_reference(X, FEATURE_NAMES, model.predict(X),
                                              snapshot="test")
    proc = Processor(settings=settings, store=store, producer=producer,
                     registry=CollectorRegistry(),
                     engine=Engine.from_settings(model, settings))
    registry = CollectorRegistry()
    tracker = QualityTracker(store, settings, proc.engine.active.known, registry)
    offset = 0

    async def apply(batch: list[dict[str, Any]]) -> None:
        nonlocal offset
        records = []
        for e in batch:
            records.append(Record(settings.topic_events, 0, offset, e["customer_id"].encode(),
                                  json.dumps(e).encode()))
            offset += 1
        await proc.process(records)

    def gauge(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model_version": model.version, **labels})

    try:
        await apply(events)
        await proc.sweep([0])  # the silent ones are re-scored at the tenant's clock (t0)
        first = await tracker.run(force=True)
        assert first is not None and first["sampled"] == 30 and first["labelled_now"] == 0
        assert gauge("churnwatch_model_live_samples", state="pending") == 30
        assert gauge("churnwatch_model_live_auc") is None  # nothing labelled yet
        assert gauge("churnwatch_model_drift_reference") == 1
        psi = gauge("churnwatch_model_feature_psi", feature="tenure_days")
        assert psi is not None and np.isfinite(psi) and psi >= 0
        assert (gauge("churnwatch_model_score_psi") or -1) >= 0

        # the regulars come back within the horizon, the others never; two newcomers move
        # the tenant's event clock past the horizon
        back = [_event(c, 100, t0 + timedelta(days=horizon // 2)) for c in regulars]
        later = [_event(f"new-{i}", 0, t0 + timedelta(days=horizon + 2)) for i in range(2)]
        await apply(back + later)
        report = await tracker.run(force=True)
        assert report is not None and report["labelled_now"] == 30
        again = await tracker.run(force=True)  # labelled once, and not sampled again
        assert again is not None and again["labelled_now"] == 0
        assert again["versions"][model.version]["labelled"] == 30
        # labelled entries no longer name their customer (ids stay only until the horizon)
        cohort = await redis.hkeys(Keys(settings.redis_prefix).quality_cohort(
            model.version, int(t0.timestamp() * 1000) // 86_400_000))
        assert len(cohort) == 30 and all(isinstance(f, str) and f.startswith("~") and "/" not in f
                                         for f in cohort)
    finally:
        await producer.stop()

    r = report["versions"][model.version]
    assert r["labelled"] == 30 and r["churn_rate"] == 0.5
    states = await read_states(redis, Keys(settings.redis_prefix),
                               [("default", c) for c in gone], ["risk"])
    gone_high = sum(json.loads(s["risk"])["tier"] == "high" for s in states)
    await redis.aclose()
    assert gauge("churnwatch_model_live_auc") == pytest.approx(r["auc"]) and r["auc"] > 0.9
    assert gauge("churnwatch_model_holdout_auc") == served.card["holdout"]["model"]["roc_auc"]
    # the same predictions ranked by days since the last activity alone (kept with each sample)
    assert r["recency_samples"] == 30 and r["recency_auc"] == 1.0  # the gone were away longer
    assert gauge("churnwatch_model_live_recency_auc") == 1.0
    assert gauge("churnwatch_model_live_recency_samples") == 30
    assert gauge("churnwatch_model_live_auc_over_recency") == pytest.approx(r["auc"] - 1.0)
    stderr = gauge("churnwatch_model_live_auc_over_recency_stderr")
    assert stderr is not None and stderr >= 0
    assert gauge("churnwatch_model_live_samples", state="labelled") == 30
    assert 0 <= (gauge("churnwatch_model_live_brier") or -1) < 0.5
    assert gauge("churnwatch_model_live_calibration_error") is not None
    observed = [registry.get_sample_value("churnwatch_model_live_observed_churn",
                                          {"model_version": model.version, "bin": b["bin"]})
                for b in r["calibration"]]
    assert all(v is not None and 0 <= v <= 1 for v in observed)
    if gone_high:  # the gone customers in the high tier all churned
        assert gauge("churnwatch_model_live_high_precision") == 1.0
    # drift compares the last 7 days of samples: 2 newcomers are too few to say anything
    assert r["drift_samples"] == 2 and gauge("churnwatch_model_feature_psi", feature="spend_365") is None
