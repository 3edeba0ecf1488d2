"""How an HTTP answer of a receiver (webhook, SMS gateway) maps onto delivery outcomes."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx

from services.common.exceptions import DeliveryError

RETRYABLE_STATUS = frozenset({408, 429})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def check_response(response: httpx.Response, *, what: str) -> None:
    """Return on 2xx; raise DeliveryError (retryable for 408/429/5xx, else permanent)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status in RETRYABLE_STATUS or status >= 500:
        raise DeliveryError(f"{what} answered HTTP {status}; will retry", retry_after=retry_after)
    if 300 <= status < 400:
        raise DeliveryError(f"{what} answered HTTP {status} (redirect to "
                            f"{response.headers.get('Location', '?')!r}); redirects are not "
                            "followed - use the final URL", permanent=True)
    raise DeliveryError(f"{what} answered HTTP {status}; not retried (fix the receiver or the "
                        "subscription)", permanent=True)


def transport_error(exc: httpx.HTTPError, *, what: str) -> DeliveryError:
    return DeliveryError(f"{what} could not be reached: {type(exc).__name__}: {exc}")
