"""A customer's timeline: tier changes and staff actions (``tl``), notifications (``dl``)
and their recent events summarized by day (``ev``/``ed``), merged newest first.

``tl`` entries are JSON objects ``{"kind": ..., "at": RFC 3339, ...}``; the API writes
staff actions, acknowledgements and profile changes, the scorer tier changes (docs/api.md).
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.ingest.queries.timefmt import canonical, iso_ms
from services.scoring.activity import decode_activity

TIMELINE_MAX = 500  # entries kept in ``tl``
RECENT_EVENTS = 200  # newest events summarized


async def append(redis: Redis, keys: Keys, customer_id: str, tenant: str,
                 entry: dict[str, Any], pipe: Any | None = None) -> None:
    key = keys.timeline(customer_id, tenant)
    own = pipe is None
    p: Any = redis.pipeline(transaction=True) if own else pipe
    p.lpush(key, json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
    p.ltrim(key, 0, TIMELINE_MAX - 1)
    if own:
        await p.execute()


def _entry(raw: str, default_kind: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("at"), str):
        return None
    at = canonical(obj.pop("at"))
    if at is None:
        return None
    kind = str(obj.pop("kind", default_kind))
    return {"kind": kind, "at": at, "data": obj}


def _summaries(events: list[tuple[str, str]]) -> list[dict[str, Any]]:
    days: dict[str, dict[str, Any]] = {}
    for event_id, blob in events:
        try:
            a = decode_activity(event_id, blob)
        except (ValueError, KeyError, TypeError):
            continue
        at = canonical(iso_ms(a.ts) or "") or ""
        day = days.setdefault(at[:10], {"at": at, "visits": 0, "transactions": 0, "spend": 0.0,
                                        "refunds": 0, "complaints": 0, "stores": set()})
        day["at"] = max(day["at"], at)
        if a.kind == "visit":
            day["visits"] += 1
        elif a.kind == "complaint":
            day["complaints"] += 1
        elif a.amount is not None and a.amount < 0:
            day["refunds"] += 1
            day["spend"] += a.amount
        else:
            day["transactions"] += 1
            day["spend"] += a.amount or 0.0
        if a.store_id:
            day["stores"].add(a.store_id)
    out = []
    for day in days.values():
        at = day.pop("at")
        day["stores"] = sorted(day["stores"])
        day["spend"] = round(day["spend"], 2)
        out.append({"kind": "activity", "at": at, "data": day})
    return out


async def read(redis: Redis, keys: Keys, customer_id: str, tenant: str, *, limit: int,
               before: str | None) -> list[dict[str, Any]]:
    ev, ed, _ = keys.customer(customer_id, tenant)
    pipe = redis.pipeline(transaction=False)
    pipe.lrange(keys.timeline(customer_id, tenant), 0, TIMELINE_MAX - 1)
    pipe.lrange(keys.delivery_log(customer_id, tenant), 0, TIMELINE_MAX - 1)
    pipe.zrevrange(ev, 0, RECENT_EVENTS - 1)
    tl, dl, ids = await pipe.execute()
    blobs = await redis.hmget(ed, ids) if ids else []
    entries = [e for raw in tl if (e := _entry(raw, "note")) is not None]
    for e in entries:
        if e["kind"] == "tier_change" and "id" in e["data"]:
            e["data"]["alert_id"] = e["data"].pop("id")
        e["data"].pop("at_ms", None)
    for raw in dl:
        e = _entry(raw, "notification")
        if e is not None:
            e["kind"] = "notification"
            if "event_id" in e["data"]:
                e["data"]["alert_id"] = e["data"].pop("event_id")
            entries.append(e)
    entries += _summaries([(str(i), str(b)) for i, b in zip(ids, blobs, strict=True) if b])
    if before is not None:
        entries = [e for e in entries if e["at"] < before]
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]
