"""A customer's timeline: tier changes and staff actions (``tl``), notifications (``dl``)
and their recent activity by day (from the summary in ``st``), merged newest first.

``tl`` entries are JSON objects ``{"kind": ..., "at": RFC 3339, ...}``; the API writes
staff actions, acknowledgements and profile changes, the scorer tier changes (docs/api.md).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION, Retention
from services.common.timefmt import canonical, iso_ms
from services.scoring.features import DAY_MS
from services.scoring.summary import Summary
from services.state.store import StateRead

EPOCH_DAY = date(1970, 1, 1)  # day 0 of the summary's days
TIMELINE_MAX = DEFAULT_RETENTION.timeline_max  # entries kept in ``tl`` (CHURNWATCH_TIMELINE_MAX_ENTRIES)


async def append(redis: Redis, keys: Keys, customer_id: str, tenant: str,
                 entry: dict[str, Any], pipe: Any | None = None, *,
                 retention: Retention = DEFAULT_RETENTION) -> None:
    """Add an entry (newest first), keep the newest ``retention.timeline_max`` and let the list
    expire with the customer's other keys (``retention.customer_ttl_s`` after the last write)."""
    key = keys.timeline(customer_id, tenant)
    own = pipe is None
    p: Any = redis.pipeline(transaction=True) if own else pipe
    p.lpush(key, json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
    p.ltrim(key, 0, retention.timeline_max - 1)
    p.expire(key, retention.customer_ttl_s)
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


def _summaries(summary: Summary) -> list[dict[str, Any]]:
    """One ``activity`` entry per day of the summary's daily span (the newest events' stores
    where the summary still holds them)."""
    stores: dict[int, set[str]] = {}
    newest: dict[int, int] = {}
    for a in summary.recent():
        day = a.day  # (the summary's days are the events' local days)
        newest[day] = max(newest.get(day, 0), a.ts)
        if a.store_id:
            stores.setdefault(day, set()).add(a.store_id)
    out = []
    for d in summary.daily():
        day = int(d["day"])
        at = canonical(iso_ms(newest.get(day, day * DAY_MS - summary.tz_minutes * 60_000))
                       or "") or ""
        data: dict[str, Any] = {k: int(d[k]) for k in
                                ("visits", "transactions", "refunds", "complaints",
                                 "complaints_resolved")}
        data["spend"] = round(float(d["spend"]), 2)
        data["stores"] = sorted(stores.get(day, ()))
        data["day"] = (EPOCH_DAY + timedelta(days=day)).isoformat()  # the shop's calendar date
        out.append({"kind": "activity", "at": at, "data": data})
    return out


async def read(redis: Redis, keys: Keys, customer_id: str, tenant: str, *, limit: int,
               before: str | None) -> list[dict[str, Any]]:
    reader = StateRead(keys, ["sm"])
    pipe = redis.pipeline(transaction=False)
    pipe.lrange(keys.timeline(customer_id, tenant), 0, -1)  # both lists are capped
    pipe.lrange(keys.delivery_log(customer_id, tenant), 0, -1)
    reader.queue(pipe, customer_id, tenant)
    tl, dl, *rows = await pipe.execute()
    blob = reader.result(rows).get("sm")
    entries = [e for raw in tl if (e := _entry(raw, "note")) is not None]
    for e in entries:
        if e["kind"] == "tier_change" and "id" in e["data"]:
            e["data"]["alert_id"] = e["data"].pop("id")
        e["data"].pop("at_ms", None)
    for raw in dl:
        e = _entry(raw, "notification")
        if e is not None:
            if e["kind"] != "notification":  # what the notice was: alert, won_back, escalation...
                e["data"]["kind"] = e["kind"]
            e["kind"] = "notification"
            if "event_id" in e["data"]:
                e["data"]["alert_id"] = e["data"].pop("event_id")
            entries.append(e)
    if blob:
        try:
            entries += _summaries(Summary.decode(blob))
        except ValueError:
            pass  # a summary this version cannot read: the entries without it
    if before is not None:
        entries = [e for e in entries if e["at"] < before]
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]
