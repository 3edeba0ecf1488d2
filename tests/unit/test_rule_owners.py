"""One owner per rule (issue 18): contact validation, tier order, time formatting and the
store scope each live in one place, and the places that apply them agree."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from services.common.contact import is_email, is_phone, normalize_phone
from services.common.exceptions import ConfigError
from services.common.profiles import Email, Phone
from services.common.riskchange import TIER_RANK, TIERS
from services.common.settings import ApiKey
from services.common.timefmt import canonical, iso_ms, rfc3339, utc_from_epoch_s
from services.notifier.routing import parse_routing_text
from services.records.errors import Forbidden, NotFound
from services.web.scope import check_customer_admin, check_store_read, check_store_write

SERVICES = Path(__file__).resolve().parents[2] / "services"
ROUTING = """\
recipients:
  boss: {name: Boss, EMAIL PHONE}
stores: {}
default_recipient: boss
routes:
  - match: {to: high}
    channels: [email]
"""

EMAILS = ["li@example.com", "a.b+c@mail.example.co", "li@example", "li.example.com",
          "a b@example.com", "<li@example.com>", "li@example.com,x@example.com",
          "x" * 65 + "@example.com", "li@@example.com"]
PHONES = ["+15550100000", "+49 151 1234 5678", "555-0100", "+0123456789", "+1234",
          "+1234567890123456", "4915112345678"]


def _routing_accepts(email: str | None = None, phone: str | None = None) -> bool:
    fields = ", ".join(f"{k}: {v!r}".replace("'", '"') for k, v in
                       (("email", email), ("phone", phone)) if v is not None)
    text = ROUTING.replace("EMAIL PHONE", fields)
    try:
        parse_routing_text(text, source="t.yaml")
    except ConfigError:
        return False
    return True


def _profile_accepts(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("email", EMAILS)
def test_the_routing_file_and_profiles_agree_on_email_addresses(email: str) -> None:
    assert _routing_accepts(email=email) == _profile_accepts(TypeAdapter(Email), email) \
        == is_email(email)


@pytest.mark.parametrize("phone", PHONES)
def test_the_routing_file_and_profiles_agree_on_phone_numbers(phone: str) -> None:
    assert _routing_accepts(phone=phone) == _profile_accepts(TypeAdapter(Phone), phone) \
        == is_phone(normalize_phone(phone))


def test_a_spaced_phone_number_is_kept_without_spaces() -> None:
    assert TypeAdapter(Phone).validate_python("+49 151 1234 5678") == "+4915112345678"


def test_tier_rank_follows_the_tiers() -> None:
    assert [TIER_RANK[t] for t in TIERS] == [0, 1, 2]
    # nowhere else is the order written down again
    pattern = re.compile(r"""\{\s*["']low["']\s*:\s*0\s*,""")
    found = sorted(str(p.relative_to(SERVICES)) for p in SERVICES.rglob("*.py")
                   if pattern.search(p.read_text(encoding="utf-8")))
    assert not found, found


def test_times_are_written_one_way() -> None:
    at = datetime(2026, 11, 1, 9, 30, 5, 123456, tzinfo=UTC)
    assert rfc3339(at) == "2026-11-01T09:30:05.123456Z"
    assert rfc3339(at, "seconds") == "2026-11-01T09:30:05Z"
    assert rfc3339(at.astimezone(timezone(timedelta(hours=1)))) == \
        "2026-11-01T10:30:05.123456+01:00"  # an offset that was given stays
    assert utc_from_epoch_s(at.timestamp(), "milliseconds") == "2026-11-01T09:30:05.123Z"
    assert iso_ms(int(at.timestamp() * 1000)) == "2026-11-01T09:30:05.123000Z"
    assert iso_ms(None) is None and iso_ms("") is None
    assert canonical("2026-11-01T10:30:05.1+01:00") == "2026-11-01T09:30:05.100Z"
    assert canonical("2026-11-01") is None  # no offset: not an instant


def test_no_module_formats_the_utc_z_by_hand() -> None:
    """``.isoformat().replace("+00:00", "Z")`` and strftime("%Y-%m-%dT...") live in
    services/common/timefmt.py only."""
    pattern = re.compile(r"""replace\(\s*["']\+00:00["']\s*,\s*["']Z["']\s*\)|strftime\(["']%Y-%m-%dT""")
    found = sorted(str(p.relative_to(SERVICES)) for p in SERVICES.rglob("*.py")
                   if pattern.search(p.read_text(encoding="utf-8")))
    assert set(found) <= {"common/timefmt.py"}, found


def _key(stores: set[str] | None) -> ApiKey:
    return ApiKey(name="k", secret=SecretStr("s" * 16), scopes=frozenset({"admin"}),
                  stores=frozenset(stores) if stores is not None else None)


def test_the_store_scope_answers() -> None:
    bound, wide = _key({"a"}), _key(None)
    assert check_store_read(bound, "thing", "a", "no thing") == "thing"
    assert check_store_read(wide, "thing", None, "no thing") == "thing"
    for store in ("b", None):  # another store's thing, or one of no store: not there
        with pytest.raises(NotFound, match="no thing"):
            check_store_read(bound, "thing", store, "no thing")
    with pytest.raises(NotFound):
        check_store_read(wide, None, "a", "no thing")
    check_store_write(bound, "a")
    check_store_write(wide, None)
    with pytest.raises(Forbidden):
        check_store_write(bound, None)
    check_customer_admin(bound, None, "erase")  # a customer of no known store
    with pytest.raises(Forbidden, match="may not erase customers of other stores"):
        check_customer_admin(bound, "b", "erase")


def test_one_retry_policy() -> None:
    """Which errors are transient and how long to wait live in services/common/retry.py; no
    module doubles its own delays (the notifier's deliveries have their own jittered,
    persistent schedule: services/notifier/backoff.py)."""
    from aiokafka.errors import KafkaConnectionError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    from services.common.retry import Backoff, is_transient

    backoff = Backoff(0.1, 0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1
    assert is_transient(RedisConnectionError("gone")) and is_transient(KafkaConnectionError())
    assert is_transient(TimeoutError()) and is_transient(ConnectionRefusedError())
    assert not is_transient(ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
    assert not is_transient(TypeError("a bug")) and not is_transient(KeyError("x"))
    pattern = re.compile(r"delay\s*\*\s*2|delay\s*\*=\s*2")
    found = sorted(str(p.relative_to(SERVICES)) for p in SERVICES.rglob("*.py")
                   if pattern.search(p.read_text(encoding="utf-8")))
    assert found == [], found
