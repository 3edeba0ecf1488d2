"""The holdout group of the win-back loop: a fixed share of high-risk customers whom staff
leave alone, so that the uplift of acting is measured, not assumed. The scorer marks the
risk change, the notifier sends no staff alert for it, the API shows it."""

from __future__ import annotations

import hashlib


def in_holdout(tenant: str, customer_id: str, share: float) -> bool:
    """Deterministic: the same customer is always in (or out of) the group."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{tenant}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
