"""Logging set-up: one JSON object per line, with the service name on every record.

Every line carries ``timestamp`` (RFC 3339, UTC, milliseconds), ``level``, ``service``,
``logger`` and ``msg``, plus the correlation fields a call passes with ``extra=`` (``event_id``,
``customer_id``, ``delivery_id``, ``request_id``, ``tenant``, ``channel``, ``topic``/``partition``/``offset``...).
No personal data in clear: e-mail addresses and international phone numbers anywhere in the
message, the correlation fields or a traceback are masked (``a***@example.com``,
``*********567``) before the line is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_EXTRA_FIELDS = ("event_id", "customer_id", "delivery_id", "request_id", "tenant", "store_id",
                 "channel", "topic", "partition", "offset", "demo_phase")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# E.164-style numbers (a leading "+", 8 or more digits with optional separators). Bare digit
# runs are left alone: offsets, timestamps and amounts would be masked too.
_PHONE = re.compile(r"\+\d[\d ()./\-]{6,}\d")


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
        out: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                out[field] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
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
