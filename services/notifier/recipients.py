"""Who is told about a risk change (email/SMS). The seam for per-customer owners.

Today the recipient is the store's manager from the routing file (else its
``default_recipient``). A later issue adds customer owners from a profile API: implement
:class:`RecipientResolver` (e.g. owner first, store manager as fallback) and pass it to
:func:`services.notifier.worker.run_notifier` as ``resolver=``.
"""

from __future__ import annotations

from typing import Protocol

from services.common.riskchange import RiskChange
from services.notifier.routing import Recipient, Routing


class RecipientResolver(Protocol):
    async def recipients_for(self, change: RiskChange) -> list[Recipient]:
        """The people to notify about ``change``; may be empty, never raises for "unknown"."""
        ...


class StoreManagerResolver:
    """The store's manager if the store is mapped in the routing file, else the default."""

    def __init__(self, routing: Routing):
        self.routing = routing

    async def recipients_for(self, change: RiskChange) -> list[Recipient]:
        return [self.routing.store_manager(change.store_id)]
