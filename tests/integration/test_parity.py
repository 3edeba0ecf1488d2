"""Parity: for the same events and the same instant, the features and the score the streaming
scorer stores in Redis equal what ``churnwatch train`` computes offline (to float tolerance).

A real scorer (``churnwatch scorer``, event clock) consumes a generated history from the real
broker; every customer's stored risk carries its ``as_of``, its features and its score. The
offline side reads the same NDJSON file with the trainer's reader, builds the point-in-time
snapshot at that instant with the trainer's snapshot builder and scores it with the same
artifact."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.common.events import epoch_ms
from services.common.redisconn import Keys, make_redis
from services.scoring.features import FEATURE_NAMES
from services.scoring.model import load_model
from services.state.store import read_states
from services.synth import generate, write_ndjson
from services.training.dataset import build_snapshots, read_events
from tests.kafkatools import produce_events
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration
END = datetime(2026, 6, 30, tzinfo=UTC)


async def _wait_scored(settings, cids: list[str], total: int, timeout: float = 90.0
                      ) -> dict[str, dict]:
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    try:
        deadline = time.monotonic() + timeout
        while True:
            offsets = await redis.hgetall(keys.offsets(settings.topic_events))
            done = sum(int(v) for v in offsets.values())
            states = await read_states(redis, keys, [("default", c) for c in cids], ["risk"])
            risks = {c: s.get("risk") for c, s in zip(cids, states, strict=True)}
            if done >= total and all(risks.values()):
                return {c: json.loads(r) for c, r in risks.items() if r}
            if time.monotonic() > deadline:
                raise AssertionError(f"scorer processed {done} records, "
                                     f"{sum(1 for r in risks.values() if r)}/{len(cids)} scored")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


def test_streaming_features_and_scores_equal_offline(settings_factory, tmp_path: Path) -> None:
    # under a year of history, so nothing is trimmed from the scorer's window
    events: list[dict] = []
    for preset in ("salon", "retail"):
        part, _ = generate(preset=preset, customers=40, start=END - timedelta(days=300), end=END,
                           seed=17)
        events += part
    events.sort(key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]))
    history = tmp_path / "history.ndjson"
    write_ndjson(events, history)
    cids = sorted({e["customer_id"] for e in events})

    settings = settings_factory(clock="event", sweep_interval_seconds=3600)
    scorer = ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                            health_port_setting="scorer_metrics_port")
    with scorer:
        asyncio.run(produce_events(settings, events))
        risks = asyncio.run(_wait_scored(settings, cids, len(events)))

    model = load_model(None)  # what the scorer served: nothing configured
    log = read_events(history, END)
    compared = 0
    for cid, risk in risks.items():
        assert risk["model_version"] == model.version
        as_of = epoch_ms(datetime.fromisoformat(risk["as_of"].replace("Z", "+00:00")))
        snaps = build_snapshots({cid: log.activities[cid]}, [as_of], 30)
        if len(snaps) == 0:  # dormant for over a year at that instant: never snapshotted
            continue
        offline = dict(zip(FEATURE_NAMES, snaps.X[0].tolist(), strict=True))
        streamed = risk["features"]
        assert set(streamed) == set(FEATURE_NAMES)
        for name in FEATURE_NAMES:
            assert streamed[name] == pytest.approx(offline[name], abs=1e-6), (cid, name)
        score = float(model.predict(snaps.X)[0])
        assert risk["score"] == pytest.approx(score, abs=1e-6), cid
        compared += 1
    assert compared >= 0.9 * len(cids)
    assert np.isfinite([r["score"] for r in risks.values()]).all()
