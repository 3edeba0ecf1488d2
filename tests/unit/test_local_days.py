"""A customer's days are the days where they shop: each event's calendar day at the UTC offset
its ``occurred_at`` carries, and a read counts its windows on the customer's wall clock.

Before, days were UTC days: a visit at 19:50 in New York and its payment at 20:30 (00:30 UTC)
were two active days, which halved the cadence a weekly regular was judged against and doubled
how overdue they looked (the model put such a regular, 22 days away, at high)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.common.events import validate_event
from services.common.timefmt import named_zone
from services.scoring.activity import (
    activity_from_event,
    at_shop,
    decode_activity,
    encode_activity,
)
from services.scoring.features import DAY_MS, Activity, compute_features, local_day
from services.scoring.summary import Summary, summarize

ZONES = {"london": 0, "new_york": -300, "los_angeles": -480, "kolkata": 330, "tokyo": 540,
         "auckland": 780}


def _at(local: datetime, minutes: int) -> int:
    """Epoch ms of the wall-clock time ``local`` (naive) at UTC offset ``minutes``."""
    return int(local.replace(tzinfo=timezone(timedelta(minutes=minutes))).timestamp() * 1000)


def _weekly_regular(minutes: int, *, clock: tuple[int, int], weeks: int = 30,
                    payment_after: int = 40) -> list[Activity]:
    """A visit every Monday at ``clock`` (local) and its payment ``payment_after`` minutes
    later, for ``weeks`` weeks from 2026-01-05."""
    first = datetime(2026, 1, 5, *clock)
    out = []
    for w in range(weeks):
        at = first + timedelta(days=7 * w)
        out.append(Activity("visit", _at(at, minutes), f"v{w}", tz_minutes=minutes))
        out.append(Activity("transaction", _at(at + timedelta(minutes=payment_after), minutes),
                            f"t{w}", amount=45.0, tz_minutes=minutes))
    return out


@pytest.mark.parametrize(("zone", "clock"), [("new_york", (18, 45)), ("los_angeles", (15, 45)),
                                             ("tokyo", (8, 50)), ("auckland", (12, 45))])
def test_a_visit_and_its_payment_across_midnight_utc_are_one_day(zone: str,
                                                                 clock: tuple[int, int]) -> None:
    """The evening regular in New York (18:45, paying at 19:25, across 00:00 UTC), the
    afternoon one in Los Angeles, the morning one in Tokyo, the lunchtime one in Auckland: one
    active day a week, a cadence of 7 days, 22 days away reads 22/7 overdue."""
    minutes = ZONES[zone]
    acts = _weekly_regular(minutes, clock=clock)
    assert len({a.ts // DAY_MS for a in acts}) == 60  # UTC days would make it two a week
    now = max(a.ts for a in acts) + 22 * DAY_MS
    f = compute_features(acts, now)
    assert f["active_days_365"] == 30.0
    assert f["cadence_median_days"] == 7.0 and f["cadence_spread_days"] == 0.0
    assert f["overdue_ratio"] == pytest.approx(22 / 7, rel=1e-3)
    # visits 22, 29, ..., 85 days ago
    assert f["active_days_30"] == 2.0 and f["active_days_90"] == 10.0 and f["visits_90"] == 10.0


def test_the_same_wall_clock_history_gives_the_same_features_in_every_zone() -> None:
    """A year of random visits, purchases, refunds and complaints at the same local times, read
    at the same local times: the features do not depend on where the shop is."""
    rng = random.Random(7)
    local: list[tuple[str, datetime, float | None]] = []
    day = datetime(2025, 3, 1)
    for _ in range(160):
        day += timedelta(days=rng.choice([1, 2, 3, 5, 8, 13]))
        at = day + timedelta(hours=rng.uniform(0, 23.9))
        kind = rng.choice(["visit", "transaction", "transaction", "complaint"])
        amount = round(rng.uniform(-20, 120), 2) if kind == "transaction" else None
        local.append((kind, at, amount))
        if kind == "visit":  # its payment, sometimes after midnight
            local.append(("transaction", at + timedelta(minutes=rng.choice([20, 40, 90])),
                          round(rng.uniform(5, 80), 2)))
    later = [local[-1][1] + timedelta(hours=h) for h in (0, 5, 30, 24 * 20 + 7, 24 * 200)]
    earlier = [local[100][1], local[100][1] - timedelta(hours=3)]  # as_of in the past

    def history(minutes: int) -> list[Activity]:
        return [Activity(kind, _at(at, minutes), f"e{i}", amount=amount,
                         severity="high" if kind == "complaint" else None,
                         tz_minutes=minutes)
                for i, (kind, at, amount) in enumerate(local)]

    expected = {r: compute_features(history(0), _at(r, 0)) for r in later + earlier}
    for zone, minutes in ZONES.items():
        acts = history(minutes)
        whole = summarize(acts)
        stored = Summary.decode(whole.encode())
        for r in later + earlier:
            assert compute_features(acts, _at(r, minutes)) == expected[r], (zone, r)
        for r in later:
            assert stored.features(_at(r, minutes)) == expected[r], (zone, r)
        assert whole.daily() == summarize(history(0)).daily(), zone
        assert whole.tz_minutes == stored.tz_minutes == minutes


def test_a_point_in_time_read_in_tokyo_sees_the_morning_that_is_still_yesterday_in_utc() -> None:
    """08:00 in Tokyo is 23:00 UTC the day before: a read at that instant counts the visit
    just made, on its own day."""
    tokyo = ZONES["tokyo"]
    earlier = Activity("visit", _at(datetime(2026, 3, 2, 8, 0), tokyo), "a", tz_minutes=tokyo)
    visit = Activity("visit", _at(datetime(2026, 3, 9, 8, 0), tokyo), "b", tz_minutes=tokyo)
    s = summarize([earlier, visit])
    for at in (visit.ts, visit.ts + 1):
        f = s.features(at)
        assert f["active_days_30"] == 2.0 and f["visits_90"] == 2.0, at
        assert f["cadence_median_days"] == 7.0
        assert s.active_days(at) == [0, 7]
    assert compute_features([earlier, visit], visit.ts - 1)["active_days_30"] == 1.0


def test_events_of_one_customer_at_two_offsets_are_each_on_their_own_day() -> None:
    """Summer time (+02:00, then +01:00) or an order placed abroad: each event's own local
    day; the order they arrive in does not matter."""
    acts = [Activity("visit", _at(datetime(2026, 10, 20, 23, 30), 120), "summer",
                     tz_minutes=120),
            Activity("visit", _at(datetime(2026, 10, 27, 23, 30), 60), "winter", tz_minutes=60),
            Activity("transaction", _at(datetime(2026, 10, 28, 0, 10), 60), "pay",
                     amount=30.0, tz_minutes=60),
            Activity("transaction", _at(datetime(2026, 11, 3, 9, 0), -300), "web",
                     amount=12.0, tz_minutes=-300, channel="online")]
    assert [a.day for a in acts] == [local_day(a.ts, a.tz_minutes) for a in acts]
    days = {a.day for a in acts}
    assert len(days) == 4  # (the 00:10 payment is the next local day: a day of its own)
    reference = summarize(acts).encode()
    for seed in range(20):
        order = acts[:]
        random.Random(seed).shuffle(order)
        s = Summary.empty()
        for a in order:
            s.fold(a)
            s = Summary.decode(s.encode())
        assert s.encode() == reference
    assert Summary.decode(reference).tz_minutes == -300  # the newest event's clock


def test_the_event_s_offset_is_kept_from_its_occurred_at() -> None:
    for text, minutes in (("2026-11-23T19:50:00-05:00", -300), ("2026-11-23T08:50:00+09:00", 540),
                          ("2026-11-23T10:00:00Z", 0), ("2026-11-23T10:00:00+05:30", 330)):
        event, errors = validate_event({"event_id": "e1", "type": "visit", "customer_id": "c1",
                                        "occurred_at": text})
        assert event is not None, errors
        a = activity_from_event(event)
        assert a.tz_minutes == minutes
        assert a.day == datetime.fromisoformat(text).date().toordinal() \
            - datetime(1970, 1, 1).date().toordinal()
        assert decode_activity("e1", encode_activity(a)) == a
        assert Summary.decode(summarize([a]).encode()).recent() == [a]


def test_a_resolution_staff_record_is_written_on_the_customer_s_clock() -> None:
    """"Complaint resolved" publishes the resolution event a POS would send, at the customer's
    newest event time: written at their offset, it lands on their day and leaves the clock
    their days are read on as it was (at Z it would have moved an evening New York customer's
    newest day to tomorrow's UTC day and their clock to UTC)."""
    from services.records.complaints import resolution_events
    from services.records.export import _event

    ny = ZONES["new_york"]
    visit = Activity("visit", _at(datetime(2026, 3, 2, 18, 45), ny), "v", tz_minutes=ny)
    moan = Activity("complaint", _at(datetime(2026, 3, 2, 19, 30), ny), "c", severity="high",
                    complaint_ref="K1", status="open", tz_minutes=ny)
    s = summarize([visit, moan])
    [draft] = resolution_events(s, tenant="default", customer_id="c1", at_ms=moan.ts + 1000,
                                action_id="a1", store_id=None)
    assert draft["occurred_at"] == "2026-03-02T19:30:00.001000-05:00"
    event, errors = validate_event(draft)
    assert event is not None, errors
    before = (s.newest_day, s.tz_minutes)
    s.fold(activity_from_event(event))
    assert (s.newest_day, s.tz_minutes) == before and s.open_complaints(moan.ts + 2) == []
    assert _event(visit)["occurred_at"] == "2026-03-02T18:45:00-05:00"  # the export, as sent


def test_a_store_s_zone_puts_its_utc_times_on_the_shop_s_clock() -> None:
    """A POS that writes every time in UTC: the store's IANA zone gives each event its offset
    at that instant, summer time included; the summary is then the one the same history
    written with the local offsets makes, and a weekly evening regular is weekly again."""
    ny = named_zone("America/New_York")
    assert ny is not None
    history = []
    first = datetime(2026, 1, 5, 18, 45, tzinfo=ZoneInfo("America/New_York"))
    for w in range(52):  # a year of Mondays: summer time from 8 March to 1 November
        at = first + timedelta(days=7 * w)  # (wall-clock arithmetic: 18:45 every week)
        for kind, after, eid in (("visit", 0, f"v{w}"), ("transaction", 40, f"t{w}")):
            local = at + timedelta(minutes=after)
            minutes = int(local.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
            history.append(Activity(kind, int(local.timestamp() * 1000), eid,
                                    45.0 if after else None, tz_minutes=minutes))
    assert {a.tz_minutes for a in history} == {-300, -240}
    in_utc = [replace(a, tz_minutes=0) for a in history]  # as the POS wrote them
    assert len({a.day for a in in_utc}) > 52  # UTC days: winter evenings are two days
    shifted = [at_shop(a, ny) for a in in_utc]
    assert shifted == history
    assert summarize(shifted).encode() == summarize(history).encode()
    f = compute_features(shifted, history[-1].ts + DAY_MS)
    assert f["active_days_365"] == 52.0 and f["cadence_median_days"] == 7.0


def test_a_written_offset_wins_and_utc_or_unknown_zones_change_nothing() -> None:
    tokyo = Activity("visit", _at(datetime(2026, 6, 1, 8, 50), 540), "e", tz_minutes=540)
    assert at_shop(tokyo, named_zone("America/New_York")) is tokyo  # the POS said where
    utc = Activity("visit", _at(datetime(2026, 6, 1, 23, 50), 0), "u")
    for name in ("UTC", "Etc/UTC", "GMT", "", None, "Mars/Olympus", "../etc/passwd"):
        assert named_zone(name) is None
        assert at_shop(utc, named_zone(name)) is utc
    # London keeps offset 0 in winter and moves to +01:00 in summer
    london = named_zone("Europe/London")
    winter = Activity("visit", int(datetime(2026, 1, 10, 23, 30, tzinfo=UTC).timestamp() * 1000), "w")
    assert at_shop(winter, london) is winter
    summer = Activity("visit", int(datetime(2026, 7, 10, 23, 30, tzinfo=UTC).timestamp() * 1000), "s")
    assert at_shop(summer, london).tz_minutes == 60
    assert at_shop(summer, london).day == summer.day + 1  # 00:30 on 11 July in London
    # a zone of whole quarter hours (Kathmandu, +05:45)
    assert at_shop(summer, named_zone("Asia/Kathmandu")).tz_minutes == 345


def test_the_timeline_dates_a_day_s_activity_by_the_shop_s_calendar() -> None:
    """A New York evening's visit and payment (00:25 UTC the next day) are one activity entry,
    dated the New York day; the console writes other times on the customer's clock."""
    from services.common.timefmt import for_people
    from services.records.timeline import _summaries

    ny = ZONES["new_york"]
    acts = _weekly_regular(ny, clock=(18, 45), weeks=2)
    [older, newest] = sorted(_summaries(summarize(acts)), key=lambda e: e["data"]["day"])
    assert newest["data"]["day"] == "2026-01-12" and older["data"]["day"] == "2026-01-05"
    assert newest["at"].startswith("2026-01-13T00:25")  # the API's time stays UTC (sortable)
    assert newest["data"]["visits"] == 1 and newest["data"]["transactions"] == 1
    paid = acts[-1].ts / 1000
    assert for_people(paid, ny) == "2026-01-12 19:25 UTC-05:00"
    assert for_people(paid) == "2026-01-13 00:25 UTC"
    assert for_people(paid, 345) == "2026-01-13 06:10 UTC+05:45"


def test_training_counts_a_utc_history_on_the_shop_s_days_when_told_its_zone(tmp_path) -> None:
    """``churnwatch train --timezone``: the history a UTC-writing POS exported is counted on the
    days the scorer counts for a store with that zone (training and scoring alike)."""
    import json

    from services.training.dataset import TrainingError, read_events

    zone = ZoneInfo("America/New_York")
    lines = []
    for w in range(30):  # Mondays at 18:45 from 5 January: winter evenings cross 00:00 UTC
        at = datetime(2026, 1, 5, 18, 45, tzinfo=zone) + timedelta(days=7 * w)
        for kind, after in (("visit", 0), ("transaction", 40)):
            written = (at + timedelta(minutes=after)).astimezone(UTC)
            event: dict[str, object] = {"event_id": f"{kind}-{w}", "type": kind,
                                        "customer_id": "c1",
                                        "occurred_at": written.isoformat().replace("+00:00", "Z")}
            if kind == "transaction":
                event["amount"] = 45.0
            lines.append(json.dumps(event))
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    until = datetime(2026, 12, 1, tzinfo=UTC)
    as_utc = read_events(path, until).activities["c1"]
    local = read_events(path, until, timezone="America/New_York").activities["c1"]
    assert len({a.day for a in as_utc}) > 30 and len({a.day for a in local}) == 30
    assert {a.tz_minutes for a in local} == {-300, -240}
    assert read_events(path, until, timezone="UTC").activities["c1"] == as_utc
    with pytest.raises(TrainingError, match="not an IANA time zone"):
        read_events(path, until, timezone="Mars/Olympus")


def test_every_zone_changes_its_clocks_on_a_quarter_hour_of_utc() -> None:
    """``at_shop`` looks a zone's offset up once per quarter hour of UTC: that holds when every
    change of clocks falls on one. Checked for every IANA zone, 2024 to 2030."""
    from zoneinfo import available_timezones

    from services.common.timefmt import offset_minutes
    from services.scoring.activity import _offset_in_quarter

    day = 86_400_000
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    checked = 0
    for name in sorted(available_timezones()):
        zone = named_zone(name)
        if zone is None:
            continue
        before = offset_minutes(zone, start)
        for d in range(1, 4 * 366):
            t = start + d * day
            now = offset_minutes(zone, t)
            if now == before:
                continue
            lo, hi = t - day, t  # the change is in (lo, hi]: find its first second
            while hi - lo > 1000:
                mid = (lo + hi) // 2000 * 1000
                lo, hi = (mid, hi) if offset_minutes(zone, mid) == before else (lo, mid)
            assert hi % (15 * 60_000) == 0, (name, hi)
            assert _offset_in_quarter(zone, hi // (15 * 60_000)) == now
            assert _offset_in_quarter(zone, (hi - 1) // (15 * 60_000)) == before
            checked += 1
            before = now
    assert checked > 500  # (summer time in about 140 zones, twice a year)
