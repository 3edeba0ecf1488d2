"""The demo salon chain's people: each store with a manager, a stylist who owns the store's
customers, and every customer's profile with a name — so alerts and the staff console name
people, route to the customer's owner and escalate to the store manager, as in a real chain.

Written through the public API (``PUT /v1/stores``, ``/v1/staff``, ``/v1/customers/{id}/profile``)
before the first event; needs the admin scope (open under ``make run``, where no keys are set).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable

import httpx

FIRST = ("Ana", "Ben", "Chloé", "David", "Elif", "Farah", "Grace", "Hugo", "Ines", "Jonas",
         "Kenji", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara",
         "Uma", "Viktor", "Wen", "Yara", "Zoe", "Li Na", "Wang Fang", "Chen Jie", "Liu Yang")
LAST = ("Alvarez", "Brown", "Chen", "Dubois", "Ekström", "Fischer", "García", "Hansen", "Ito",
        "Jensen", "Kowalski", "Li", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
        "Tanaka", "Varga", "Wang", "Zhang")
CONCURRENCY = 8
DEMO_STORE = "salon-downtown"  # the generator's first store: `make run` prints its manager's sign-in link


def manager_id(store: str) -> str:
    return f"mgr-{store}"


def manager_email(store: str) -> str:
    return f"manager.{store}@demo.example"


def staff_phone(store_index: int, role: int) -> str:
    """A demo staff member's mobile: E.164, a North American 555-01xx number (reserved for
    fiction; the SMS sink only writes it down), one area code per store. ``role``: 1 the
    manager, 2 the stylist."""
    return f"+1{201 + store_index}5550{100 + role}"


# the scripted customers (services/demo/feed.py) by the first name their id gives, so the
# README's `demo-ana-regular` is Ana in the console and the mails, not a random name
SCRIPTED_NAMES = {"demo-ana-regular": "Ana Silva", "demo-li-bigspender": "Li Wei",
                  "demo-sam-complainer": "Sam Carter", "demo-jo-recovered": "Jo Baker"}


def customer_name(customer_id: str, seed: int) -> str:
    if customer_id in SCRIPTED_NAMES:
        return SCRIPTED_NAMES[customer_id]
    rng = random.Random(f"{seed}-{customer_id}")
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


async def seed_people(client: httpx.AsyncClient, api_url: str, headers: dict[str, str], *,
                      stores: Iterable[str], customers: dict[str, str | None], seed: int,
                      log: logging.Logger) -> bool:
    """Stores, their staff and the customers' profiles; False (logged) when the API refuses."""
    base = api_url.rstrip("/")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def put(path: str, body: dict[str, object]) -> int:
        async with gate:
            r = await client.put(base + path, json=body, headers=headers)
            return r.status_code

    writes = []
    for i, store in enumerate(sorted(stores)):
        stylist = f"stylist-{store}"
        writes += [  # e-mail and a mobile each: the default routes text high risk by SMS
            put(f"/v1/staff/{manager_id(store)}", {
                "staff_id": manager_id(store), "name": f"Manager, {store}",
                "email": manager_email(store), "phone": staff_phone(i, 1), "store_id": store,
                "role": "manager", "locale": "en"}),
            put(f"/v1/staff/{stylist}", {
                "staff_id": stylist, "name": f"Stylist, {store}",
                "email": f"stylist.{store}@demo.example", "phone": staff_phone(i, 2),
                "store_id": store, "locale": "en"}),
            put(f"/v1/stores/{store}", {"store_id": store, "name": store.replace("-", " ").title(),
                                         "timezone": "UTC", "manager_staff_id": manager_id(store)}),
        ]
    for cid, home in sorted(customers.items()):
        body: dict[str, object] = {"name": customer_name(cid, seed)}
        if home:
            body |= {"store_id": home, "owner_staff_id": f"stylist-{home}"}
        writes.append(put(f"/v1/customers/{cid}/profile", body))
    try:
        codes = await asyncio.gather(*writes)
    except httpx.HTTPError as exc:
        log.warning("demo feed: could not write the chain's people (%s); alerts will name ids",
                    type(exc).__name__)
        return False
    refused = [c for c in codes if c >= 300]
    if refused:
        log.warning("demo feed: the API refused %d of %d profile writes (HTTP %s; staff and "
                    "stores need an admin key); alerts will name ids where it did",
                    len(refused), len(codes), sorted(set(refused)))
        return False
    log.info("demo feed: %d stores with a manager and a stylist, %d customer profiles",
             len(set(stores)), len(customers))
    return True
