from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.exceptions import ConfigError
from services.common.profiles import Consent
from services.common.riskchange import Cause, Reason, RiskChange, SuggestedAction
from services.notifier.policy import RESOLVE_COMPLAINT
from services.notifier.routing import Recipient
from services.notifier.templates import (
    SMS_GSM_SEGMENT,
    SMS_MAX_CHARS,
    SMS_UCS2_SEGMENT,
    Templates,
    render_email,
    render_sms,
    said_once,
    sms_segments,
    sms_units,
)

CHANGE = RiskChange(
    customer_id="c-1042", store_id="salon-downtown", previous_tier="low", tier="high",
    score=0.81, previous_score=0.22,
    reasons=[Reason(code="overdue", text="63 days since the last visit <usually 28>",
                    text_zh="距上次到店已63天", weight=1.9)],
    suggested_action=SuggestedAction(code="personal_call", text="Call the customer personally",
                                     text_zh="亲自致电客户"),
    value_tier="high", lifecycle_stage="active", model_version="m1",
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


def test_a_score_that_crossed_a_level_never_reads_unchanged() -> None:
    """A stylist read "Risk: medium → high / Score: 0.75 → 0.75": 0.7496 → 0.7503, across
    the high entry level. Shown with as many decimals as tell them apart."""
    crossed = CHANGE.model_copy(update={"previous_tier": "medium", "previous_score": 0.7496,
                                        "score": 0.7503})
    _, text, html = render_email(crossed, EN, delivery_id="d124")
    assert "0.7496 → 0.7503" in text and "0.75 → 0.75" not in text
    assert "0.7496 → 0.7503" in html
    same = CHANGE.model_copy(update={"previous_score": 0.5, "score": 0.5})
    assert "0.50 → 0.50" in render_email(same, EN, delivery_id="d125")[1]


def test_a_customer_of_one_store_seen_at_another_is_said_so() -> None:
    """Routed by their profile's store (harbor) after visits at downtown: the manager of
    harbor read "Store: salon-downtown" and asked why it came to them. Said as the console's
    customer page says it; a customer whose stores agree reads as before."""
    for who, said in ((EN, "salon-harbor, latest visits at salon-downtown"),
                      (ZH, "salon-harbor，最近到访门店salon-downtown")):
        _, text, html = render_email(CHANGE, who, delivery_id="d2", home_store="salon-harbor")
        assert said in text and said in html, text
    _, text, _ = render_email(CHANGE, EN, delivery_id="d3", home_store="salon-downtown")
    assert "Store: salon-downtown\n" in text


def test_zh_cn_recipients_get_the_chinese_texts() -> None:
    subject, text, html = render_email(CHANGE, ZH, delivery_id="d1")
    assert "距上次到店已63天" in text and "亲自致电客户" in html
    assert "63 days" not in text
    assert "距上次到店已63天" in render_sms(CHANGE, ZH)


def test_sms_is_short_and_complete() -> None:
    sms = render_sms(CHANGE, EN)
    assert sms_segments(sms) == 1 and len(sms) <= SMS_GSM_SEGMENT
    for part in ("c-1042", "salon-downtown", "high risk 0.81, was low", "63 days",
                 "Call the customer"):
        assert part in sms


LINK = "https://churn.example.com/a/AbCdEfGhIjKlMnOpQrStUv"


@pytest.mark.parametrize("recipient", [EN, ZH])
def test_sms_names_the_customer_and_says_why_and_what_to_do(recipient) -> None:
    """One segment where the reason and the action fit with the link; else two segments
    rather than an SMS that only names the customer ("Mei Chen high risk, was low. Ack:
    <link>" told staff nothing to act on: a link and a reason do not fit 160 characters)."""
    t = Templates()
    sms = t.sms(CHANGE, recipient, customer_name="Mei Chen", ack_url=LINK)
    assert "Mei Chen" in sms and sms.endswith(LINK) and "c-1042" not in sms
    why, do = ("63 days since the last visit", "Do: Call the customer personally") \
        if recipient is EN else ("距上次到店已63天", "建议：亲自致电客户")
    assert why in sms and do in sms
    length, limit = sms_units(sms)
    assert limit == (SMS_GSM_SEGMENT if recipient is EN else SMS_UCS2_SEGMENT)
    assert length > limit and sms_segments(sms) == 2  # did not fit one
    short = t.sms(CHANGE, EN, customer_name="Mei Chen", ack_url="https://c.io/a/x1")
    assert sms_segments(short) == 1 and "63 days" in short and "Do: Call" in short
    # the scorer's own action (68 characters) and reason: still two segments, not three
    real = CHANGE.model_copy(update={
        "reasons": [Reason(code="overdue", text="63 days since the last visit; usually every "
                           "28 days", text_zh="距上次到店已63天；平时每28天一次", weight=1.9)],
        "suggested_action": SuggestedAction(
            code="personal_call", text="Call or message the customer personally with an "
            "invitation to book", text_zh="亲自致电或发消息邀请客户预约")})
    sms = t.sms(real, recipient, customer_name="Priya Okafor", ack_url=LINK)
    action = real.suggested_action
    assert sms_segments(sms) == 2 and (action.text if recipient is EN else action.text_zh) in sms
    long_name = t.sms(CHANGE, recipient, customer_name="X" * 300, ack_url=LINK)
    assert long_name.endswith(LINK) and len(long_name) <= SMS_MAX_CHARS  # nothing fits: shortest
    assert "Do:" not in long_name and "建议" not in long_name
    assert sms_units("Größe €5") == (9, 160) and sms_units("王") == (1, 70)
    assert [sms_segments(x) for x in ("a" * 160, "a" * 161, "a" * 306, "a" * 307, "王" * 70,
                                      "王" * 71, "王" * 134, "王" * 135)] == [1, 2, 2, 3, 1, 2, 2, 3]


def test_sms_says_why_not_that_a_rule_holds_the_tier() -> None:
    """A tier a business rule raised leads its reasons with "Raised to high by a business rule
    (score 0.19)": the SMS, with room for one reason, gives the rule's own (why) instead, or
    the one its action answers."""
    raised = CHANGE.model_copy(update={"reasons": [
        Reason(code="tier_raised_by_rule", text="Raised to high by a business rule (score 0.19)",
               text_zh="业务规则将风险提升为高（评分0.19）", weight=9.0),
        *CHANGE.reasons]})
    for recipient, why in ((EN, "63 days since the last visit"), (ZH, "距上次到店已63天")):
        sms = Templates().sms(raised, recipient, customer_name="Ana Silva", ack_url=LINK)
        assert why in sms and "business rule" not in sms and "业务规则" not in sms, sms
    # nor its score, which the tier contradicts ("high risk 0.19"): the tier and why
    sms = Templates().sms(raised, EN, customer_name="Ana Silva", ack_url=LINK)
    assert f"{raised.score:.2f}" not in sms and "high risk, was" in sms, sms
    assert f"high risk {CHANGE.score:.2f}, was" in Templates().sms(
        CHANGE, EN, customer_name="Ana Silva", ack_url=LINK)
    _, text, _ = render_email(raised, EN, delivery_id="d")
    assert "Raised to high by a business rule" in text  # the e-mail has room for both
    # ...and says why first, as the console does; that a rule holds the tier after it
    assert text.index("63 days since the last visit") < text.index("Raised to high by a")
    digest = Templates().digest_item(raised, EN)["reasons"]
    assert digest[0].startswith("63 days") and digest[-1].startswith("Raised to high")
    # "Resolve the open complaint first" goes with the complaint, not the strongest reason
    complaint = Reason(code="open_complaint", text="1 complaint unresolved",
                       text_zh="有1个未解决的投诉", weight=0.5)
    both = raised.model_copy(update={"reasons": [*raised.reasons, complaint]})
    sms = Templates().sms(both, EN, customer_name="Ana Silva", ack_url=LINK,
                          action=RESOLVE_COMPLAINT)
    assert "1 complaint unresolved" in sms and "63 days" not in sms, sms
    assert "63 days" in Templates().sms(both, EN, customer_name="Ana Silva", ack_url=LINK)


def test_messages_name_the_complaint_their_action_answers() -> None:
    """A rule-raised customer with three stronger reasons and an open complaint fourth: the
    e-mail said "Resolve the open complaint first" under a "Why" list of the rule and three
    other reasons, the complaint cut (seen in the demo). It lists the complaint in the last
    place of the three, then the rule's hold of the tier."""
    def reason(code: str, text: str, weight: float) -> Reason:
        return Reason(code=code, text=text, text_zh=text, weight=weight)
    change = CHANGE.model_copy(update={
        "reasons": [reason("tier_raised_by_rule", "Raised to high by a business rule (score 0.34)", 0),
                    reason("overdue", "57 days since the last visit; usually every 19 days", 9),
                    reason("frequency_decline", "Came on 1 day in the last 90; usually about 3", 0.4),
                    reason("spend_decline", "Spending down 30% against the customer's usual", 0.3),
                    reason("open_complaint", "Unresolved complaints: 1, 0 of high severity", 0.2)],
        "suggested_action": RESOLVE_COMPLAINT})
    _, text, _ = render_email(change, EN, delivery_id="d")
    why = text.split("Why:")[1].split("Suggested action:")[0]
    assert [line.strip("- ").strip() for line in why.strip().splitlines()] == [
        "57 days since the last visit; usually every 19 days",
        "Came on 1 day in the last 90; usually about 3",
        "Unresolved complaints: 1, 0 of high severity",
        "Raised to high by a business rule (score 0.34)"]
    assert "Resolve the open complaint first" in text
    digest = Templates().digest_item(change, EN)["reasons"]
    assert "Unresolved complaints: 1, 0 of high severity" in digest


def test_messages_name_the_customer_and_mask_contacts_without_consent() -> None:
    contact = Recipient(key="customer:default:c-1042", name="Mei Chen", email="mei@example.com",
                        phone="+8613800138000", role="customer")
    subject, text, html = Templates().email(
        CHANGE, EN, delivery_id="d", customer_name="Mei Chen", ack_url=LINK,
        customer_contact=contact, consent=Consent(sms=True, email=False))
    assert "Mei Chen" in subject and "c-1042" not in subject
    assert "Customer: Mei Chen (c-1042)" in text and "Value: high" in text
    assert "+8613800138000" in text  # consented to SMS: the full number
    assert "mei@example.com" not in text and "m***@example.com" in text
    assert LINK in text and f'href="{LINK}"' in html
    _, text, _ = Templates().email(CHANGE, EN, delivery_id="d", customer_contact=contact,
                                   consent=Consent(sms=True, sms_opt_out=True))
    assert "+8613800138000" not in text and "13800138000"[-3:] in text
    assert "Customer: c-1042" in text


# Jinja2 templates: kinds, digests, per-tenant overrides ------------------------------------


def test_kinds_and_a_replaced_action() -> None:
    t = Templates()
    subject, text, _ = t.email(CHANGE, EN, delivery_id="d", kind="won_back", alert_id="a1")
    assert subject.startswith("[churnwatch] Won back") and "Good news" in text and "a1" in text
    # the customer came back: what is left of the reasons is to watch, not why they are at risk
    assert "Still to watch:" in text and "Why:" not in text
    assert "Why:" in t.email(CHANGE, EN, delivery_id="d", kind="alert", alert_id="a1")[1]
    assert "仍需留意" in t.email(CHANGE, ZH, delivery_id="d", kind="won_back", alert_id="a1")[1]
    subject, text, html = t.email(CHANGE, ZH, delivery_id="d", kind="escalation",
                                  escalate_after_s=1800)
    assert "升级" in subject and "30分钟" in text
    sms = t.sms(CHANGE, EN, kind="alert", action=RESOLVE_COMPLAINT)
    assert "Resolve the open complaint first" in sms and "Call the customer" not in sms


def test_digest_groups_items() -> None:
    t = Templates()
    items = [t.digest_item(CHANGE, EN, event_id="e1"),
             t.digest_item(CHANGE.model_copy(update={"customer_id": "c-<b>"}), EN, event_id="e2")]
    subject, text, html = t.digest(items, EN, tenant="default", channel="email", delivery_id="dg")
    assert subject == "[churnwatch] 2 customer risk changes"
    assert "c-1042" in text and "c-<b>" in text and "c-&lt;b&gt;" in html and "<b>" not in html
    named = t.digest_item(CHANGE, EN, event_id="e3", customer_name="Mei Chen") | {"ack_url": LINK}
    _, text, html = t.digest([named], EN, tenant="default", channel="email", delivery_id="dg")
    assert "- Mei Chen (salon-downtown)" in text and f"Acknowledge: {LINK}" in text
    assert f'href="{LINK}"' in html
    _, sms, _ = t.digest(items, ZH, tenant="default", channel="sms", delivery_id="dg")
    assert sms.startswith("churnwatch：2 位客户") and len(sms) <= SMS_MAX_CHARS


def test_tenant_overrides_fall_back_to_shared_then_packaged(tmp_path) -> None:
    (tmp_path / "acme" / "en").mkdir(parents=True)
    (tmp_path / "en").mkdir()
    (tmp_path / "acme" / "en" / "alert.subject.j2").write_text("ACME: {{ customer_id }}")
    (tmp_path / "en" / "alert.sms.j2").write_text("Shared SMS {{ customer_id }} {{ action }}")
    t = Templates(tmp_path)
    t.check()
    acme = CHANGE.model_copy(update={"tenant_id": "acme"})
    assert t.email(acme, EN, delivery_id="d")[0] == "ACME: c-1042"
    assert t.email(CHANGE, EN, delivery_id="d")[0].startswith("[churnwatch] Customer c-1042")
    assert t.sms(acme, EN) == "Shared SMS c-1042 Call the customer personally"
    assert "距上次到店" in t.sms(acme, ZH)  # no zh-CN override: packaged
    (tmp_path / "en" / "alert.txt.j2").write_text("{% if %}")
    with pytest.raises(ConfigError, match=r"alert.txt.j2: line 1"):
        Templates(tmp_path).check()


@pytest.mark.parametrize("locale, keep_head, lapsed_head, sms_lapsed", [
    ("en", "Still to keep (1), most valuable first", "Lapsed (2): silent for longer than the "
     "churn horizon", "3 customers at high churn risk now, 2 of them lapsed"),
    ("zh-CN", "仍可挽留（1 位），按价值排序", "已流失（2 位）：沉默时间已超过流失期限",
     "当前 3 位客户处于高流失风险，其中 2 位已流失")])
def test_the_go_live_summary_lists_those_to_keep_before_the_lapsed(
        locale: str, keep_head: str, lapsed_head: str, sms_lapsed: str) -> None:
    """Most of a year's high customers have lapsed by go-live: the summary names those still
    to keep first, then the lapsed under a heading of their own (mail, both forms); the SMS
    counts the lapsed before it names the others (a long list is clipped at its end)."""
    def item(name: str, lapsed: bool) -> dict[str, object]:
        return {"customer": name, "store": "north", "tier": "high", "score_now": "0.90",
                "reasons": ["overdue"], "action": "Call", "link": f"https://x/{name}",
                "lapsed": lapsed, "priority": 1.0}

    keep, lapsed = [item("Kay", False)], [item("Lee", True), item("Max", True)]
    ctx = {"items": keep + lapsed, "keep": keep, "lapsed": lapsed, "keep_listed": keep,
           "lapsed_listed": lapsed, "recipient_name": "Olga", "tenant": "default",
           "delivery_id": "d1", "high_url": "https://x/high", "lapsed_url": "https://x/lapsed"}
    t = Templates(None)
    text = t.render("default", locale, "summary.txt.j2", ctx)
    html = t.render("default", locale, "summary.html.j2", ctx)
    sms = " ".join(t.render("default", locale, "summary.sms.j2", ctx).split())
    assert keep_head in text and lapsed_head in text
    assert text.index("Kay") < text.index(lapsed_head) < text.index("Lee") < text.index("Max")
    assert html.index("Kay") < html.index("Lee") and html.count("<table") == 2
    assert sms_lapsed in sms and "Kay" in sms and "Lee" not in sms
    assert "https://x/lapsed" not in text + html  # everyone named: nothing more to see
    only_lapsed = {**ctx, "items": lapsed, "keep": [], "keep_listed": []}
    text = t.render("default", locale, "summary.txt.j2", only_lapsed)
    assert keep_head.split(" ")[0] not in text and "Lee" in text and "Max" in text
    # a long list: the first named, the rest counted and linked (the heading counts all)
    named_first = {**ctx, "lapsed_listed": lapsed[:1]}
    text = t.render("default", locale, "summary.txt.j2", named_first)
    html = t.render("default", locale, "summary.html.j2", named_first)
    more = "- … and 1 more, in the console: https://x/lapsed" if locale == "en" else \
        "- ……另有 1 位，请在控制台查看：https://x/lapsed"
    assert lapsed_head in text and "Lee" in text and "Max" not in text and more in text
    assert "Max" not in html and 'href="https://x/lapsed"' in html
    text = t.render("default", locale, "summary.txt.j2", {**ctx, "keep_listed": []})
    assert keep_head in text and "Kay" not in text and more.replace("lapsed", "high") in text


@pytest.mark.parametrize("recipient", [EN, ZH])
def test_a_school_s_sms_keeps_the_word_that_no_closed_days_are_on_record(recipient) -> None:
    """A student's reason at a school without closed days on record says so (the scorer's
    ``unrecorded_closures_reasons``): the teacher texted in the third week of an unentered
    break reads it, with the reason and the action, in the two segments the SMS had."""
    school = CHANGE.model_copy(update={
        "store_id": "lycee-nord",
        "reasons": [Reason(code="overdue", text="24 days since the last class; usually every "
                           "4 days; their store has no closed days on record",
                           text_zh="距上次上课已24天；平时每4天一次；其门店尚未记录停业日期",
                           weight=9.0)],
        "suggested_action": SuggestedAction(
            code="personal_call", text="Call or message the customer personally with an "
            "invitation to book", text_zh="亲自致电或发消息邀请客户预约")})
    sms = Templates().sms(school, recipient, customer_name="Priya Okafor", ack_url=LINK)
    said = "no closed days on record" if recipient is EN else "其门店尚未记录停业日期"
    action = school.suggested_action.text if recipient is EN else school.suggested_action.text_zh
    assert said in sms and action in sms and sms.endswith(LINK), sms
    assert sms_segments(sms) == 2


@pytest.mark.parametrize("recipient", [EN, ZH])
def test_a_digest_of_a_school_s_students_says_once_that_no_closed_days_are_on_record(
        recipient) -> None:
    """Every student's day-counting reason at a school without closed days on record ends
    with the clause: a digest or go-live summary of them says it once above the list, not on
    each line; when only some have it, each of those keeps it."""
    zh = recipient is ZH
    clause = "其门店尚未记录停业日期" if zh else "their store has no closed days on record"
    storeless = "尚未记录其所属门店，停业日期无法计入" if zh else \
        "no store is on record for them, so no closed days count"

    def student(cid: str, tail: str | None) -> RiskChange:
        text = f"{cid}: 24 days since the last class; usually every 4 days"
        text_zh = f"{cid}：距上次上课已24天；平时每4天一次"
        if tail is not None:
            text, text_zh = f"{text}; {tail}", f"{text_zh}；{tail}"
        return CHANGE.model_copy(update={"customer_id": cid, "reasons": [
            Reason(code="overdue", text=text, text_zh=text_zh, weight=9.0),
            Reason(code="open_complaint", text="1 unresolved complaint", text_zh="1 项未解决的投诉",
                   weight=5.0)]})

    t = Templates()
    both = [t.digest_item(student(c, clause), recipient, event_id=c) for c in ("s-1", "s-2")]
    _, text, html = t.digest(both, recipient, tenant="default", channel="email",
                             delivery_id="dg")
    note = "门店尚未记录停业日期，以下计算的天数可能包含假期" if zh else \
        "Their stores have no closed days on record, so the days counted below may include"
    for body in (text, html):
        assert clause not in body and note in body, body
        assert body.index(note) < body.index("s-1") < body.index("s-2")
    assert ("1 项未解决的投诉" if zh else "1 unresolved complaint") in text
    # a go-live summary, as the planner makes it: the same
    items, said = said_once([i | {"score_now": "0.90", "link": "https://x/s"} for i in both],
                            recipient.locale)
    ctx = {"items": items, "keep": items, "lapsed": [], "keep_listed": items,
           "lapsed_listed": [], "recipient_name": "Olga", "tenant": "default",
           "delivery_id": "d1", "high_url": "https://x/high", "lapsed_url": "https://x/l",
           "reasons_note": said}
    for name in ("summary.txt.j2", "summary.html.j2"):
        body = t.render("default", recipient.locale, name, ctx)
        assert clause not in body and note in body, body
    # students of no store: that is said instead
    items, said = said_once([t.digest_item(student(c, storeless), recipient) for c in "ab"],
                            recipient.locale)
    assert storeless not in " ".join(r for i in items for r in i["reasons_told"])
    assert ("这些顾客尚未记录所属门店" if zh else "No store is on record for these") in said
    # only one has it: said on that line, no note; the reasons as they were stay
    mixed = [both[0], t.digest_item(student("s-3", None), recipient, event_id="s-3")]
    _, text, _ = t.digest(mixed, recipient, tenant="default", channel="email",
                          delivery_id="dg")
    assert text.count(clause) == 1 and note not in text
    items, said = said_once(both, recipient.locale)
    assert said and items[0]["reasons"] == both[0]["reasons"]
    # one student: their line says it, as their alert does
    items, said = said_once(both[:1], recipient.locale)
    assert not said and items[0]["reasons_told"] == both[0]["reasons"]
