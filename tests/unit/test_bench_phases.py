"""The state bench's events (bench/state_bench.py) land on one UTC day whatever the hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.state_bench import PER_CUSTOMER, phase_end, phase_events


@pytest.mark.parametrize("hour", range(24))
def test_a_phases_events_stay_on_one_day_at_any_hour(hour: int) -> None:
    now = datetime(2026, 12, 3, hour, 17, 31, tzinfo=UTC)
    end = phase_end(now)
    assert end <= now - timedelta(hours=1)
    events = phase_events("c", 100, end)
    days = {datetime.fromisoformat(e["occurred_at"]).date() for e in events}
    assert len(days) == 1
    assert len(events) == 100 * PER_CUSTOMER
