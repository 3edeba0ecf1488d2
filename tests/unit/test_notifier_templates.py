from __future__ import annotations

from datetime import UTC, datetime

from services.common.riskchange import Cause, Reason, RiskChange, SuggestedAction
from services.notifier.routing import Recipient
from services.notifier.templates import SMS_MAX_CHARS, render_email, render_sms

CHANGE = RiskChange(
    customer_id="c-1042", store_id="salon-downtown", previous_tier="low", tier="high",
    score=0.81, previous_score=0.22,
    reasons=[Reason(code="overdue", text="63 days since the last visit <usually 28>",
                    text_zh="距上次到店已63天", weight=1.9)],
    suggested_action=SuggestedAction(code="personal_call", text="Call the customer personally",
                                     text_zh="亲自致电客户"),
    value_tier="high", lifecycle_stage="mature", model_version="m1",
    as_of=datetime(2026, 11, 23, 10, tzinfo=UTC), cause=Cause(kind="silence"), features={},
)
EN = Recipient(key="m", name="Store manager", email="m@example.com", locale="en")
ZH = Recipient(key="z", name="李伟", email="z@example.com", locale="zh-CN")


def test_email_says_who_what_why_and_what_to_do() -> None:
    subject, text, html = render_email(CHANGE, EN, delivery_id="d123")
    assert "c-1042" in subject and "high" in subject and "low" in subject
    for part in ("c-1042", "salon-downtown", "low → high", "0.22 → 0.81",
                 "63 days since the last visit", "Call the customer personally", "d123"):
        assert part in text
    assert "&lt;usually 28&gt;" in html  # escaped
    assert "距上次" not in text


def test_zh_cn_recipients_get_the_chinese_texts() -> None:
    subject, text, html = render_email(CHANGE, ZH, delivery_id="d1")
    assert "距上次到店已63天" in text and "亲自致电客户" in html
    assert "63 days" not in text
    assert "距上次到店已63天" in render_sms(CHANGE, ZH)


def test_sms_is_short_and_complete() -> None:
    sms = render_sms(CHANGE, EN)
    assert len(sms) <= SMS_MAX_CHARS
    for part in ("c-1042", "salon-downtown", "low→high", "0.81", "63 days", "Call the customer"):
        assert part in sms
