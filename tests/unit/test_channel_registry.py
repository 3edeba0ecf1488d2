"""The channel registry: each channel is one module of services/notifier/channels with a
SPEC; routing, the notifier's channel set, targets, masks and templates all follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import Settings, load_settings
from services.notifier import routing
from services.notifier.channels import registry
from services.notifier.channels.base import Message
from services.notifier.routing import Recipient, load_routing
from services.notifier.worker import build_channels

TEMPLATES = Path(routing.__file__).parent / "message_templates"


def test_every_channel_module_is_found_in_order() -> None:
    assert registry.names() == ("email", "sms", "in_app", "webhook")
    assert routing.CHANNELS == registry.names()
    assert routing.STAFF_CHANNELS == ("email", "sms", "in_app")
    assert routing.PUSH_CHANNELS == ("email", "sms")
    configured = _settings(smtp_host="127.0.0.1", sms_gateway_url="http://127.0.0.1:9/sms")
    for spec in registry.specs():  # the delivery class says the same name
        channel = spec.build(registry.Built(settings=configured, redis=Redis(), keys=Keys("x"),
                                            used={spec.name}))  # no connection is made
        assert channel is not None and channel.name == spec.name


def test_targets_and_masks_come_from_each_channel() -> None:
    staff = Recipient(key="staff:default:ana", name="Ana", email="ana@example.com",
                      phone="+8613800138000", role="staff")
    customer = Recipient(key="customer:bob", name="Bob", email="bob@example.com",
                         phone="+8613900139000", role="customer")
    assert registry.target("email", staff) == "ana@example.com"
    assert registry.target("sms", staff) == "+8613800138000"
    assert registry.target("in_app", staff) == "ana"
    assert registry.target("in_app", customer) is None  # no console identity
    assert registry.target("webhook", staff) is None
    assert registry.target("pigeon", staff) is None
    for name, to in (("email", "ana@example.com"), ("sms", "+8613800138000"),
                     ("in_app", "ana"), ("webhook", "https://hooks.example.com/x?token=s3cret")):
        shown = Message(delivery_id="d", channel=name, event_id="e", customer_id="c", to=to,
                        event=b"{}").masked_target
        assert "ana@example.com" not in shown and "13800138000" not in shown
        assert "s3cret" not in shown


@pytest.mark.parametrize("locale", sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir()))
def test_every_staff_channel_has_the_templates_of_its_form(locale: str) -> None:
    have = {p.name for p in (TEMPLATES / locale).iterdir()}
    for spec in registry.specs():
        if spec.audience != "staff":
            continue
        for kind in ("alert", "digest", "summary"):
            want = ({f"{kind}.subject.j2", f"{kind}.txt.j2", f"{kind}.html.j2"}
                    if spec.long_form else {f"{kind}.sms.j2"})
            assert want <= have, (spec.name, locale, want - have)


def test_the_notifier_builds_what_is_configured_and_used(caplog: pytest.LogCaptureFixture) -> None:
    rules = load_routing(None)  # the packaged routing file asks for email and sms
    plain = build_channels(_settings(), rules, None, Keys("x"))
    assert set(plain) == {"webhook"}
    assert "email notifications are off: CHURNWATCH_SMTP_HOST is not set" in caplog.text
    full = build_channels(_settings(smtp_host="127.0.0.1",
                                    sms_gateway_url="http://127.0.0.1:9/sms"), rules, None, Keys("x"))
    assert {"email", "sms", "webhook"} <= set(full)


def _settings(**overrides: object) -> Settings:
    return load_settings(**overrides)
