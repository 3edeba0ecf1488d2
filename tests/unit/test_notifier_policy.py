"""Pure noise rules with injected time: quiet hours, episodes, inhibition, rate windows,
the circuit breaker, and the policy part of the routing file."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.common.exceptions import ConfigError
from services.common.riskchange import Cause, Reason, RiskChange, SuggestedAction
from services.notifier.breaker import CircuitBreaker
from services.notifier.digests import digest_changes, digest_event
from services.notifier.policy import (
    ALERT,
    DEDUPE,
    NONE,
    RESOLVE_COMPLAINT,
    WON_BACK,
    Episode,
    apply_inhibition,
    claim,
    decide_episode,
    next_at,
    quiet_until,
    rate_window,
    zone,
)
from services.notifier.routing import (
    Inhibit,
    QuietHours,
    parse_duration,
    parse_routing_text,
)

BASE = """
recipients: {m: {name: M, email: m@example.com}}
default_recipient: m
routes: [{match: {}, channels: [email]}]
"""


def change(previous: str, tier: str, *, cause: str = "silence", action: str = "personal_call",
           complaints: float = 0.0, event_type: str | None = None) -> RiskChange:
    return RiskChange(
        customer_id="c-1", previous_tier=previous, tier=tier, score=0.5,  # type: ignore[arg-type]
        reasons=[Reason(code="overdue", text="t", text_zh="z", weight=1.0)],
        suggested_action=SuggestedAction(code=action, text="Do it", text_zh="做"),
        value_tier="high", lifecycle_stage="active", model_version="m",
        as_of=datetime(2026, 11, 23, tzinfo=UTC), cause=Cause(kind=cause, event_type=event_type),  # type: ignore[arg-type]
        features={"open_complaints": complaints})


# quiet hours ---------------------------------------------------------------------------

NIGHT = QuietHours(start=time(21), end=time(8))
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize("utc_hour, expected_local_end", [
    (14, "2026-11-24T08:00"),   # 22:00 in Shanghai: until tomorrow 08:00
    (22, "2026-11-24T08:00"),   # 06:00 next day: until 08:00 the same day
    (2, None),                  # 10:00: daytime
    (13, "2026-11-24T08:00"),   # 21:00 exactly: quiet starts
    (0, None),                  # 08:00 exactly: quiet is over
])
def test_quiet_hours_across_midnight_in_the_store_zone(utc_hour: int, expected_local_end) -> None:
    now = datetime(2026, 11, 23 if utc_hour >= 13 else 24, utc_hour, tzinfo=UTC)
    if utc_hour == 22:
        now = datetime(2026, 11, 23, 22, tzinfo=UTC)
    until = quiet_until(now, SHANGHAI, NIGHT)
    if expected_local_end is None:
        assert until is None
    else:
        assert until is not None and until.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M") == expected_local_end
        assert until > now


def test_quiet_hours_within_a_day_and_disabled() -> None:
    lunch = QuietHours(start=time(12), end=time(14))
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)  # 13:30 in Berlin
    assert quiet_until(now, berlin, lunch) == datetime(2026, 11, 23, 14, tzinfo=berlin)
    assert quiet_until(datetime(2026, 11, 23, 13, 0, tzinfo=UTC), berlin, lunch) is None
    assert quiet_until(now, berlin, None) is None
    assert quiet_until(now, berlin, QuietHours(start=time(9), end=time(9))) is None


def test_a_daily_digest_is_due_at_the_next_time_the_store_clock_reads_its_hour() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    eight = time(8)
    # 06:30 UTC is 07:30 in Berlin: today at 08:00 there; 07:30 UTC (08:30 there): tomorrow
    assert next_at(datetime(2026, 11, 23, 6, 30, tzinfo=UTC), berlin, eight) == \
        datetime(2026, 11, 23, 8, tzinfo=berlin)
    assert next_at(datetime(2026, 11, 23, 7, 30, tzinfo=UTC), berlin, eight) == \
        datetime(2026, 11, 24, 8, tzinfo=berlin)
    # exactly 08:00: the next one, a day later (a digest just sent is not due again at once)
    assert next_at(datetime(2026, 11, 23, 7, 0, tzinfo=UTC), berlin, eight) == \
        datetime(2026, 11, 24, 8, tzinfo=berlin)
    # late evening in Shanghai (UTC+8) is early afternoon UTC: tomorrow's 08:00 there
    assert next_at(datetime(2026, 11, 23, 15, 0, tzinfo=UTC), SHANGHAI, eight) == \
        datetime(2026, 11, 24, 8, tzinfo=SHANGHAI)
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00-03:00 skipped): 03:30 that day
    due = next_at(datetime(2026, 3, 28, 23, 0, tzinfo=UTC), berlin, time(2, 30))
    assert due == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_quiet_hours_end_inside_a_dst_gap_moves_forward() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29; a window ending at 02:30 ends at 03:30.
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 local
    until = quiet_until(now, berlin, QuietHours(start=time(22), end=time(2, 30)))
    assert until is not None and until > now
    assert until.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_unknown_zones_fall_back() -> None:
    assert zone("Mars/Base", "Asia/Shanghai") == SHANGHAI
    assert zone(None) == ZoneInfo("UTC")


# episodes ------------------------------------------------------------------------------


def run(episode: Episode, *steps: tuple, told: bool = True) -> list[str]:
    """Decisions for (previous, tier, cause[, event type[, now ms]]) steps; after each alert
    the owner is told by SMS (``told``), as the settle window would do."""
    out = []
    for n, (prev, tier, cause, *rest) in enumerate(steps):
        event_type = rest[0] if rest else None
        now = rest[1] if len(rest) > 1 else 0
        decision, episode = decide_episode(episode, change(prev, tier, cause=cause,
                                                           event_type=event_type),
                                           f"e{n}", now_ms=now, quiet_ms=1000)
        if decision == ALERT and told:
            _, episode = claim(episode, f"e{n}", ["owner|sms"], tier)
        out.append(decision)
    return out


def test_one_alert_per_episode_and_tier_level() -> None:
    assert run(Episode(),
               ("low", "medium", "silence"), ("medium", "high", "silence"),
               ("high", "medium", "silence"), ("medium", "high", "silence"),
               ("high", "medium", "model"), ("medium", "low", "event"),
               ("low", "high", "silence")) == [
        ALERT, ALERT, DEDUPE, DEDUPE, DEDUPE, DEDUPE, ALERT]


def test_won_back_once_when_a_high_risk_customer_comes_back_by_an_event() -> None:
    # The return ends the episode: a relapse is a new one.
    assert run(Episode(), ("low", "high", "silence"), ("high", "medium", "event", "visit"),
               ("medium", "high", "silence"), ("high", "medium", "event", "transaction"),
               ("medium", "low", "event", "visit")) == [ALERT, WON_BACK, ALERT, WON_BACK, NONE]
    # Silence or a model change is not a win.
    assert run(Episode(), ("low", "high", "silence"), ("high", "low", "model")) == [ALERT, DEDUPE]
    # Nobody was told (reverted inside the settle window): a return is not "won back".
    assert run(Episode(), ("low", "high", "silence"), ("high", "low", "event", "visit"),
               told=False) == [ALERT, DEDUPE]


def test_a_resolved_complaint_is_not_a_return_and_keeps_the_episode() -> None:
    # high SMS, (no) won back, (no) high SMS again: the report.
    assert run(Episode(), ("low", "high", "event", "complaint"),
               ("high", "medium", "event", "complaint"), ("medium", "high", "event", "complaint"),
               ("high", "low", "event", "complaint"), ("low", "high", "silence")) == [
        ALERT, DEDUPE, DEDUPE, DEDUPE, DEDUPE]


def test_an_episode_ends_after_the_quiet_period_at_low() -> None:
    assert run(Episode(), ("low", "high", "silence", None, 0), ("high", "low", "silence", None, 10),
               ("low", "high", "silence", None, 900), ("high", "low", "silence", None, 950),
               ("low", "high", "silence", None, 1949), ("high", "low", "silence", None, 1960),
               ("low", "high", "silence", None, 2960)) == [
        ALERT, DEDUPE, DEDUPE, DEDUPE, DEDUPE, DEDUPE, ALERT]


def test_claim_once_per_recipient_and_channel_per_episode() -> None:
    _, ep = decide_episode(Episode(), change("low", "medium"), "a1")
    allowed, ep = claim(ep, "a1", ["mgr|email"], "medium")
    assert allowed == ["mgr|email"] and ep.alerted
    _, ep = decide_episode(ep, change("medium", "high"), "a2")
    allowed, ep2 = claim(ep, "a2", ["mgr|email", "owner|sms", "owner|email"], "high")
    assert allowed == ["owner|sms", "owner|email"]
    # the same alert again (a redelivery, a restart): the same pairs, nothing new recorded
    assert claim(ep2, "a2", ["mgr|email", "owner|sms", "owner|email"], "high") == (allowed, ep2)
    # reverted before it was released: the customer is medium again
    _, ep3 = decide_episode(ep, change("high", "medium"), "a3")
    assert claim(ep3, "a2", ["owner|sms"], "high") == ([], ep3)
    # ended by a genuine return: nothing
    _, gone = decide_episode(ep, change("high", "low", cause="event", event_type="visit"), "a4")
    assert claim(gone, "a2", ["owner|sms"], "high")[0] == []


def test_a_replayed_event_repeats_its_first_decision() -> None:
    first, ep = decide_episode(Episode(), change("low", "high"), "e1")
    again, ep2 = decide_episode(ep, change("low", "high"), "e1")
    assert first == again == ALERT and ep2 == ep
    restored = Episode.from_json(ep.to_json())
    assert decide_episode(restored, change("low", "high"), "e1")[0] == ALERT
    assert decide_episode(restored, change("low", "high"), "e2")[0] == DEDUPE


# inhibition ----------------------------------------------------------------------------

RULES = (Inhibit(name="complaint_first", feature="open_complaints", above=0,
                 actions=frozenset({"win_back_offer"}), then="resolve_complaint"),)


def test_an_open_complaint_turns_an_offer_into_resolve_the_complaint() -> None:
    assert apply_inhibition(change("low", "high", action="win_back_offer", complaints=1), RULES) \
        == ("complaint_first", RESOLVE_COMPLAINT)
    plain = change("low", "high", action="win_back_offer")
    assert apply_inhibition(plain, RULES) == (None, plain.suggested_action)
    call = change("low", "high", action="personal_call", complaints=2)
    assert apply_inhibition(call, RULES) == (None, call.suggested_action)
    suppress = (Inhibit(name="s", feature="open_complaints", above=0,
                        actions=frozenset({"win_back_offer"}), then="suppress"),)
    offer = change("low", "high", action="win_back_offer", complaints=1)
    assert apply_inhibition(offer, suppress) == ("s", offer.suggested_action)


# rate windows and the breaker ------------------------------------------------------------


def test_rate_window() -> None:
    assert rate_window(3600 * 5 + 10, 3600) == (5, 3590)
    assert rate_window(59.5, 60) == (0, 0.5)


def test_breaker_opens_probes_once_and_closes() -> None:
    now = [100.0]
    breaker = CircuitBreaker(failures=2, max_open_s=30, probe_s=5, clock=lambda: now[0])
    assert breaker.blocked_for("sms") == 0
    breaker.failure("sms", delay_s=10)
    assert breaker.blocked_for("sms") == 0  # one failure is below the threshold
    breaker.failure("sms", delay_s=100)
    assert breaker.blocked_for("sms") == 30  # capped
    now[0] += 30
    assert breaker.blocked_for("sms") == 0  # the probe
    assert breaker.blocked_for("sms") == 5  # everyone else waits for it
    breaker.failure("sms", delay_s=4)
    assert breaker.is_open("sms") and breaker.blocked_for("sms") == 4
    now[0] += 4
    assert breaker.blocked_for("sms") == 0
    breaker.success("sms")
    assert breaker.blocked_for("sms") == 0 and breaker.blocked_for("sms") == 0


# the routing file's policies ------------------------------------------------------------------


def test_policies_parse() -> None:
    routing = parse_routing_text(BASE + """
timezone: Asia/Shanghai
quiet_hours: {start: "21:00", end: "08:00:30", channels: sms}
digest: {interval: 90s}
rate_limits: {per_recipient: {count: 5, per: 1h}, per_channel: {sms: {count: 2, per: 1m}}}
escalation: {after: 30m}
inhibit: [{name: c, feature: open_complaints, above: 0, actions: [win_back_offer]}]
won_back: {channels: [email], to: [owner, m]}
""", source="t.yaml")
    p = routing.policies
    assert p.timezone == "Asia/Shanghai" and p.digest_interval_s == 90
    assert p.quiet_hours == QuietHours(start=time(21), end=time(8, 0, 30), channels=frozenset({"sms"}))
    assert p.per_recipient is not None and (p.per_recipient.count, p.per_recipient.per_s) == (5, 3600)
    assert p.per_channel["sms"].per_s == 60 and p.escalate_after_s == 1800
    assert p.inhibit[0].then == "suppress" and p.won_back_to == ("owner", "m")


@pytest.mark.parametrize("extra, expected", [
    ("timezone: Mars/Olympus", "t.yaml: timezone: 'Mars/Olympus' is not an IANA time zone"),
    ("quiet_hours: {start: '25:00', end: '08:00'}", "t.yaml: quiet_hours.start: '25:00' is not a time of day"),
    ("digest: {interval: soon}", "t.yaml: digest.interval: 'soon' is not a duration"),
    ("digest: {interval: 0}", "t.yaml: digest.interval: must be greater than zero"),
    ("rate_limits: {per_channel: {fax: {count: 1, per: 1m}}}", "t.yaml: rate_limits.per_channel: unknown key(s) fax"),
    ("rate_limits: {per_recipient: {count: 0, per: 1m}}", "t.yaml: rate_limits.per_recipient.count: 0 is not a positive integer"),
    ("escalation: {after: -5}", "t.yaml: escalation.after: -5 is negative"),
    ("inhibit: [{feature: x, actions: [a], then: shout}]", "t.yaml: inhibit[0].then: 'shout' is not accepted"),
    ("won_back: {channels: [pigeon]}", "t.yaml: won_back.channels: 'pigeon' is not accepted"),
])
def test_policy_errors_name_the_field(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_routing_text(BASE + extra + "\n", source="t.yaml")
    assert str(err.value).startswith(expected), str(err.value)


def test_route_to_and_segment_are_validated() -> None:
    routing = parse_routing_text(BASE.replace("routes: [{match: {}, channels: [email]}]", """
routes:
  - {match: {segment: [vip, gold]}, channels: [email], to: [owner, customer], digest: false}
  - {match: {}, channels: [email], to: m, digest: true}
"""), source="t.yaml")
    vip = change("low", "high")
    assert routing.route_for(vip, "vip") is routing.routes[0]
    assert routing.route_for(vip, None) is routing.routes[1] and routing.routes[1].digest
    assert routing.routes[0].to == ("owner", "customer") and routing.routes[1].to == ("m",)
    with pytest.raises(ConfigError, match=r"routes\[0\].to: 'nobody' is neither a role"):
        parse_routing_text(BASE.replace("channels: [email]}", "channels: [email], to: nobody}"),
                           source="t.yaml")
    with pytest.raises(ConfigError, match=r"routes\[0\].digest: 'daily' is not true, false, a duration or"):
        parse_routing_text(BASE.replace("channels: [email]}", "channels: [email], digest: daily}"),
                           source="t.yaml")


def test_durations() -> None:
    assert [parse_duration(x) for x in (5, 2.5, "90", "1.5s", "15m", "2h", "1d", "250ms")] == [
        5, 2.5, 90, 1.5, 900, 7200, 86400, 0.25]
    for bad in ("", "m", True, "1w", None):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_new_settings_are_validated(tmp_path) -> None:
    from services.common.settings import load_settings

    with pytest.raises(ConfigError, match="CHURNWATCH_SMTP_CA_FILE=.*is not a file"):
        load_settings(smtp_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="CHURNWATCH_NOTIFIER_TEMPLATES_DIR=.*is not a directory"):
        load_settings(notifier_templates_dir=tmp_path / "nope")
    with pytest.raises(ConfigError, match="CHURNWATCH_NOTIFIER_MAX_IN_FLIGHT"):
        load_settings(notifier_max_in_flight=0)
    s = load_settings(notifier_templates_dir=tmp_path, notifier_escalate_after_seconds=60)
    assert s.notifier_escalate_after_seconds == 60 and s.notifier_retry_max_per_second == 50


def test_a_digest_message_carries_the_changes_its_items_were_written_from() -> None:
    """So that a digest whose reader left can be written again for someone else; items
    buffered before they carried their change (an upgrade) give none, and a payload that is
    not such a document gives none rather than failing the delivery."""
    items: list[dict[str, Any]] = [{"event_id": "a", "event": '{"id": "a"}', "created_ms": 5},
             {"event_id": "b"}]  # buffered before items carried their change
    assert digest_changes(digest_event(items)) == [(b'{"id": "a"}', 5)]
    assert digest_changes(b'{"digest": ["a"]}') == []
    assert digest_changes(b"not json") == digest_changes(b"[1]") == []
