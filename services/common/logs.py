"""Logging set-up: one JSON object per line, with the service name on every record.

Every line carries ``timestamp`` (RFC 3339, UTC, milliseconds), ``level``, ``service``,
``logger`` and ``msg``, plus the correlation fields a call passes with ``extra=`` (``event_id``,
``customer_id``, ``delivery_id``, ``request_id``, ``tenant``, ``channel``, ``topic``/``partition``/``offset``...).
No personal data in clear: e-mail addresses and international phone numbers anywhere in the
message, the correlation fields or a traceback are masked (``a***@example.com``,
``*********567``) before the line is written. A customer is never named by id (the id may be
their phone number): the ``customer_id`` field is written as the customer's pseudonymous token
(``cust_3f9a...``, :mod:`services.common.pseudonym`, keyed with the process's pseudonym key
and the record's ``tenant``), and the same id anywhere in the message or traceback of that
record is replaced by the token too. Log calls pass customer ids as ``extra={"customer_id":
..., "tenant": ...}``, never in the message text (or through :func:`customer_ref`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from services.common.pseudonym import TOKEN_RE, UNKEYED, pseudonym
from services.common.timefmt import utc_from_epoch_s

_EXTRA_FIELDS = ("event_id", "customer_id", "delivery_id", "request_id", "tenant", "store_id",
                 "channel", "topic", "partition", "offset", "demo_phase")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# E.164-style numbers (a leading "+", 8 or more digits with optional separators). Bare digit
# runs are left alone: offsets, timestamps and amounts would be masked too.
_PHONE = re.compile(r"\+\d[\d ()./\-]{6,}\d")


# A customer id quoted after its name ("customer_id '+86138...'", "customer 'c-1'"), as error
# texts written for API clients put it: redacted when such a text reaches a log line that does
# not carry the customer as a field (dead-letter reasons, exception messages).
_QUOTED_CUSTOMER = re.compile(r"""(\bcustomer(?:_id)?\s*[=:]?\s*)(['"])((?:(?!\2).){1,300}?)\2""")
REDACTED = "cust_redacted"
_pseudonym_key: bytes | None = None


def _redact_quoted(m: re.Match[str]) -> str:
    return m.group(0) if TOKEN_RE.match(m.group(3)) else m.group(1) + REDACTED


def set_pseudonym_key(key: bytes | None) -> None:
    """The key of this process's customer tokens (``None``: lines show ``cust_unkeyed``)."""
    global _pseudonym_key
    _pseudonym_key = key


def customer_ref(customer_id: str, tenant: str | None = None) -> str:
    """How a log line names a customer: their pseudonymous token, never the id."""
    if _pseudonym_key is None:
        return UNKEYED
    return pseudonym(_pseudonym_key, tenant or "default", customer_id)


def scrub(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    if "+" in text:
        text = _PHONE.sub(lambda m: mask_phone(re.sub(r"\D", "", m.group(0))), text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        customer = getattr(record, "customer_id", None)
        token = None
        if customer is not None:
            tenant = getattr(record, "tenant", None)
            token = customer_ref(str(customer), tenant if isinstance(tenant, str) else None)

        def clean(text: str) -> str:
            if token is not None and len(str(customer)) >= 4:  # shorter: too common a string
                text = text.replace(str(customer), token)
            if "customer" in text:
                text = _QUOTED_CUSTOMER.sub(_redact_quoted, text)
            return scrub(text)

        out: dict[str, Any] = {
            "timestamp": utc_from_epoch_s(record.created, "milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": clean(record.getMessage()),
        }
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if field == "customer_id" and value is not None:
                out[field] = token
            elif value is not None:
                out[field] = clean(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = clean(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "faust", "mode", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def mask_email(value: str) -> str:
    name, at, domain = value.partition("@")
    if not at:
        return mask_phone(value)
    return (name[:1] + "***@" + domain) if name else "***@" + domain


def mask_phone(value: str) -> str:
    digits = value.strip()
    return ("*" * max(len(digits) - 3, 0)) + digits[-3:] if len(digits) > 3 else "***"


_URL_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def mask_url_credentials(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host`` wherever it occurs in ``text``."""
    return _URL_CREDENTIALS.sub("//***@", text)
