"""E-mail addresses and phone numbers: the one validator. Profiles and staff (the API, the
console's sign-in) and the routing file's recipients (the notifier) accept exactly the same
values, so an address the routing file takes never fails as a profile, and the other way round.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL_MAX_LENGTH = 320
PHONE_MAX_LENGTH = 16  # "+" and at most 15 digits (E.164)
# local part @ domain with a dot; no whitespace, and none of <>,; (one address, never a list)
_EMAIL = re.compile(r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,255}\.[^@\s<>,;]{2,63}$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL_HINT = "must be an e-mail address like name@example.com"
PHONE_HINT = "must be an E.164 phone number like +4915112345678"


def is_email(value: str) -> bool:
    return len(value) <= EMAIL_MAX_LENGTH and _EMAIL.match(value) is not None


def normalize_phone(value: Any) -> Any:
    """Spaces are for reading ("+49 151 1234 5678"); the number is stored without them."""
    return value.replace(" ", "") if isinstance(value, str) else value


def is_phone(value: str) -> bool:
    """``value`` (normalized: :func:`normalize_phone`) is an E.164 number."""
    return _PHONE.match(value) is not None


def check_email(value: str) -> str:
    if not is_email(value):
        raise ValueError(EMAIL_HINT)
    return value


def check_phone(value: str) -> str:
    value = normalize_phone(value)
    if not is_phone(value):
        raise ValueError(PHONE_HINT)
    return str(value)
