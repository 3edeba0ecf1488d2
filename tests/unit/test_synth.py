"""The synthetic POS generator: deterministic, schema-valid, and with the latent behaviour it
promises (personal cadences, churners going silent, complaints resolved later)."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.common.events import parse_json, validate_event
from services.synth import PRESETS, SynthCustomer, SynthError, generate, write_ndjson

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2025, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def histories() -> dict[str, tuple[list[dict[str, Any]], list[SynthCustomer]]]:
    return {p: generate(preset=p, customers=600, start=START, end=END, seed=7) for p in PRESETS}


def _when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


def _by_customer(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["customer_id"]].append(e)
    return out


def test_same_seed_same_history_other_seed_other_history() -> None:
    a = generate(preset="salon", customers=80, start=START, end=END, seed=3)
    b = generate(preset="salon", customers=80, start=START, end=END, seed=3)
    c = generate(preset="salon", customers=80, start=START, end=END, seed=4)
    assert a == b
    assert a[0] != c[0]
    assert {e["event_id"] for e in a[0]}.isdisjoint({e["event_id"] for e in c[0]})


def test_a_customer_does_not_depend_on_how_many_are_generated() -> None:
    small, _ = generate(preset="restaurant", customers=10, start=START, end=END, seed=1)
    large, _ = generate(preset="restaurant", customers=50, start=START, end=END, seed=1)
    first_ten = {f"res-{i:05d}" for i in range(10)}
    assert small == [e for e in large if e["customer_id"] in first_ten]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_event_passes_the_contract_validation(histories: Any, preset: str) -> None:
    events, customers = histories[preset]
    assert len(events) > 1000
    for i, e in enumerate(events):
        event, errors = validate_event(json.loads(json.dumps(e)), i)
        assert event is not None, (e, errors)
        assert event.occurred_at.utcoffset() is not None
        assert START <= event.occurred_at <= END
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    assert all(len(i) <= 128 for i in ids)
    assert {e["customer_id"] for e in events} <= {c.customer_id for c in customers}


@pytest.mark.parametrize("preset", PRESETS)
def test_events_are_sorted_and_shaped_like_a_pos_feed(histories: Any, preset: str) -> None:
    events, customers = histories[preset]
    times = [_when(e) for e in events]
    assert times == sorted(times)
    assert "+01:00" in events[0]["occurred_at"]
    kinds = Counter(e["type"] for e in events)
    assert kinds["transaction"] > kinds["complaint"] > 0
    for e in events:
        assert e["store_id"].startswith(f"{preset}-")
        if e["type"] == "transaction":
            assert isinstance(e["amount"], float) and e["currency"] == "EUR"
            assert isinstance(e["quantity"], int) and e["quantity"] >= 1
        elif e["type"] == "visit":
            assert e["service"] and e["staff_id"]
        else:
            assert e["severity"] in ("low", "medium", "high")
            assert e["status"] in ("open", "resolved") and e["complaint_id"]
    assert {c.store_id for c in customers} <= {e["store_id"] for e in events}
    refunds = [e for e in events if e["type"] == "transaction" and e["amount"] < 0]
    # an online shop takes goods back as routine (wrong size, changed mind); elsewhere a refund
    # follows a bad experience
    assert len(refunds) < (0.2 if preset == "eshop" else 0.05) * kinds["transaction"]


def test_salon_visits_usually_come_with_a_purchase(histories: Any) -> None:
    events, _ = histories["salon"]
    kinds = Counter(e["type"] for e in events)
    assert 0.8 * kinds["visit"] < kinds["transaction"] <= 1.1 * kinds["visit"]
    assert "salon-downtown" in {e["store_id"] for e in events}


def test_complaints_are_often_resolved_later_under_the_same_id(histories: Any) -> None:
    events, _ = histories["salon"]
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["type"] == "complaint":
            by_id[e["complaint_id"]].append(e)
    resolved = 0
    for updates in by_id.values():
        assert updates[0]["status"] == "open"
        assert len({u["customer_id"] for u in updates}) == 1
        if len(updates) > 1:
            assert [u["status"] for u in updates] == ["open", "resolved"]
            assert _when(updates[1]) >= _when(updates[0])
            resolved += 1
    assert 0.3 * len(by_id) < resolved < 0.95 * len(by_id)


@pytest.mark.parametrize(("preset", "lo", "hi"), [("salon", 21, 56), ("restaurant", 7, 21)])
def test_customers_keep_their_personal_cadence(histories: Any, preset: str, lo: float, hi: float
                                               ) -> None:
    events, customers = histories[preset]
    by_customer = _by_customer(events)
    ratios = []
    for c in customers:
        assert lo <= c.cadence_days <= hi
        days = sorted({_when(e).date() for e in by_customer[c.customer_id] if e["type"] != "complaint"})
        if c.churn_at is None and len(days) >= 6:
            gaps = [(b - a).days for a, b in zip(days, days[1:], strict=False)]
            ratios.append(statistics.median(gaps) / c.cadence_days)
    assert len(ratios) > 50
    assert 0.75 < statistics.median(ratios) < 1.25
    assert sum(0.5 < r < 1.6 for r in ratios) > 0.9 * len(ratios)


def test_retail_has_many_one_time_buyers_and_irregular_repeaters(histories: Any) -> None:
    events, customers = histories["retail"]
    by_customer = _by_customer(events)
    purchase_days = [len({_when(e).date() for e in by_customer[c.customer_id]
                          if e["type"] == "transaction"}) for c in customers]
    assert sum(n == 1 for n in purchase_days) > 0.3 * len(customers)
    assert sum(n >= 4 for n in purchase_days) > 0.1 * len(customers)
    assert {e["channel"] for e in events} >= {"in_store", "online"}


@pytest.mark.parametrize("preset", PRESETS)
def test_churners_go_silent_and_few_come_back(histories: Any, preset: str) -> None:
    events, customers = histories[preset]
    by_customer = _by_customer(events)
    churners = [c for c in customers if c.churn_at is not None]
    assert 0.15 * len(customers) < len(churners) < 0.9 * len(customers)
    returned = 0
    for c in churners:
        assert c.churn_at is not None and START < c.churn_at < END
        times = [_when(e) for e in by_customer[c.customer_id]]
        assert times and min(times) < c.churn_at
        later = [t for t in times if t > c.churn_at]
        if later:
            returned += 1
            assert min(later) >= c.churn_at + timedelta(days=150), "a churner came back too soon"
    assert returned < 0.25 * len(churners)


def test_many_churners_drift_before_they_leave(histories: Any) -> None:
    """Tickets shrink over the last visits before churning, but not for loyal customers."""
    events, customers = histories["salon"]
    by_customer = _by_customer(events)

    def last_vs_mean(c: SynthCustomer) -> float | None:
        amounts = [e["amount"] for e in by_customer[c.customer_id]
                   if e["type"] == "transaction" and e["amount"] > 0
                   and (c.churn_at is None or _when(e) < c.churn_at)]
        return amounts[-1] / c.mean_ticket if len(amounts) >= 4 else None

    churned = [r for c in customers if c.churn_at is not None and (r := last_vs_mean(c))]
    loyal = [r for c in customers if c.churn_at is None and (r := last_vs_mean(c))]
    assert statistics.median(churned) < 0.9 * statistics.median(loyal)


def test_most_eshop_customers_buy_once_online_and_returns_are_routine(histories: Any) -> None:
    events, customers = histories["eshop"]
    purchases: dict[str, int] = Counter(e["customer_id"] for e in events
                                        if e["type"] == "transaction" and e["amount"] > 0)
    once = sum(n == 1 for n in purchases.values()) / len(purchases)
    assert 0.55 < once < 0.8, f"{once:.0%} one-time buyers"
    channels = Counter(e["channel"] for e in events)
    assert channels["online"] > 0.9 * sum(channels.values())
    refunds = sum(1 for e in events if e["type"] == "transaction" and e["amount"] < 0)
    assert 0.06 < refunds / sum(purchases.values()) < 0.2
    assert {c.store_id for c in customers} <= {"eshop-webshop", "eshop-marketplace"}
    assert not any(e["type"] == "visit" for e in events)


def test_busy_weekdays_are_busier(histories: Any) -> None:
    events, _ = histories["salon"]
    weekdays = Counter(_when(e).weekday() for e in events if e["type"] == "visit")
    assert weekdays[5] > weekdays[0] > weekdays[6]  # Saturday > Monday > Sunday


def test_write_ndjson_writes_one_valid_event_per_line(tmp_path: Path) -> None:
    events, _ = generate(preset="retail", customers=40, start=START, end=END, seed=2)
    path = tmp_path / "sub" / "events.ndjson"
    assert write_ndjson(events, path) == len(events)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(events)
    assert [parse_json(line) for line in lines] == events


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SynthError, match="unknown preset 'spa'"):
        generate(preset="spa", start=START, end=END)
    with pytest.raises(SynthError, match="must be after start"):
        generate(start=END, end=START)
    with pytest.raises(SynthError, match="UTC offset"):
        generate(start=datetime(2024, 1, 1), end=END)
    with pytest.raises(SynthError, match="stores must be at least 1"):
        generate(start=START, end=END, stores=0)
    assert generate(start=START, end=END, customers=0) == ([], [])


def test_more_stores_get_generic_names() -> None:
    events, _ = generate(preset="salon", customers=200, start=START, end=END, seed=5, stores=10)
    stores = {e["store_id"] for e in events}
    assert "salon-riverside" in stores and "salon-10" in stores


def test_generate_command_writes_events_and_true_churn_times(tmp_path: Path) -> None:
    from services.cli.main import main

    assert main(["generate", "--preset", "eshop", "--customers", "5", "--days", "90",
                 "--out", str(tmp_path / "eshop.ndjson")]) == 0
    out = tmp_path / "retail.ndjson"
    args = ["generate", "--preset", "retail", "--customers", "60", "--seed", "4",
            "--start", "2025-01-01T00:00:00Z", "--end", "2026-01-01T00:00:00Z", "--out", str(out)]
    assert main(args) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    truth = [json.loads(line) for line in (tmp_path / "retail.ndjson.truth.ndjson").read_text().splitlines()]
    assert events and len(truth) == 60
    assert all(validate_event(e)[0] is not None for e in events)
    assert {t["customer_id"] for t in truth} >= {e["customer_id"] for e in events}
    assert any(t["one_time"] for t in truth) and any(t["churn_at"] for t in truth)
    again = tmp_path / "again.ndjson"
    assert main([*args[:-1], str(again), "--truth", str(tmp_path / "t.ndjson")]) == 0
    assert again.read_bytes() == out.read_bytes()  # the seed reproduces the history


def test_seasonality_makes_busy_months_busier() -> None:
    events, _ = generate(preset="retail", customers=800, start=datetime(2024, 1, 1, tzinfo=UTC),
                         end=datetime(2026, 1, 1, tzinfo=UTC), seed=3)
    months = Counter(_when(e).month for e in events if e["type"] == "transaction")
    assert months[12] > 1.2 * months[2]
