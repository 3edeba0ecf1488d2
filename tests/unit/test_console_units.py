"""The console's pure parts: both languages complete, charts that are well-formed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from services.common.profiles import StaffMember, Store
from services.common.settings import parse_api_keys
from services.console import charts, i18n
from services.console.customers import _count_line, _year_spend
from services.console.sessions import Session, as_now, find_tagged_key, key_tag
from services.console.team import closures_text, form_record, parse_closures
from services.console.web import safe_next
from services.records.profiles import changed_fields

SVG = "{http://www.w3.org/2000/svg}"


def test_every_word_exists_in_both_languages() -> None:
    assert set(i18n.TEXT["en"]) == set(i18n.TEXT["zh-CN"])
    for locale in i18n.LOCALES:
        assert all(v.strip() for v in i18n.TEXT[locale].values())
    assert i18n.locale_of("zh-TW,zh;q=0.9") == "zh-CN" and i18n.locale_of("de-DE") == "en"
    # a customer's page words every status their delivery log may carry ("not_sent" was
    # shown as it is stored)
    from services.notifier.ledger import LOG_STATUSES

    assert all(f"st_{status}" in i18n.TEXT["en"] for status in LOG_STATUSES)


def test_charts_are_svg_with_one_mark_per_value_and_escape_labels() -> None:
    svg = charts.bars("Churn <by month>", ["2026-01", "<b>", "2026-03"], [0.1, None, 0.3],
                      percent=True)
    root = ET.fromstring(svg)
    title = root.find(f"{SVG}title")
    assert root.tag == f"{SVG}svg" and title is not None and title.text == "Churn <by month>"
    assert len(root.findall(f"{SVG}rect")) == 2  # None leaves a gap
    assert "&lt;b&gt;" in svg and "30%" in svg
    stacked = ET.fromstring(charts.stacked("Tiers", ["d1", "d2"],
                                           {"high": [1, 2], "medium": [3, 0], "low": [5, 5]}))
    assert len(stacked.findall(f"{SVG}rect")) == 6 + 3  # bars + legend
    line = ET.fromstring(charts.score_line("Score", [(0, 0.2, "low", "held"),
                                                     (10, 0.8, "high", "held")]))
    assert len(line.findall(f"{SVG}circle")) == 2 and line.find(f"{SVG}polyline") is not None
    assert ET.fromstring(charts.score_line("Score", [])).tag == f"{SVG}svg"


def test_sign_in_returns_only_to_console_addresses() -> None:
    """``next`` (where signing in returns to) is a path under /console/ or nothing: never
    another site (an open redirect), whatever way a browser could read it as one."""
    for good in ("/console/customers/c-42", "/console/at-risk?tier=medium&store=north",
                 "/console/customers/%E7%8E%8B%E8%8A%B3", "/console/manager/churn.csv"):
        assert safe_next(good) == good, good
    for bad in (None, "", "https://evil.example/", "//evil.example/console/",
                "/\\evil.example", "/console/\\evil", "/console//evil.example",
                "/console/%2F%2Fevil.example", "/console/%5Cevil", "/console/../v1/customers",
                "/console/%2e%2e/v1", "/console/./at-risk", "javascript:alert(1)",
                "/console", "/v1/customers", "http:/console/at-risk", "/console/x\r\nSet-Cookie:a",
                "/console/x y", "/console/x\t", "/console/王芳", "/console/sign-in",
                "/console/sign-in/link?token=x", "/console/" + "a" * 3000,
                " /console/at-risk", "/console/at-risk#//evil.example"):
        assert safe_next(bad) is None, bad


def test_the_at_risk_list_says_how_many_it_holds_in_both_languages() -> None:
    en, zh = i18n.words("en"), i18n.words("zh-CN")
    assert _count_line(en, shown=3, start=0, total=3, filtered=False, paged=False) == "3 customers"
    assert _count_line(en, shown=1, start=0, total=1, filtered=False, paged=False) == "1 customer"
    assert _count_line(en, shown=50, start=50, total=132, filtered=False, paged=True) == \
        "51–100 of 132"
    assert _count_line(en, shown=32, start=100, total=132, filtered=False, paged=False) == \
        "101–132 of 132"
    assert _count_line(en, shown=4, start=0, total=132, filtered=True, paged=True) == \
        "4 shown (filtered) of 132 in this tier"
    assert _count_line(zh, shown=50, start=0, total=132, filtered=False, paged=True) == \
        "第 1–50 位，共 132 位"
    # the list's order is score × (1 + a year's spend): the spend is read back from it
    assert abs((_year_spend({"score": 0.8, "priority": 0.8 * 241.5}) or 0) - 240.5) < 1e-9
    assert _year_spend({"score": 0.0, "priority": 0.0}) is None


def test_the_score_chart_has_dates_and_marks_a_tier_raised_above_its_band() -> None:
    day = 86_400_000
    start = 1_780_000_000_000  # 2026-05-28 UTC
    points = [(start, 0.5, "medium", "held"), (start + 9 * day, 0.3, "high", "rule"),
              (start + 20 * day, 0.8, "high", "held")]
    svg = charts.score_line("Score", points, thresholds=(0.4, 0.7),
                            notes={"rule": "raised by a rule", "held": "held <up>"})
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"2026-05-28", "2026-06-17"} <= texts  # the time axis says when
    # on the customer's clock: 20:26 UTC on 28 May is already 29 May in Tokyo
    tokyo = ET.fromstring(charts.score_line("Score", points, thresholds=(0.4, 0.7),
                                            tz_minutes=540))
    assert {"2026-05-29", "2026-06-18"} <= {t.text for t in tokyo.iter(f"{SVG}text")}
    rings = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "raised"]
    assert len(rings) == 1  # only the point above its score's band (0.3 < 0.4, yet high)
    assert rings[0].get("stroke") == charts.TIER_COLOURS["high"]  # coloured by its tier
    title = rings[0].find(f"{SVG}title")
    assert title is not None and title.text == "2026-06-06 · 0.30 (high, raised by a rule)"
    assert "raised by a rule" in texts and "held &lt;up&gt;" not in svg  # legend: used notes
    # the bands are the configured thresholds: medium from 0.4, high from 0.7
    low, medium, high = (r for r in root.iter(f"{SVG}rect"))
    assert float(medium.get("height") or 0) == pytest.approx(
        (charts.LINE_H - charts.LINE_T - charts.LINE_B) * 0.3, abs=0.1)


def test_horizontal_bars_keep_their_labels_whole_and_say_why_a_bar_is_missing() -> None:
    svg = charts.hbars("Win-back", ["Exclusive service offered", "<Mia>"], [0.25, None],
                       percent=True, missing="no result yet")
    root = ET.fromstring(svg)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    assert labels == ["Exclusive service offered", "<Mia>"]  # whole, escaped in the SVG
    assert "&lt;Mia&gt;" in svg and "25%" in svg
    assert len(root.findall(f"{SVG}rect")) == 1
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "missing"] == [
        "no result yet"]


def test_bars_on_a_shared_scale_are_comparable_and_say_their_scale() -> None:
    """Per-store charts given one ``top`` draw a rate as the same length in each, on an axis
    (0, half, top) under the bars; the scale ends at a number people read."""
    assert [charts.nice_top(v) for v in (0.33, 0.07, 0.2, 1.0, 0.021, 0.0, 3.4)] == [
        0.5, 0.1, 0.2, 1.0, 0.025, 1.0, 5.0]
    assert [charts.tick_text(v, percent=True) for v in (0.0, 0.025, 0.35, 1.0)] == [
        "0%", "2.5%", "35%", "100%"]
    one = ET.fromstring(charts.hbars("north", ["m1", "m2"], [0.1, 0.2], percent=True, top=0.5))
    two = ET.fromstring(charts.hbars("south", ["m1", "m2"], [0.4, None], percent=True,
                                     top=0.5))
    widths = {t.text.split(": ")[1]: float(r.get("width") or 0)  # type: ignore[union-attr]
              for root in (one, two) for r in root.iter(f"{SVG}rect")
              if (t := r.find(f"{SVG}title")) is not None}
    assert widths["20%"] == pytest.approx(2 * widths["10%"])
    assert widths["40%"] == pytest.approx(4 * widths["10%"])  # in the other store's chart
    for root in (one, two):
        ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]
        assert ticks == ["0%", "25%", "50%"]
    # on its own (no ``top``): scaled to its largest bar, no axis, as before
    alone = ET.fromstring(charts.hbars("x", ["a"], [0.3], percent=True))
    assert not [t for t in alone.iter(f"{SVG}text") if t.get("class") == "tick"]


def test_a_session_reaches_what_its_person_may_reach_now() -> None:
    mia = Session(kind="staff", tenant="acme", stores=("north",), name="Mia", locale="zh-CN",
                  csrf="c", staff_id="m-1", role="manager")
    # removed: signed out
    assert as_now(mia, member=None) is None
    # demoted and moved: the new role and store from the next page on, her language kept
    moved = as_now(mia, member=StaffMember(staff_id="m-1", name="Mia N.", store_id="south"))
    assert moved is not None and not moved.manages
    assert (moved.stores, moved.name, moved.locale, moved.csrf) == (("south",), "Mia N.",
                                                                     "zh-CN", "c")
    # no store: every store of the tenant, as at sign-in
    anywhere = as_now(mia, member=StaffMember(staff_id="m-1", role="manager"))
    assert anywhere is not None and anywhere.stores is None and anywhere.manages


def test_an_admin_session_ends_with_the_key_it_signed_in_with() -> None:
    keys = parse_api_keys("acme-admin-01:admin@acme,acme-nadm-01:admin@acme/north,"
                          "acme-read-001:read@acme")
    tag = key_tag("acme-nadm-01")
    assert "acme-nadm-01" not in tag and len(tag.split("$")) == 2
    admin = Session(kind="admin", tenant="acme", stores=("north",), name="key2", locale="en",
                    csrf="c", key_tag=tag)
    assert find_tagged_key(tag, keys) == keys[1]
    assert as_now(admin, key=keys[1]) == admin
    # the same secret now bound to north and south: the session follows it
    wider = parse_api_keys("acme-nadm-01:admin@acme/north|south")
    assert find_tagged_key(tag, wider) == wider[0]
    assert as_now(admin, key=wider[0]).stores == ("north", "south")  # type: ignore[union-attr]
    # taken out, read-only now, or moved to another tenant: signed out
    rest = parse_api_keys("acme-admin-01:admin@acme")
    assert find_tagged_key(tag, rest) is None and as_now(admin, key=None) is None
    assert as_now(admin, key=parse_api_keys("acme-nadm-01:read@acme")[0]) is None
    assert as_now(admin, key=parse_api_keys("acme-nadm-01:admin@beta")[0]) is None
    # a tag from another secret, or not a tag at all, matches nothing
    assert find_tagged_key(key_tag("acme-admin-02"), keys) is None
    assert find_tagged_key("zz$00", keys) is None and find_tagged_key(None, keys) is None
    # development mode (no keys): the session stands; keys configured since: it ends
    dev = Session(kind="admin", tenant="default", stores=None, name="admin (development mode)",
                  locale="en", csrf="c")
    assert as_now(dev, auth_enabled=False) == dev
    assert as_now(dev, key=None) is None


def test_a_team_form_is_validated_by_the_api_models_in_the_readers_words() -> None:
    base = {"staff_id": "li", "name": "李娜", "store_id": "north", "role": "manager",
            "phone": "+8613800138000"}
    # an emptied field is unset, the fields not offered are kept, spaces in a number dropped
    member, errors = form_record(StaffMember, base, {"name": " 李娜 ", "phone": "",
                                                     "email": "li@example.com",
                                                     "role": "staff"},
                                 ("name", "phone", "email"))
    assert errors == {} and member == StaffMember(staff_id="li", name="李娜", store_id="north",
                                                  role="manager", email="li@example.com")
    member, errors = form_record(StaffMember, base, {"phone": "138 0013 8000",
                                                     "timezone": "Asia/Beijing"},
                                 ("phone", "timezone"), "zh-CN")
    assert member is None and set(errors) == {"phone", "timezone"}
    assert "国际格式" in errors["phone"] and "Asia/Shanghai" in errors["timezone"]
    store, errors = form_record(Store, {"store_id": "north"}, {"timezone": "Mars/Base"},
                                ("timezone",))
    assert store is None and errors["timezone"].startswith("must be an IANA time zone")
    store, errors = form_record(Store, {"store_id": "north"}, {"timezone": ""}, ("timezone",))
    assert errors == {} and store.timezone == "UTC"
    # the rarer mistakes in the reader's words too (a forged form: values no field offers)
    new = {"staff_id": "a\tb", "name": "名" * 129, "role": "boss", "locale": "fr"}
    for locale, words in (("zh-CN", ("不能包含控制字符", "最多 128 个字符", "请从所给选项中选择")),
                          ("en", ("must not contain control characters", "at most 128",
                                  "choose one of the values offered"))):
        member, errors = form_record(StaffMember, {}, new, tuple(new), locale)
        assert member is None and set(errors) == set(new), errors
        assert all(w in errors[f] for w, f in zip(words, ("staff_id", "name", "role"),
                                                   strict=True)), errors
    member, errors = form_record(StaffMember, {}, {"name": "Ana"}, ("name",), "zh-CN")
    assert errors == {"staff_id": "请填写此项"}


def test_a_change_names_the_fields_that_changed_never_their_values() -> None:
    ben = StaffMember(staff_id="ben", name="Ben", email="ben@example.com", store_id="north")
    assert changed_fields(None, ben) == ["email", "locale", "name", "role", "staff_id",
                                         "store_id"]
    moved = ben.model_copy(update={"store_id": "south", "phone": "+14155550123"})
    assert changed_fields(ben, moved) == ["phone", "store_id"]
    assert changed_fields(ben, ben) == []
    north = Store(store_id="north")
    assert changed_fields(north, north.model_copy(update={"timezone": "Asia/Tokyo"})) == [
        "timezone"]


def test_the_console_reads_closures_as_people_write_them() -> None:
    text = ("2026-07-01 .. 2026-08-31 summer break\n\n  2026-12-24 Christmas Eve \n"
            "2026-10-26 to 2026-10-30\n2027-02-01–2027-02-05 ski week")
    parsed, wrong = parse_closures(text)
    assert wrong is None
    assert parsed == [{"first": "2026-07-01", "last": "2026-08-31", "note": "summer break"},
                      {"first": "2026-12-24", "last": "2026-12-24", "note": "Christmas Eve"},
                      {"first": "2026-10-26", "last": "2026-10-30"},
                      {"first": "2027-02-01", "last": "2027-02-05", "note": "ski week"}]
    store = Store(store_id="s", closures=parsed)
    assert closures_text(store.closures) == (
        "2026-07-01 .. 2026-08-31 summer break\n2026-12-24 Christmas Eve\n"
        "2026-10-26 .. 2026-10-30\n2027-02-01 .. 2027-02-05 ski week")
    assert parse_closures(closures_text(store.closures)) == (parsed, None)
    assert parse_closures("") == ([], None)
    # what to fix, by line, in the reader's language
    _, wrong = parse_closures("2026-07-01 .. 2026-08-31\nJuly and August")
    assert wrong is not None and wrong.startswith("line 2") and "2026-07-01 .. 2026-08-31" in wrong
    _, wrong = parse_closures("2026-08-31 .. 2026-07-01")
    assert wrong == "line 1: the last day 2026-07-01 is before the first 2026-08-31"
    _, wrong = parse_closures("2026-02-30")
    assert wrong is not None and wrong.startswith("line 1")
    _, wrong = parse_closures("2026-01-01 .. 2027-06-30")
    assert wrong is not None and "366" in wrong
    _, wrong = parse_closures("2026-08-31 .. 2026-07-01", "zh-CN")
    assert wrong is not None and wrong.startswith("第 1 行")
    _, wrong = parse_closures("\n".join(f"2026-{m:02d}-{d:02d}" for m in range(1, 6)
                                        for d in range(1, 22)))
    assert wrong is not None and "100" in wrong


def test_the_team_page_shows_the_closure_going_on_or_coming_next() -> None:
    from datetime import UTC, datetime

    from services.console.team import closed_next

    store = Store(store_id="s", timezone="Asia/Tokyo", closures=[
        {"first": "2026-12-28", "last": "2027-01-03", "note": "new year"},
        {"first": "2026-08-10", "last": "2026-08-16"},
        {"first": "2026-12-07", "last": "2026-12-07", "note": "inventory"}])
    at = datetime(2026, 12, 6, 16, 0, tzinfo=UTC).timestamp() * 1000  # 01:00 on the 7th in Tokyo
    c = closed_next(store, at)
    assert c is not None and c.note == "inventory"
    c = closed_next(store, datetime(2026, 12, 6, 14, 0, tzinfo=UTC).timestamp() * 1000)
    assert c is not None and c.note == "inventory"  # coming next
    c = closed_next(store, datetime(2026, 12, 8, tzinfo=UTC).timestamp() * 1000)
    assert c is not None and c.note == "new year"
    assert closed_next(store, datetime(2027, 1, 4, 15, 0, tzinfo=UTC).timestamp() * 1000) is None
    assert closed_next(Store(store_id="t"), at) is None


def test_a_store_id_no_customer_belongs_to_is_told_with_the_ids_it_may_have_meant() -> None:
    """A store entered under another ID than its POS sends is a second store: its form says
    so while other stores have customers, naming the near ones first."""
    from services.console.team import UNKNOWN_LISTED, unknown_store

    pos = {"lycee-west", "lycee-east", "st-001", "st-002"}
    assert unknown_store("lycee-west", pos) is None  # customers belong to it
    assert unknown_store("Downtown", set()) is None  # no customer anywhere yet: nothing to say
    told = unknown_store("Lycee West", pos)
    assert told is not None
    assert told["near"] == ["lycee-west"] and told["more"] == 0
    assert told["named"] == sorted(pos)
    told = unknown_store("ST 01", pos)
    assert told is not None and told["near"][0] in {"st-001", "st-002"}
    told = unknown_store("Downtown", pos)
    assert told is not None and told["near"] == []
    many = {f"store-{i:03d}" for i in range(UNKNOWN_LISTED + 5)}
    told = unknown_store("elsewhere", many)
    assert told is not None
    assert len(told["named"]) == UNKNOWN_LISTED and told["more"] == 5
