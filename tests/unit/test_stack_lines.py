"""The tier-change lines ``churnwatch up`` prints while the stack runs (a pure function)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.cli.stack import catching_up, change_line, history_line, status_keys, status_line
from services.common.riskchange import RiskChange
from services.common.settings import parse_api_keys


def _reason(code: str, text: str, weight: float = 1.0) -> dict[str, Any]:
    return {"code": code, "text": text, "text_zh": text, "weight": weight}


def _change(tier: str, previous: str, score: float, *reasons: dict[str, Any]) -> dict[str, Any]:
    return {"customer_id": "sal-00025", "store_id": "salon-downtown", "tier": tier,
            "previous_tier": previous, "score": score, "reasons": list(reasons)}


def test_a_rule_raised_tier_shows_why_the_customer_is_at_risk() -> None:
    """A regular two cadences overdue, raised to medium by the default rules at a low score:
    the line names the overdue visit and says the rule did it, not "Raised to medium by a
    business rule" — which says neither why nor which rule."""
    line = change_line(_change(
        "medium", "low", 0.2478,
        _reason("tier_raised_by_rule", "Raised to medium by a business rule (score 0.25)", 0.0),
        _reason("overdue", "53 days since the last visit; usually every 24 days", 9.0),
        _reason("frequency_decline", "Came on 2 days in the last 90; usually about 3")),
        "sal-00025")
    assert line.startswith("▲ sal-00025")
    assert "low → medium" in line and "score 0.25 by rule" in line
    assert line.endswith("53 days since the last visit; usually every 24 days")
    assert "business rule" not in line


def test_a_scored_change_shows_its_first_reason() -> None:
    line = change_line(_change("low", "high", 0.28, _reason(
        "rare_visits", "Comes rarely: on 2 days in the last year")), "c-1")
    assert line.startswith("▼ c-1") and "high → low" in line and "score 0.28  Comes" in line
    down = change_line(_change("medium", "high", 0.5, _reason("x", "y")), "c-1")
    assert down.startswith("▼")


def test_held_and_reasonless_changes_still_print() -> None:
    held = change_line(_change("high", "medium", 0.6, _reason(
        "tier_held_dwell", "Held at high for now", 0.0)), "c-2")
    assert "score 0.60 held  Held at high for now" in held  # nothing else to say: its own text
    bare = change_line(_change("high", "low", 0.9), "c-3")
    assert bare.rstrip().endswith("score 0.90")


def test_history_being_caught_up_on_is_counted_not_printed() -> None:
    """The demo's first seconds printed dozens of one-visit customers going to medium and back
    as their own history arrived; changes staff are not alerted about (the notifier's test:
    marked as catching up, or caused longer than the alert age ago) are counted instead, live
    ones printed."""
    now = 1_780_000_000.0  # 2026-05-28T20:26:40Z
    day = 86_400.0
    extra: Any = RiskChange.model_config.get("json_schema_extra")
    example: dict[str, Any] = dict(extra["examples"][0])

    def caused(at: Any, **more: Any) -> dict[str, Any]:
        return {**example, "cause": {"kind": "event", "event_id": "e-1", "occurred_at": at},
                **more}

    old = caused("2026-03-01T10:00:00Z")
    assert catching_up(old, now, 2 * day)
    assert not catching_up(old, now, 120 * day)  # the demo's 60 live days and more
    assert not catching_up(caused("2026-05-28T08:00:00+00:00"), now, 2 * day)
    assert catching_up(caused("2026-05-28T08:00:00+00:00", catching_up=True), now, 2 * day)
    assert not catching_up({**example}, now, 2 * day)  # no cause time: printed
    assert not catching_up({"tier": "high"}, now, 2 * day)  # not a risk change: printed
    assert history_line(1, 2 * day).startswith("  … 1 tier change caused more than 2 days ago")
    assert "1,204 tier changes caused more than 60 days ago not shown so far" in history_line(
        1204, 60 * day)
    assert "more than 6 hours ago" in history_line(3, 6 * 3600.0)


def test_the_status_line_adds_up_every_tenant_and_says_whose_counters_it_shows() -> None:
    """With only tenant-bound keys the line read the first key's tenant and said nothing of
    it: a stack fed by two tenants showed one tenant's 6,393 events as everything accepted."""
    keys = parse_api_keys("a0000000000000001:ingest+read@acme,a0000000000000002:read@acme/north,"
                          "b0000000000000001:ingest@bravo,b0000000000000002:read@bravo/south")
    chosen = status_keys(keys)
    assert [(k.tenant, k.stores) for k in chosen] == [("acme", None), ("bravo", frozenset({"south"}))]
    line = status_line([(chosen[0], {"events_accepted_total": 6393, "events_scored_total": 6393,
                                     "scorer_lag": 4, "risk_changes_total": 900}),
                        (chosen[1], {"events_accepted_total": 17811, "events_scored_total": 17000,
                                     "scorer_lag": 4, "risk_changes_total": 400})],
                       1, 2, Path("/out"))
    assert line == ("status (tenants acme, bravo (some stores)): 24204 events accepted, 23393 "
                    "scored, lag 4, 1300 risk changes; delivered 1 e-mail, 2 SMS (in /out)")
    # an admin of the default tenant sees the whole deployment: it alone, and no label
    wide = parse_api_keys("r0000000000000001:read@acme,x0000000000000001:admin")
    assert [k.tenant for k in status_keys(wide)] == ["default"]
    assert status_line([(status_keys(wide)[0], {"events_accepted_total": 5})], 0, 0,
                       Path("/out")).startswith("status: 5 events accepted, 0 scored, lag 0")
    # no authentication
    assert status_line([(None, {"events_accepted_total": 5})], 2, 1, Path("/o")) == (
        "status: 5 events accepted, 0 scored, lag 0, 0 risk changes; delivered 2 e-mails, 1 SMS "
        "(in /o)")
