"""Settings fail with messages naming the variable; schemas/ matches the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from services.common.exceptions import ConfigError
from services.common.riskchange import Cause, Reason, RiskChange, SuggestedAction, to_cloudevent
from services.common.schemagen import check_schemas, generate
from services.common.settings import load_settings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("env,fragment", [
    ({"CHURNWATCH_CLOCK": "sundial"}, "CHURNWATCH_CLOCK"),
    ({"CHURNWATCH_API_KEYS": "onlysecret"}, "CHURNWATCH_API_KEYS"),
    ({"CHURNWATCH_API_KEYS": "abcdefgh:write"}, "unknown scope"),
    ({"CHURNWATCH_KAFKA_BOOTSTRAP": "localhost"}, "host:port"),
    ({"CHURNWATCH_REDIS_URL": "http://x"}, "redis://"),
    ({"CHURNWATCH_TIER_HIGH_ENTER": "0.2"}, "CHURNWATCH_TIER_"),
    ({"CHURNWATCH_ENV": "production"}, "CHURNWATCH_API_KEYS must be set"),
    ({"CHURNWATCH_MODEL": "/nonexistent/model.joblib"}, "churnwatch train"),
    ({"CHURNWATCH_PUBLIC_URL": "churn.example.com"}, "CHURNWATCH_PUBLIC_URL"),
    ({"CHURNWATCH_ENV": "production", "CHURNWATCH_API_KEYS": "prod-admin-key-1:admin"},
     "CHURNWATCH_ACK_LINK_SECRET must be set"),
    ({"CHURNWATCH_ENV": "production", "CHURNWATCH_API_KEYS": "prod-admin-key-1:admin",
      "CHURNWATCH_ACK_LINK_SECRET": "change-me-change-me-change-me-change-me"}, "not a placeholder"),
    ({"CHURNWATCH_ENV": "production", "CHURNWATCH_API_KEYS": "prod-admin-key-1:admin",
      "CHURNWATCH_ACK_LINK_SECRET": "Zq3x9-short"}, "at least 32"),
    ({"CHURNWATCH_ALERT_MAX_AGE": "two days"}, "CHURNWATCH_ALERT_MAX_AGE"),
    ({"CHURNWATCH_ALERT_SETTLE": "-5"}, "CHURNWATCH_ALERT_SETTLE"),
    ({"CHURNWATCH_SMS_GATEWAY_URL": "http://sms.example.com/send"},
     "CHURNWATCH_SMS_GATEWAY_URL 'http://sms.example.com/send' uses plain http://"),
    ({"CHURNWATCH_SMS_GATEWAY_URL": "http://10.0.0.7:8080/send"}, "Use an https:// URL, or set "
     "CHURNWATCH_WEBHOOK_ALLOW_HTTP=true"),
])
def test_bad_settings_name_the_variable(monkeypatch, env, fragment) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert fragment in str(exc.value)


@pytest.mark.parametrize("raw,seconds", [("2d", 172_800.0), ("48h", 172_800.0),
                                         ("172800", 172_800.0), ("90s", 90.0), ("250ms", 0.25)])
def test_alert_durations_accept_units(monkeypatch, raw, seconds) -> None:
    monkeypatch.setenv("CHURNWATCH_ALERT_MAX_AGE", raw)
    assert load_settings().alert_max_age == seconds
    assert load_settings().to_env()["CHURNWATCH_ALERT_MAX_AGE"] == str(seconds)  # for children


@pytest.mark.parametrize("env", [
    {"CHURNWATCH_SMS_GATEWAY_URL": "https://sms.example.com/send"},
    {"CHURNWATCH_SMS_GATEWAY_URL": "http://127.0.0.1:9000/sms"},  # make run's sink
    {"CHURNWATCH_SMS_GATEWAY_URL": "http://localhost:9000/sms"},
    {"CHURNWATCH_SMS_GATEWAY_URL": "http://10.0.0.7:8080/send",
     "CHURNWATCH_WEBHOOK_ALLOW_HTTP": "true"},
])
def test_sms_gateway_is_https_unless_on_this_machine_or_opted_out(monkeypatch, env) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.sms_gateway_url == env["CHURNWATCH_SMS_GATEWAY_URL"]
    assert s.to_env()["CHURNWATCH_WEBHOOK_ALLOW_HTTP"] == env.get("CHURNWATCH_WEBHOOK_ALLOW_HTTP",
                                                                  "false")  # for children


def test_secrets_stay_secret(monkeypatch) -> None:
    monkeypatch.setenv("CHURNWATCH_API_KEYS", "topsecret1:ingest+read")
    s = load_settings()
    assert "topsecret1" not in repr(s)
    key = s.find_key("topsecret1")
    assert key is not None and key.allows("read") and not key.allows("admin")
    assert s.find_key("nope") is None


def test_acknowledge_links_have_a_public_url_and_a_real_secret(monkeypatch) -> None:
    s = load_settings()
    assert s.api_public_url == f"http://127.0.0.1:{s.api_port}"  # the API's own address
    monkeypatch.setenv("CHURNWATCH_PUBLIC_URL", "https://churn.example.com/")
    monkeypatch.setenv("CHURNWATCH_ENV", "production")
    monkeypatch.setenv("CHURNWATCH_API_KEYS", "prod-admin-key-1:admin")
    monkeypatch.setenv("CHURNWATCH_ACK_LINK_SECRET", "Zq3x9TnR2vLk8Wm4Pj7Hd1Fs6Gb0Yc5A")
    s = load_settings()
    assert s.api_public_url == "https://churn.example.com"
    assert s.ack_link_key == "Zq3x9TnR2vLk8Wm4Pj7Hd1Fs6Gb0Yc5A"
    assert "Zq3x9TnR2vLk8Wm4Pj7Hd1Fs6Gb0Yc5A" not in repr(s)


def test_schema_files_match_the_models() -> None:
    assert check_schemas(SCHEMAS) == [], "schemas/ is out of date: run `make schemas`"


def _registry() -> Registry:
    return Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in generate().values())


def test_examples_and_a_real_cloudevent_validate() -> None:
    registry = _registry()
    schemas = generate()
    for name in ("transaction", "visit", "complaint"):
        schema = schemas[f"{name}.schema.json"]
        for example in schema["examples"]:
            Draft202012Validator(schemas["event.schema.json"], registry=registry).validate(example)
    change = RiskChange(
        customer_id="c", previous_tier="low", tier="high", score=0.9,
        reasons=[Reason(code="overdue", text="t", text_zh="z", weight=1.0)],
        suggested_action=SuggestedAction(code="personal_call", text="t", text_zh="z"),
        value_tier="high", lifecycle_stage="active", model_version="m",
        as_of="2026-11-23T10:00:00Z", cause=Cause(kind="event", event_id="e"), features={"a": 1.0},
    )
    ce = json.loads(json.dumps(to_cloudevent(change)))
    Draft202012Validator(schemas["risk_change_cloudevent.schema.json"], registry=registry).validate(ce)
