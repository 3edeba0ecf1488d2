from __future__ import annotations

import hashlib
import hmac

import pytest

from services.notifier.signing import sign, verify

SECRET = "whsec-0123456789abcdef"
BODY = b'{"specversion":"1.0","id":"abc","data":{"tier":"high","note":"\xe4\xb8\xad"}}'


def test_signature_has_the_documented_format() -> None:
    header = sign(SECRET, BODY, timestamp=1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000"
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert v1 == f"v1={expected}"


def test_verify_accepts_a_fresh_signature() -> None:
    assert verify(SECRET, sign(SECRET, BODY), BODY, 300)


@pytest.mark.parametrize("secret, body", [
    ("another-secret-0123456789", BODY),
    (SECRET, BODY + b" "),
    (SECRET, BODY.replace(b"high", b"low ")),
])
def test_verify_rejects_wrong_secret_or_altered_body(secret: str, body: bytes) -> None:
    assert not verify(secret, sign(SECRET, BODY), body, 300)


def test_verify_enforces_the_tolerance() -> None:
    header = sign(SECRET, BODY, timestamp=1_000)
    assert verify(SECRET, header, BODY, 300, now=1_200)
    assert not verify(SECRET, header, BODY, 300, now=1_400)
    assert not verify(SECRET, header, BODY, 300, now=600)  # from the future


@pytest.mark.parametrize("header", ["", "garbage", "t=abc,v1=00", "v1=00", "t=1700000000",
                                    "t=1700000000,v1="])
def test_verify_rejects_malformed_headers(header: str) -> None:
    assert not verify(SECRET, header, BODY, 10**10)


def test_verify_accepts_any_of_several_v1_entries() -> None:
    good = sign(SECRET, BODY, timestamp=1_000)
    t, v1 = good.split(",")
    assert verify(SECRET, f"{t},v1={'0' * 64},{v1}", BODY, 10, now=1_000)


def test_sign_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        sign("", BODY)
