from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path

import pytest

from services.common.exceptions import ConfigError
from services.common.riskchange import Cause, Reason, RiskChange, SuggestedAction
from services.notifier.recipients import CustomerContext, StoreManagerResolver, for_owner
from services.notifier.routing import Recipient, load_routing, parse_routing_text

ROUTING = """
recipients:
  default_manager: {name: "Store manager", email: "manager@churnwatch.local", phone: "+15550100000"}
  downtown: {name: "Li Wei", email: "li@example.com", locale: zh-CN}
stores:
  salon-downtown: downtown
default_recipient: default_manager
routes:
  - match: {to: high, value_tier: high}
    channels: [webhook, sms, email]
  - match: {to: high}
    channels: [email, webhook]
  - match: {from: high, to: [medium, low]}
    channels: [email]
  - match: {store: [salon-uptown]}
    channels: [sms]
  - match: {}
    channels: [webhook]
"""


def change(previous: str, tier: str, *, store: str | None = "salon-downtown",
           value_tier: str = "medium") -> RiskChange:
    return RiskChange(
        customer_id="c-1", store_id=store, previous_tier=previous, tier=tier,  # type: ignore[arg-type]
        score=0.8, previous_score=0.2,
        reasons=[Reason(code="overdue", text="late", text_zh="迟到", weight=1.0)],
        suggested_action=SuggestedAction(code="personal_call", text="Call", text_zh="致电"),
        value_tier=value_tier, lifecycle_stage="active", model_version="m1",  # type: ignore[arg-type]
        as_of=datetime(2026, 1, 1, tzinfo=UTC), cause=Cause(kind="event", event_id="e1"),
        features={},
    )


@pytest.fixture
def routing():
    return parse_routing_text(ROUTING, source="test.yaml")


@pytest.mark.parametrize("previous, tier, store, value_tier, channels", [
    ("low", "high", "salon-downtown", "high", ("email", "sms", "webhook")),
    ("medium", "high", "salon-downtown", "low", ("email", "webhook")),
    ("high", "medium", None, "low", ("email",)),
    ("high", "low", None, "low", ("email",)),
    ("low", "medium", "salon-uptown", "low", ("sms",)),
    ("low", "medium", "salon-downtown", "low", ("webhook",)),
    ("medium", "low", None, "low", ("webhook",)),
])
def test_first_matching_route_wins(routing, previous, tier, store, value_tier, channels) -> None:
    assert routing.channels_for(change(previous, tier, store=store, value_tier=value_tier)) == channels


def test_no_matching_route_means_no_channels() -> None:
    r = parse_routing_text(ROUTING.replace("  - match: {}\n    channels: [webhook]\n", ""),
                           source="t.yaml")
    assert r.channels_for(change("low", "medium", store=None)) == ()


async def test_recipient_is_the_store_manager_else_the_default(routing) -> None:
    resolver = StoreManagerResolver(routing)
    [mapped] = await resolver.recipients_for(change("low", "high"))
    assert (mapped.key, mapped.locale) == ("downtown", "zh-CN")
    [unmapped] = await resolver.recipients_for(change("low", "high", store="elsewhere"))
    [no_store] = await resolver.recipients_for(change("low", "high", store=None))
    assert unmapped.key == no_store.key == "default_manager"


def test_the_packaged_default_loads() -> None:
    r = load_routing(None)
    assert r.channels_for(change("low", "high")) == ("email", "sms", "webhook")
    assert r.channels_for(change("high", "low")) == ("email", "webhook")
    # a customer rising to medium goes into the owner's daily e-mail digest
    assert r.channels_for(change("low", "medium")) == ("email", "webhook")
    medium = r.route_for(change("low", "medium"), None)
    assert medium is not None and medium.digest and medium.digest_at == dtime(8, 0)
    assert medium.digest_every_s is None and medium.to == ("owner",)
    assert r.channels_for(change("medium", "low")) == ("webhook",)
    assert r.store_manager("salon-downtown").email == "manager@churnwatch.local"


@pytest.mark.parametrize("value, every", [("true", None), ("false", None), ("1d", 86_400.0),
                                          ("90", 90.0), ("15m", 900.0)])
def test_a_route_digests_every_interval_or_its_own(value: str, every: float | None) -> None:
    text = ROUTING.replace("    channels: [sms]\n", f"    channels: [sms]\n    digest: {value}\n")
    route = parse_routing_text(text, source="test.yaml").routes[3]
    assert route.digest == (value != "false") and route.digest_every_s == every


def test_a_route_digests_every_day_at_a_time_of_the_store_clock() -> None:
    text = ROUTING.replace("    channels: [sms]\n", '    channels: [sms]\n    digest: {at: "07:30"}\n')
    route = parse_routing_text(text, source="test.yaml").routes[3]
    assert route.digest and route.digest_at == dtime(7, 30) and route.digest_every_s is None


@pytest.mark.parametrize("value", ["daily", "0", "-1h", "[1d]"])
def test_a_route_digest_that_is_no_duration_says_what_works(value: str) -> None:
    text = ROUTING.replace("    channels: [sms]\n", f"    channels: [sms]\n    digest: {value}\n")
    with pytest.raises(ConfigError, match=r"^test\.yaml: routes\[3\]\.digest: .* is not true, "
                                          r"false, a duration or \{at: <time of day>\}; use "
                                          r"digest: true .* digest: 1d, or digest: \{at: "):
        parse_routing_text(text, source="test.yaml")


@pytest.mark.parametrize(("value", "message"), [
    ('{at: "8am"}', r"routes\[3\]\.digest\.at: '8am' is not a time of day; use a quoted 24-hour"),
    ("{every: 1d}", r"routes\[3\]\.digest: unknown key\(s\) every; accepted keys are at"),
    ("{}", r"routes\[3\]\.digest\.at: None is not a time of day"),
])
def test_a_route_digest_at_a_wrong_time_says_what_works(value: str, message: str) -> None:
    text = ROUTING.replace("    channels: [sms]\n", f"    channels: [sms]\n    digest: {value}\n")
    with pytest.raises(ConfigError, match=r"^test\.yaml: " + message):
        parse_routing_text(text, source="test.yaml")


def test_a_routing_file_overrides_the_default(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    assert load_routing(path).source == str(path)


def test_a_missing_routing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CHURNWATCH_ROUTING_FILE=.*no such file"):
        load_routing(tmp_path / "nope.yaml")


@pytest.mark.parametrize("old, new, expected", [
    ("to: high, value_tier: high", "to: hgh", r"routes\[0\]\.match\.to: 'hgh' is not accepted; use one of low, medium, high"),
    ("channels: [email, webhook]", "channels: [email, fax]", r"routes\[1\]\.channels: 'fax' is not accepted; use one of email, sms, in_app, webhook"),
    ("channels: [email]", "channels: []", r"routes\[2\]\.channels: must be a non-empty list"),
    ("match: {store: [salon-uptown]}", "match: {shop: x}", r"routes\[3\]\.match: unknown key\(s\) shop; accepted keys are from, to, store, value_tier"),
    ("salon-downtown: downtown", "salon-downtown: nobody", r"stores\.salon-downtown: 'nobody' is not a defined recipient; use one of default_manager, downtown"),
    ("default_recipient: default_manager", "default_recipient: boss", r"default_recipient: 'boss' is not a defined recipient"),
    ("default_recipient: default_manager", "", r"default_recipient: is missing"),
    ("locale: zh-CN", "locale: fr", r"recipients\.downtown\.locale: 'fr' is not supported; use one of en, zh-CN"),
    ("locale: zh-CN", "locale: zh-CN, timezone: Mars/Olympus", r"recipients\.downtown\.timezone: 'Mars/Olympus' is not an IANA time zone; use e\.g\. Europe/Berlin"),
    ('phone: "+15550100000"', "phone: 555-0100", r"recipients\.default_manager\.phone: .* is not an E\.164 number"),
    ('email: "li@example.com"', 'email: "li.example.com"', r"recipients\.downtown\.email: 'li.example.com' is not an email address"),
    ("default_recipient:", "default_recipent:", r"\(top level\): unknown key\(s\) default_recipent"),
])
def test_validation_errors_name_file_path_and_fix(old: str, new: str, expected: str) -> None:
    text = ROUTING.replace(old, new)
    assert text != ROUTING
    with pytest.raises(ConfigError, match=r"^test\.yaml: " + expected):
        parse_routing_text(text, source="test.yaml")


def test_a_recipient_may_keep_to_a_time_zone_of_their_own() -> None:
    """A regional manager's quiet hours and morning digests follow her clock, not each
    store's (docs/notifier.md); without one, the store's."""
    routing = parse_routing_text(ROUTING.replace("locale: zh-CN", "locale: zh-CN, timezone: Asia/Shanghai"),
                                 source="test.yaml")
    assert routing.recipients["downtown"].timezone == "Asia/Shanghai"
    assert routing.recipients["default_manager"].timezone is None


def test_routes_must_be_a_non_empty_list() -> None:
    text = ROUTING[: ROUTING.index("routes:")] + "routes: {}\n"
    with pytest.raises(ConfigError, match=r"test\.yaml: routes: must be a non-empty list"):
        parse_routing_text(text, source="test.yaml")


def test_invalid_yaml_reports_the_line() -> None:
    with pytest.raises(ConfigError, match=r"test\.yaml: not valid YAML at line \d+, column \d+"):
        parse_routing_text("recipients:\n  a: [\n", source="test.yaml")


async def test_every_risk_change_goes_to_every_webhook_whatever_the_routes() -> None:
    """The contract: every risk change is POSTed to every subscription."""
    from services.alerting.inbound import decode_risk_change
    from services.common.riskchange import encode_cloudevent, to_cloudevent
    from services.notifier.planner import Planner

    routing = parse_routing_text(ROUTING.replace("  - match: {}\n    channels: [webhook]\n", ""),
                                 source="test")
    planner = Planner(routing=routing, resolver=StoreManagerResolver(routing),
                      enabled_channels={"email", "sms", "webhook"})
    subs = [{"id": "w1", "url": "https://a.example/h", "secret": "s" * 16},
            {"id": "w2", "url": "https://b.example/h", "secret": "t" * 16}]
    for previous, tier in (("low", "medium"), ("medium", "low"), ("high", "low")):
        event = decode_risk_change(encode_cloudevent(to_cloudevent(change(previous, tier))))
        messages = await planner.plan(event, subscriptions=subs)
        assert sorted(m.to for m in messages if m.channel == "webhook") == sorted(s["url"] for s in subs)


def test_in_app_is_a_channel_that_wakes_nobody_by_default() -> None:
    r = parse_routing_text(ROUTING.replace("channels: [email, webhook]",
                                           "channels: [email, in_app, webhook]") + """
quiet_hours: {start: "21:00", end: "08:00"}
escalation: {after: 30m}
""", source="test")
    assert r.channels_for(change("low", "high")) == ("email", "in_app", "webhook")
    assert "in_app" in r.used_channels
    policies = r.policies
    assert policies.quiet_hours is not None and "in_app" not in policies.quiet_hours.channels
    assert policies.escalation_channels == ("email", "sms")
    explicit = parse_routing_text(ROUTING + "escalation: {after: 30m, channels: [in_app, sms]}\n",
                                  source="test")
    assert explicit.policies.escalation_channels == ("sms", "in_app")


def test_a_notice_follows_the_owner_only_when_the_route_names_its_reader_only_as_owner(
        routing) -> None:
    """``for_owner``: who gets a notice as the customer's owner (or as the manager standing in
    for none), so that a notice held for them goes to the owner of the day it is sent."""
    ben = Recipient(key="staff:t:ben", name="Ben")
    mo = Recipient(key="staff:t:mo", name="Mo", role="manager")
    owned = CustomerContext(manager=mo, owner=ben)
    ownerless = CustomerContext(manager=mo)
    assert for_owner(owned, ("owner",), routing) == {"staff:t:ben"}
    assert for_owner(ownerless, ("owner",), routing) == {"staff:t:mo"}  # standing in
    assert for_owner(owned, ("owner", "store_manager"), routing) == {"staff:t:ben"}
    # the manager is named for himself too: his, whoever owns the customer
    assert for_owner(ownerless, ("owner", "store_manager"), routing) == set()
    assert for_owner(owned, ("store_manager", "downtown"), routing) == set()
    as_named = CustomerContext(manager=mo, owner=Recipient(key="downtown", name="Li Wei"))
    assert for_owner(as_named, ("owner", "downtown"), routing) == set()
