"""What the state store writes for one customer, without Redis: the compact risk snapshot reads
back as exactly the JSON the previous layout stored, and the index entry round-trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from services.scoring.summary import Summary
from services.state.store import (
    CustomerState,
    IndexEntry,
    compact_index,
    index_score,
    priority_from_index,
    risk_json,
    risk_snapshot,
)


def _snap(features: dict[str, float]) -> dict[str, object]:
    return {"score": 0.731234, "tier": "high",
            "reasons": [{"code": "overdue", "text": "Late", "text_zh": "逾期", "weight": 0.4}],
            "suggested_action": {"code": "call", "text": "Call", "text_zh": "致电"},
            "value_tier": "high", "lifecycle_stage": "active", "model_version": "m-1",
            "as_of": "2026-12-01T10:00:00Z", "features": features}


def test_risk_snapshot_reads_back_as_the_full_json() -> None:
    features = {n: round(i * 1.234567 + 0.1, 6) for i, n in enumerate(FEATURE_NAMES)}
    features["has_cadence"] = 1.0
    snap = _snap(features)
    full = json.dumps(snap, separators=(",", ":"), ensure_ascii=False)
    stored = risk_snapshot(snap)
    assert json.loads(stored)["features"][0] == FEATURE_SCHEMA_VERSION
    assert len(stored) < len(full) - 400
    assert risk_json(stored) == full  # byte for byte what readers saw before
    assert risk_json(full) == full  # the previous layout's snapshot, as is
    # features not last (not what risk_snapshot writes today): read by parsing, same result
    first = {"features": features, **{k: v for k, v in snap.items() if k != "features"}}
    assert risk_json(risk_snapshot(first)) == json.dumps(first, separators=(",", ":"),
                                                         ensure_ascii=False)


def test_risk_snapshot_keeps_unusual_features_by_name() -> None:
    snap = _snap({"tenure_days": 3.0})  # not the schema's names: stored as they are
    assert risk_json(risk_snapshot(snap)) == json.dumps(snap, separators=(",", ":"),
                                                        ensure_ascii=False)
    unknown = json.dumps({"score": 0.1, "features": [FEATURE_SCHEMA_VERSION + 99, 1.0]},
                         separators=(",", ":"))
    assert json.loads(risk_json(unknown))["features"] == {}
    assert risk_json("{not json") == "{not json"


def test_index_entry_round_trips_through_its_compact_form() -> None:
    e = IndexEntry(tier="medium", priority=1554.603645, store="store-shanghai-jingan-01",
                   moved_from=None, changed=True, due_ms=1796306001117, partition=11,
                   holdout=False)
    fields = {"tier": "medium", "due": "1796306001117", "score": "0.7"}
    stored = json.dumps(compact_index(e.to_json(), fields), separators=(",", ":"))
    assert len(stored) <= 64, stored
    cs = CustomerState("c", Summary.empty(), {**fields, "ix": stored})
    assert cs.index_entry == e
    # an entry written before (full form) still reads
    old = CustomerState("c", Summary.empty(), {"ix": json.dumps(e.to_json())})
    assert old.index_entry == e
    # a due time that differs from the hash's is kept as is
    e2 = IndexEntry("low", 0.0, None, None, False, None, None, False)
    assert IndexEntry.from_json(compact_index(e2.to_json(), fields), fields) == e2


@given(st.lists(st.tuples(st.floats(0, 1e9), st.sampled_from(
    ["new", "active", "at_risk", "won_back", "dormant", "churned"])), min_size=1, max_size=20))
def test_the_tier_index_puts_churned_customers_last_and_keeps_each_priority(
        rows: list[tuple[float, str]]) -> None:
    """Sorted by the index score (highest first), every customer who can still be kept
    comes before every churned one, each group by priority; the priority reads back."""
    rows = [(round(p, 6), stage) for p, stage in rows]
    scored = sorted(((index_score(p, stage), p, stage) for p, stage in rows), reverse=True)
    churned = [stage == "churned" for _, _, stage in scored]
    assert churned == sorted(churned)  # False (kept) first, then True
    for group in (False, True):
        ps = [p for _, p, stage in scored if (stage == "churned") == group]
        assert ps == sorted(ps, reverse=True)
    for score, p, _ in scored:
        assert priority_from_index(score) == pytest.approx(p, rel=1e-9, abs=1e-6)
