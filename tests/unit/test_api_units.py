"""Pure parts of the query API: cursors, token buckets, holdout, periods, CSV."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.records import cursor
from services.records.churn import period_bounds
from services.records.errors import Invalid
from services.records.holdout import holdout, in_holdout
from services.web.formats import _cell
from services.web.ratelimit import RateLimiter


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False).map(repr), st.text(max_size=300))
def test_cursor_round_trips(score: str, member: str) -> None:
    assert cursor.decode(cursor.encode(score, member)) == (score, member)


@pytest.mark.parametrize("bad", ["", "nope", "W10", "WyJ4IiwieSJd", "!!!"])
def test_foreign_cursors_are_refused_clearly(bad: str) -> None:
    with pytest.raises(Invalid, match="cursor"):
        cursor.decode(bad)


def test_token_bucket_allows_bursts_then_paces() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("k", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", now=100.0)
    assert wait == pytest.approx(0.5)
    assert RateLimiter.retry_after(wait) == "1"
    assert limiter.take("k", now=100.5) == 0.0
    assert limiter.take("other", now=100.5) == 0.0  # per key
    assert RateLimiter(rate=0, burst=1).take("k") == 0.0  # off


def test_holdout_is_deterministic_and_near_the_share() -> None:
    ids = [f"c{i}" for i in range(20_000)]
    chosen = [c for c in ids if in_holdout("acme", c, 0.1)]
    assert 0.09 < len(chosen) / len(ids) < 0.11
    assert chosen == [c for c in ids if in_holdout("acme", c, 0.1)]
    assert chosen != [c for c in ids if in_holdout("other", c, 0.1)]
    assert not any(in_holdout("acme", c, 0.0) for c in ids[:100])
    assert not holdout("medium", "acme", chosen[0], 0.1) and holdout("high", "acme", chosen[0], 0.1)


def test_period_bounds_are_contiguous_calendar_periods() -> None:
    now = datetime(2026, 2, 11, 9, 30, tzinfo=UTC)
    months = period_bounds("month", 3, now)
    assert [(a.date().isoformat(), b.date().isoformat()) for a, b in months] == [
        ("2025-12-01", "2026-01-01"), ("2026-01-01", "2026-02-01"), ("2026-02-01", "2026-03-01")]
    quarters = period_bounds("quarter", 2, now)
    assert [a.month for a, _ in quarters] == [10, 1]
    weeks = period_bounds("week", 4, now)
    assert all(a.weekday() == 0 for a, _ in weeks) and weeks[-1][0] <= now < weeks[-1][1]
    assert all(weeks[i][1] == weeks[i + 1][0] for i in range(3))


def test_csv_cells_cannot_inject_formulas() -> None:
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell(None) == "" and _cell(True) == "true" and _cell(0.5) == 0.5
