"""The state bench's events (bench/state_bench.py) land on the UTC day of the bench's clock,
before it, whatever the hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.state_bench import PER_CUSTOMER, phase_clock, phase_events


@pytest.mark.parametrize("hour", range(24))
@pytest.mark.parametrize("minute", [0, 17])
def test_a_phases_events_land_on_the_day_of_now_and_before_it(hour: int, minute: int) -> None:
    now = datetime(2026, 12, 3, hour, minute, 31, tzinfo=UTC)
    end, unit = phase_clock(now)
    events = phase_events("c", 100, end, unit=unit)
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert {t.date() for t in times} == {now.date()}
    assert max(times) < now
    assert len(events) == 100 * PER_CUSTOMER
    if hour >= 12:  # the usual spacing: an hour between rounds, ending an hour ago
        assert (end, unit) == (now - timedelta(hours=1), timedelta(minutes=1))


def test_a_bench_started_seconds_after_midnight_still_fits_the_day() -> None:
    now = datetime(2026, 12, 3, 0, 0, 2, tzinfo=UTC)
    end, unit = phase_clock(now)
    times = [datetime.fromisoformat(e["occurred_at"]) for e in phase_events("c", 100, end, unit=unit)]
    assert {t.date() for t in times} == {now.date()} and max(times) < now
