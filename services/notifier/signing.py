"""Webhook signatures: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.

:func:`sign` is what the notifier puts in ``Churnwatch-Signature``; :func:`verify` is the
companion a receiver (and the tests) use. Several ``v1=`` entries may be present (e.g. while a
secret is rotated); the header is valid when any of them matches.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Churnwatch-Signature"
DELIVERY_HEADER = "Churnwatch-Delivery"
DEFAULT_TOLERANCE_S = 300.0


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Churnwatch-Signature`` value for ``body`` signed now (or at ``timestamp``)."""
    if not secret:
        raise ValueError("the signing secret is empty; give every subscription a secret")
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = DEFAULT_TOLERANCE_S,
           *, now: float | None = None) -> bool:
    """True when ``header`` is a valid signature of ``body`` made at most ``tolerance_s`` ago.

    ``body`` must be the raw request body exactly as received (not re-serialised JSON).
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.lower())
    if timestamp is None or not candidates or not secret:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
