"""A store's closed days, as the scorer and the API count them (services/scoring/closures.py),
and how a store record declares them."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.common.profiles import MAX_CLOSURES, Store
from services.scoring.closures import (
    DAY_MS,
    NEVER_CLOSED,
    Closures,
    StoreCalendar,
    calendar_closures,
    calendar_of,
    closed_days_missing,
    closed_periods,
    home_store,
    only_store,
)
from services.scoring.engine import Engine, Subject
from services.scoring.features import FEATURE_NAMES, Activity
from services.scoring.rules import load_rules, parse_rules
from services.scoring.scorecard import Scorecard
from services.scoring.summary import Summary
from services.scoring.tiers import Thresholds
from services.training.dataset import build_snapshots, read_events, read_stores
from services.training.exceptions import TrainingError

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args: int, tz: object = UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[arg-type,misc]


def _student(every_days: int, classes: int, extra: tuple[Activity, ...] = ()
             ) -> tuple[list[Activity], Summary]:
    """A student's classes every ``every_days`` days up to 28 June (and ``extra``), oldest
    first, and the scorer's summary of them."""
    acts = [Activity(kind="visit", ts=ms(2026, 6, 28) - i * every_days * DAY_MS,
                     event_id=f"v{i}") for i in range(classes)]
    acts = sorted([*acts, *extra], key=lambda a: a.ts)
    summary = Summary.empty()
    for a in acts:
        summary.fold(a)
    return acts, summary


def test_closed_days_are_the_store_s_local_days() -> None:
    c = Closures.of([(date(2026, 7, 1), date(2026, 8, 31))], BERLIN)
    assert c is not None and len(c) == 1
    # from midnight in Berlin (22:00 UTC in summer) to the midnight after the last day
    assert c.closed_ms(ms(2026, 6, 1), ms(2026, 10, 1)) == 62 * DAY_MS
    assert c.closed_ms(ms(2026, 6, 30, 21, 59), ms(2026, 6, 30, 22, 0)) == 0
    assert c.closed_ms(ms(2026, 6, 30, 22, 0), ms(2026, 6, 30, 23, 0)) == 3_600_000
    # partly inside, either side; nothing outside; an empty or reversed interval
    assert c.closed_ms(ms(2026, 8, 30, 22), ms(2026, 9, 15)) == DAY_MS
    assert c.closed_ms(ms(2026, 6, 1), ms(2026, 7, 2, tz=BERLIN)) == DAY_MS
    assert c.closed_ms(ms(2026, 9, 1), ms(2026, 12, 1)) == 0
    assert c.closed_ms(ms(2026, 7, 10), ms(2026, 7, 10)) == 0
    assert c.closed_ms(ms(2026, 7, 10), ms(2026, 7, 1)) == 0


def test_overlapping_and_touching_closures_count_once() -> None:
    c = Closures.of([(date(2026, 1, 10), date(2026, 1, 20)), (date(2026, 1, 15), date(2026, 1, 25)),
                     (date(2026, 1, 26), date(2026, 1, 26)), (date(2026, 3, 1), date(2026, 3, 1))],
                    None)
    assert c is not None and len(c) == 2
    assert c.closed_ms(ms(2026, 1, 1), ms(2026, 4, 1)) == 18 * DAY_MS
    assert c.closed_ms(ms(2026, 1, 12), ms(2026, 3, 1, 12)) == 15.5 * DAY_MS
    assert Closures.of([], BERLIN) is None


def test_now_for_a_customer_stops_while_the_store_is_closed() -> None:
    c = Closures.of([(date(2026, 7, 1), date(2026, 8, 31))], None)
    assert c is not None
    last = ms(2026, 6, 28)
    assert c.open_now(last, ms(2026, 6, 30)) == ms(2026, 6, 30)
    assert c.open_now(last, ms(2026, 8, 1)) == ms(2026, 7, 1)
    assert c.open_now(last, ms(2026, 9, 10)) == ms(2026, 7, 10)
    # a customer who came during the closure: the rest of it counts
    assert c.open_now(ms(2026, 8, 20), ms(2026, 9, 2)) == ms(2026, 9, 2) - 12 * DAY_MS
    assert c.open_now(None, ms(2026, 8, 1)) == ms(2026, 8, 1)


def test_features_count_open_days_only() -> None:
    acts, summary = _student(3, 40)
    closures = Closures.of([(date(2026, 7, 1), date(2026, 8, 31))], None)
    # from the events themselves and from the scorer's summary of them
    for s in (Subject("c", acts), Subject("c", (), summary=summary)):
        plain = s.features(ms(2026, 9, 10))
        closed = Subject(s.customer_id, s.activities, summary=s.summary,
                         closures=closures).features(ms(2026, 9, 10))
        assert plain["days_since_last_activity"] == pytest.approx(74.0)
        assert closed["days_since_last_activity"] == pytest.approx(12.0)
        # every window ends where it would have without the closure
        assert closed == s.features(ms(2026, 7, 10))


def test_a_stored_store_reads_back_its_closures() -> None:
    store = Store(store_id="s", timezone="Europe/Berlin", closures=[
        {"first": "2026-07-01", "last": "2026-08-31", "note": "summer break"}])
    cal = calendar_of(store.model_dump_json())
    assert cal == StoreCalendar("Europe/Berlin", ((date(2026, 7, 1), date(2026, 8, 31)),))
    c = calendar_closures(cal)
    assert c is not None and c.closed_ms(ms(2026, 1, 1), ms(2027, 1, 1)) == 62 * DAY_MS
    assert calendar_closures(StoreCalendar("UTC")) is None
    # a record written before closures existed, or not readable: no closures, no error
    assert calendar_of('{"store_id": "s", "timezone": "Asia/Tokyo"}') == StoreCalendar("Asia/Tokyo")
    assert calendar_of("not json") is None and calendar_of(None) is None
    assert calendar_of("[1, 2]") is None
    assert closed_periods([{"first": "2026-01-02"}, {"first": "x", "last": "2026-01-01"},
                           {"first": "2026-02-02", "last": "2026-02-01"}, "junk",
                           {"first": "2026-03-01", "last": "2026-03-02"}]) == (
        (date(2026, 3, 1), date(2026, 3, 2)),)
    assert closed_periods(None) == ()


def test_a_store_refuses_closures_that_cannot_be_meant() -> None:
    with pytest.raises(ValidationError, match="must not be before first"):
        Store(store_id="s", closures=[{"first": "2026-08-31", "last": "2026-07-01"}])
    with pytest.raises(ValidationError, match="at most 366 days"):
        Store(store_id="s", closures=[{"first": "2026-01-01", "last": "2027-01-02"}])
    with pytest.raises(ValidationError, match="at most 100 items"):
        Store(store_id="s", closures=[{"first": "2026-01-01", "last": "2026-01-01"}]
              * (MAX_CLOSURES + 1))
    with pytest.raises(ValidationError):
        Store(store_id="s", closures=[{"first": "2026-01-01", "last": "2026-01-02", "x": 1}])
    assert Store(store_id="s").closures == []



def test_a_return_after_the_closure_is_not_a_win_back() -> None:
    acts, summary = _student(3, 40, (Activity(kind="visit", ts=ms(2026, 9, 2), event_id="back"),
                                     Activity(kind="visit", ts=ms(2026, 9, 5), event_id="again")))
    closures = Closures.of([(date(2026, 7, 1), date(2026, 8, 31))], None)
    now = ms(2026, 9, 10)
    for plain in (Subject("c", acts), Subject("c", (), summary=summary)):
        # 66 days away: a return after a silence of 30 days or more, 8 days ago
        assert plain.return_after_gap(now, 30, 60) == 8
        closed = Subject("c", plain.activities, summary=plain.summary, closures=closures)
        # of which 62 closed: 4 open days, no silence to come back from
        assert closed.return_after_gap(now, 30, 60) is None
        assert closed.return_after_gap(now, 4, 60) == 8  # a gap of 4 open days, though
    # away since May, the store closed in between: still a return after a long silence
    late = [a for a in acts if a.ts < ms(2026, 5, 1) or a.event_id in ("back", "again")]
    closed = Subject("c", late, closures=closures)
    assert closed.return_after_gap(now, 30, 60) == 8


def test_reasons_tell_calendar_days_and_the_closure() -> None:
    """The features count open days (above), the reasons the days on the calendar: "12 days
    since the last visit" on 10 September read wrong beside "last visit 28 June"."""
    acts, summary = _student(4, 60)
    closures = Closures.of([(date(2026, 7, 1), date(2026, 8, 31))], None)
    now = ms(2026, 9, 25)  # 89 days since the last visit, 62 of them closed: 27 open
    rules = parse_rules({"rules": [{
        "id": "away", "when": "days_since_last_activity >= 20", "min_tier": "high",
        "reason": {"en": "away {days_since_last_activity:.0f} days",
                   "zh-CN": "已{days_since_last_activity:.0f}天未到店"}}]}, "test.yaml")
    for engine in (Engine(Scorecard(), Thresholds()),
                   Engine(Scorecard(), Thresholds(), rules=load_rules(None, "salon")),
                   Engine(Scorecard(), Thresholds(), rules=rules)):
        [open_days] = engine.assess([Subject("c", (), acts[0].ts, summary=summary,
                                             closures=closures)], now)
        [calendar] = engine.assess([Subject("c", (), acts[0].ts, summary=summary)], now)
        assert open_days.features["days_since_last_activity"] == pytest.approx(27.0)
        assert open_days.tier == "high"
        told = {r.code: (r.text, r.text_zh) for r in open_days.reasons}
        if engine.business.rules is rules:  # a rule's own template, told again
            assert told["away"] == ("away 89 days; the store was closed on 62 of those days",
                                    "已89天未到店；其间门店休业62天")
        else:  # the model's (the salon's rule says it in the same words)
            assert told["overdue"] == (
                "89 days since the last visit; usually every 4 days; the store was closed on "
                "62 of those days", "距上次到店已89天；平时每4天一次；其间门店休业62天")
        # what does not count days up to now is told as without the closure
        plain = {r.code: r.text for r in calendar.reasons}
        for code, (text, _) in told.items():
            if "closed" not in text and code in plain:
                assert text == plain[code]
    # before the closure, or a customer back since: nothing is said of it
    [before] = Engine(Scorecard(), Thresholds()).assess(
        [Subject("c", (), acts[0].ts, summary=summary, closures=closures)], ms(2026, 6, 30))
    assert not any("closed" in r.text for r in before.reasons)


def test_a_customer_without_a_store_is_the_only_store_s() -> None:
    assert only_store({"the-school": 1}) == "the-school"
    assert only_store(["a", "b"]) is None and only_store([]) is None


def test_a_school_without_closed_days_on_record_is_told_which_stores() -> None:
    """Rules that expect closed days (a school's): the stores, on record or named by events,
    with none on record; a tenant with no store lacks them everywhere; other rules, or every
    store with some, nothing."""
    school, default = load_rules(business_type="school"), load_rules(business_type="default")
    assert closed_days_missing(None, {}) is None
    assert closed_days_missing(default, {"north": False}) is None
    assert closed_days_missing(school, {"north": True}) is None
    missing = closed_days_missing(school, {})
    assert missing is not None and missing.stores == ()
    assert "no store on record" in missing.describe("lycee")
    missing = closed_days_missing(school, {"west": False, "north": True, "east": False})
    assert missing is not None and missing.stores == ("east", "west")
    said = missing.describe("lycee")
    assert said.startswith("tenant 'lycee' is judged as a school") and "stores east, west;" in said
    assert "PUT /v1/stores/{store_id}" in said and "Team page" in said
    many = closed_days_missing(school, {f"s{i:02}": False for i in range(12)})
    assert many is not None and "s09 and 2 more;" in many.describe("t")


def test_a_horizon_of_open_time_steps_over_the_closures() -> None:
    closed = Closures([(100, 200), (300, 400)])
    for since, open_ms, end in ((0, 50, 50), (0, 150, 250), (150, 60, 260), (0, 250, 450),
                                (250, 100, 450), (500, 10, 510)):
        assert closed.open_until(since, open_ms) == end
        assert end - since - closed.closed_ms(since, end) == open_ms


def _stores_file(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "stores.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_training_counts_a_store_s_closed_days_as_the_scorer_does(tmp_path: Path) -> None:
    """``churnwatch train --stores``: a student of a school closed over the summer, last seen
    the evening before it closed and back when it reopens, is neither away in the break
    (features on open days, the scorer's) nor churned within a horizon that the break would
    otherwise use up; the same student of a school left open is both."""
    summer = [{"first": "2026-07-01", "last": "2026-08-31", "note": "summer break"}]
    book = read_stores(_stores_file(tmp_path, [
        {"store_id": "closed", "timezone": "Europe/Berlin", "closures": summer},
        {"store_id": "open", "timezone": "Europe/Berlin"}]))
    assert book.describe()["with_closures"] == 1 and book.only is None
    # the last date whose 60 open days end by 15 October: 62 closed days before, mid-June
    assert book.labels_known_until(ms(2026, 10, 15), 60) == ms(2026, 6, 15) + 60 * DAY_MS

    def student(store: str | None) -> list[Activity]:
        days = [ms(2026, 6, 30, 17, tz=BERLIN) - i * 3 * DAY_MS for i in range(40)][::-1]
        days.append(ms(2026, 9, 1, 17, tz=BERLIN))  # back the day it reopens
        return [Activity(kind="visit", ts=t, event_id=f"e{i}", store_id=store if i == 0 else None)
                for i, t in enumerate(days)]

    acts = {"ana": student("closed"), "ben": student("open")}
    at = ms(2026, 8, 15)
    snaps = build_snapshots(acts, [at], 14, stores=book, until_ms=ms(2026, 12, 1))
    days = dict(zip(snaps.customers, snaps.X[:, FEATURE_NAMES.index("days_since_last_activity")],
                    strict=True))
    churned = dict(zip(snaps.customers, snaps.y, strict=True))
    assert days["ana"] < 1 and 45 < days["ben"] < 47, days
    assert churned == {"ana": 0, "ben": 1}, churned
    # without the file both read as away and gone, the scorer would see neither so
    plain = build_snapshots(acts, [at], 14)
    assert list(plain.y) == [1, 1]
    # a label whose break-lengthened horizon ends after --until is not known yet: left out
    early = build_snapshots(acts, [at], 14, stores=book, until_ms=ms(2026, 9, 10))
    assert early.customers == ["ben"]


def test_training_puts_store_less_events_on_their_store_s_clock(tmp_path: Path) -> None:
    """An event written at offset 0 that names no store is on the zone of the store the
    customer's events named last (else of the only store on record), as in the scorer."""
    book = read_stores(_stores_file(tmp_path, {
        "ny": {"timezone": "America/New_York"}, "berlin": {"timezone": "Europe/Berlin"}}))
    lines = [{"event_id": "a", "type": "visit", "customer_id": "c",
              "occurred_at": "2026-06-01T12:00:00Z", "store_id": "ny"},
             {"event_id": "b", "type": "visit", "customer_id": "c",
              "occurred_at": "2026-06-02T12:00:00Z"},
             {"event_id": "x", "type": "visit", "customer_id": "d",
              "occurred_at": "2026-06-02T12:00:00Z"}]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    log = read_events(path, datetime(2026, 7, 1, tzinfo=UTC), stores=book)
    assert [a.tz_minutes for a in log.activities["c"]] == [-240, -240]
    assert [a.tz_minutes for a in log.activities["d"]] == [0]  # two stores, none of theirs
    alone = read_stores(_stores_file(tmp_path, [{"store_id": "berlin",
                                                 "timezone": "Europe/Berlin"}]))
    assert read_events(path, datetime(2026, 7, 1, tzinfo=UTC), stores=alone
                       ).activities["d"][0].tz_minutes == 120


@pytest.mark.parametrize(("doc", "says"), [
    ("not json", "is not JSON"),
    ([{"store_id": "s", "closures": [{"first": "2026-08-31", "last": "2026-07-01"}]}],
     "store 1: closures.0: Value error, last (2026-07-01) must not be before first"),
    ([{"store_id": "s"}, {"store_id": "s"}], "store 's' is given twice"),
    ([{"timezone": "UTC"}], "store 1: store_id: Field required"),
    (42, "must hold a list of stores"),
])
def test_a_stores_file_that_cannot_be_read_says_what_to_fix(tmp_path: Path, doc: object,
                                                           says: str) -> None:
    path = tmp_path / "stores.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    with pytest.raises(TrainingError, match=re.escape(says)):
        read_stores(path)


def test_one_store_s_long_closure_does_not_end_every_store_s_dates(tmp_path: Path) -> None:
    """The observation dates end where most stores' labels are known: a chain closed together
    ends them before its break, one store under renovation does not."""
    summer = [{"first": "2026-07-01", "last": "2026-08-31"}]
    renovation = [{"first": "2026-03-01", "last": "2026-10-31"}]
    together = read_stores(_stores_file(tmp_path, [
        {"store_id": s, "closures": summer} for s in ("a", "b", "c")]))
    assert together.labels_known_until(ms(2026, 10, 15), 60) == ms(2026, 6, 15) + 60 * DAY_MS
    one = read_stores(_stores_file(tmp_path, [
        {"store_id": "a", "closures": renovation}, {"store_id": "b"}, {"store_id": "c"}]))
    assert one.labels_known_until(ms(2026, 10, 15), 60) == ms(2026, 10, 15)


def test_one_rule_says_whose_closures_count() -> None:
    """The profile's store (read only for a customer whose events name none), else the one
    they have, else the tenant's only store (scorer, API and train share it)."""
    assert home_store("north", "south", "only") == "south"
    assert home_store("north", None, "only") == "north"
    assert home_store(None, None, "only") == "only"
    assert home_store(None, None, None) is None


def test_a_school_s_reasons_say_when_no_closed_days_are_on_record() -> None:
    """A business whose rules expect closed days (a school's), a student's store with none on
    record: the reasons that count days say so, for staff who read "24 days since the last
    class" in an unentered break; with the closure on record the calendar is told instead,
    and other businesses' reasons, or reasons counting no days, are as they were."""
    acts, summary = _student(4, 60)
    away, back = ms(2026, 7, 22), ms(2026, 6, 29)  # 24 days since the last class; 1 day
    school = Engine(Scorecard(), Thresholds(), rules=load_rules(business_type="school"))
    closures = Closures.of([(date(2026, 7, 1), date(2026, 8, 31))], None)
    [unrecorded] = school.assess([Subject("c", (), acts[0].ts, summary=summary)], away)
    assert unrecorded.tier == "high"
    told = {r.code: (r.text, r.text_zh) for r in unrecorded.reasons}
    assert told["overdue"] == (
        "24 days since the last class; usually every 4 days; their store has no closed days "
        "on record", "距上次上课已24天；平时每4天一次；其门店尚未记录停业日期"), told
    # a student of no store: what is missing is their store
    [storeless] = school.assess([Subject("c", (), acts[0].ts, summary=summary,
                                         storeless=True)], away)
    assert {r.code: (r.text, r.text_zh) for r in storeless.reasons}["overdue"] == (
        "24 days since the last class; usually every 4 days; no store is on record for them, "
        "so no closed days count", "距上次上课已24天；平时每4天一次；尚未记录其所属门店，停业日期无法计入")
    [recorded] = school.assess([Subject("c", (), acts[0].ts, summary=summary,
                                        closures=closures)], away)
    assert recorded.tier == "low"
    assert not any("on record" in r.text or "未登记" in r.text_zh for r in recorded.reasons)
    # the same student anywhere else: no word of closed days
    for other in (Engine(Scorecard(), Thresholds()),
                  Engine(Scorecard(), Thresholds(), rules=load_rules(business_type="salon"))):
        [plain] = other.assess([Subject("c", (), acts[0].ts, summary=summary)], away)
        assert plain.reasons and not any("on record" in r.text for r in plain.reasons)
    # a reason counting no days ("as usual") stays as it was
    [regular] = school.assess([Subject("c", (), acts[0].ts, summary=summary)], back)
    assert regular.tier == "low"
    assert not any("on record" in r.text for r in regular.reasons), regular.reasons


def test_a_store_that_never_closes_has_its_closed_days_on_record() -> None:
    """``never_closes`` (an online course beside a school): its closed days are known — none
    — so a school is not warned of it, its customers' reasons do not say they lack them, and
    their days count as a store without closures' do. Not with closures."""
    with pytest.raises(ValidationError, match="never closes has no closures"):
        Store.model_validate({"store_id": "s", "never_closes": True,
                              "closures": [{"first": "2026-07-01", "last": "2026-07-02"}]})
    online = Store(store_id="online", never_closes=True)
    assert online.closed_days_on_record and not Store(store_id="s").closed_days_on_record
    cal = calendar_of(online.model_dump_json(exclude_none=True))
    assert cal == StoreCalendar("UTC", (), True) and cal.on_record
    assert calendar_closures(cal) is NEVER_CLOSED
    assert calendar_of('{"never_closes": "yes"}') == StoreCalendar("UTC")  # only true is true
    assert calendar_closures(StoreCalendar("UTC")) is None
    school = load_rules(business_type="school")
    assert closed_days_missing(school, {"online": cal.on_record}) is None
    acts, summary = _student(4, 60)
    engine = Engine(Scorecard(), Thresholds(), rules=school)
    away = ms(2026, 7, 22)
    [never] = engine.assess([Subject("c", (), acts[0].ts, summary=summary,
                                     closures=NEVER_CLOSED)], away)
    [unrecorded] = engine.assess([Subject("c", (), acts[0].ts, summary=summary)], away)
    assert never.features == unrecorded.features and never.tier == unrecorded.tier == "high"
    assert [r.text for r in never.reasons] == [
        r.text.removesuffix("; their store has no closed days on record")
        for r in unrecorded.reasons]
    assert any(r.text.endswith("on record") for r in unrecorded.reasons)
    assert Subject("c", acts, closures=NEVER_CLOSED).return_after_gap(away, 20, 60) is None
