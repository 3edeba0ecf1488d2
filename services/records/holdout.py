"""The holdout group: a fixed share of high-risk customers that staff leave alone."""

from __future__ import annotations

from services.common.holdout import in_holdout

__all__ = ["holdout", "in_holdout"]


def holdout(tier: str | None, tenant: str, customer_id: str, share: float) -> bool:
    return tier == "high" and in_holdout(tenant, customer_id, share)
