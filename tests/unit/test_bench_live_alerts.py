"""The live-operation replay (bench/live_alerts.py) behind docs/notifier.md's table of what
staff receive: it runs, and what it counts obeys the notifier's policy."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

from bench.live_alerts import main, simulate
from services.scoring.features import DAY_MS


def test_a_short_replay_counts_alerts_once_per_episode_and_renders_the_table(capsys) -> None:
    outcome, acts = simulate("salon", customers=150, weeks=2)
    assert outcome.active > 0 and 0.0 <= outcome.base_churn <= 1.0
    assert all(c in acts for c, _ in outcome.alerts + outcome.digests + outcome.won_back)
    # an episode alerts a recipient once: the same customer again only after it ended, which
    # takes a return (won back) or a week at low
    per_customer = Counter(c for c, _ in outcome.alerts)
    for c, n in per_customer.items():
        if n > 1:
            times = sorted(t for x, t in outcome.alerts if x == c)
            assert all(b - a >= 7 * DAY_MS for a, b in zip(times, times[1:], strict=False)) or \
                any(x == c for x, _ in outcome.won_back), c
    assert main(["--customers", "40", "--weeks", "1", "restaurant"]) == 0
    out = capsys.readouterr().out
    assert "| business |" in out and "| restaurant | " in out
    # what a business gets that never set its type: every preset scored as `default`
    assert main(["--customers", "40", "--weeks", "1", "--business", "default", "eshop"]) == 0
    out = capsys.readouterr().out
    assert "scored as default" in out and "| eshop | " in out


def test_a_school_closed_for_the_summer_does_not_alert_about_its_students(capsys) -> None:
    # live from late June to mid-August: without its closures the school's students all look
    # gone a week into the break
    end = datetime(2026, 10, 15, tzinfo=UTC)
    summer = [(date(2025, 7, 1), date(2025, 8, 31)), (date(2026, 7, 1), date(2026, 8, 31))]
    told, _ = simulate("school", customers=300, weeks=4, end=end)
    closed, _ = simulate("school", customers=300, weeks=4, end=end, closed=summer)
    assert len(told.alerts) > 10 and len(closed.alerts) * 5 < len(told.alerts), \
        (len(told.alerts), len(closed.alerts))
    assert len(closed.digests) * 3 < len(told.digests)
    assert main(["--customers", "30", "--weeks", "1", "--end", "2026-10-15",
                 "--closed", "2026-07-01..2026-08-31", "school"]) == 0
    out = capsys.readouterr().out
    assert "closed 2026-07-01..2026-08-31" in out and "| school | " in out
