"""What an API key may see: its tenant, and (for store-bound keys) its stores."""

from __future__ import annotations

from services.common.settings import ApiKey
from services.records.errors import Forbidden, Invalid


def store_for_list(key: ApiKey, store: str | None) -> str | None:
    """The store a list query reads: the one asked for, or the key's only store."""
    if key.stores is None:
        return store
    if store is None:
        if len(key.stores) == 1:
            return next(iter(key.stores))
        raise Invalid("this API key is bound to stores "
                      f"{', '.join(sorted(key.stores))}; pass ?store= naming one of them")
    if store not in key.stores:
        raise Forbidden(f"this API key may not read store {store!r}")
    return store


def check_store_write(key: ApiKey, store: str | None) -> None:
    if key.stores is not None and not key.allows_store(store):
        raise Forbidden("this API key may only write data of stores "
                        f"{', '.join(sorted(key.stores))}; set store_id to one of them")
