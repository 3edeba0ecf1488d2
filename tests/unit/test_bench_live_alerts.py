"""The live-operation replay (bench/live_alerts.py) behind docs/notifier.md's table of what
staff receive: it runs, and what it counts obeys the notifier's policy."""

from __future__ import annotations

from collections import Counter

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
