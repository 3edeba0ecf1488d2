"""The win-back loop: staff actions, and whether the customer came back within the window.

An action "won the customer back" when the customer has an event (by event time) within
``winback_attribution_days`` after it — read from the customer's event index at query time.
Holdout customers (see holdout.py) get no action; their return rate over the same window,
counted from when they were entered the high tier, is the baseline: uplift = win-back rate of
actions - return rate of the holdout group.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys, customer_token, parse_customer_token
from services.common.settings import DEFAULT_RETENTION, Retention
from services.common.timefmt import iso_ms
from services.scoring.features import DAY_MS
from services.scoring.summary import Summary
from services.state.store import StateRead, read_states

# What staff may record (the API's body schema, the console's form and the metrics' labels).
ACTION_TYPES: tuple[str, ...] = ("called", "message_sent", "coupon_sent", "exclusive_offer",
                                 "complaint_resolved", "other")


async def record(redis: Redis, keys: Keys, *, tenant: str, customer_id: str,
                 body: dict[str, Any], at_ms: int, store_id: str | None,
                 holdout: bool, retention: Retention = DEFAULT_RETENTION,
                 action_id: str | None = None) -> dict[str, Any]:
    """Store a staff action (``action_id``: one made beforehand by :func:`new_action_id`,
    else a new one) with the customer and in the tenant's win-back index."""
    from services.records.timeline import append

    action_id = action_id or new_action_id()
    stored = {**body, "action_id": action_id, "at_ms": at_ms, "store_id": store_id,
              "holdout": holdout}
    token = customer_token(customer_id, tenant)
    # The tenant's index first, then the customer's keys (one hash tag, one MULTI): on a Redis
    # Cluster they live in different slots. An index entry whose action was never written
    # (a failure in between) is skipped by the report like an erased one.
    # Actions older than the customer retention leave the index (they expire with the customer).
    index = redis.pipeline(transaction=False)
    index.zadd(keys.winback_index(tenant), {f"{token}|{action_id}": at_ms})
    index.zremrangebyscore(keys.winback_index(tenant), "-inf",
                           f"({at_ms - retention.customer_ttl_s * 1000}")
    await index.execute()
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.actions(customer_id, tenant), action_id, json.dumps(stored, ensure_ascii=False))
    pipe.expire(keys.actions(customer_id, tenant), retention.customer_ttl_s)
    await append(redis, keys, customer_id, tenant,
                 {"kind": "staff_action", "at": iso_ms(at_ms), "action_id": action_id,
                  **{k: v for k, v in body.items() if v is not None}}, pipe=pipe,
                 retention=retention)
    await pipe.execute()
    return {**{k: v for k, v in stored.items() if k != "at_ms"},
            "customer_id": customer_id, "at": iso_ms(at_ms)}


def new_action_id() -> str:
    return uuid.uuid4().hex


def _outcome(returned: int, start_ms: int, window_ms: int, now_ms: int) -> str:
    if returned:
        return "returned"
    return "pending" if now_ms < start_ms + window_ms else "not_returned"


def _rate(c: dict[str, int]) -> float | None:
    decided = c["returned"] + c["not_returned"]
    return round(c["returned"] / decided, 4) if decided else None


def _returns(summary: str | None, at_ms: int, window: int) -> int:
    """1 if the customer came back (a visit or a purchase) within ``window`` after ``at_ms``."""
    if not summary:
        return 0
    try:
        return int(Summary.decode(summary).returned_between(at_ms + 1, at_ms + window))
    except ValueError:
        return 0


async def report(redis: Redis, keys: Keys, *, tenant: str, stores: frozenset[str] | None,
                 since_ms: int, until_ms: int, now_ms: int, window_days: int,
                 limit: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The win-back report, and the (action, action_id) pairs newly seen returned (for the
    returned counter, counted once)."""
    window = window_days * DAY_MS
    members: list[Any] = await redis.zrangebyscore(keys.winback_index(tenant), since_ms,
                                                   until_ms, start=0, num=limit, withscores=True)
    reader = StateRead(keys, ["sm"])
    pipe = redis.pipeline(transaction=False)
    refs = []
    for member, score in members:
        token, _, action_id = str(member).rpartition("|")
        _, cid = parse_customer_token(token)
        refs.append((cid, action_id, int(score)))
        pipe.hget(keys.actions(cid, tenant), action_id)
        pipe.hexists(keys.actions(cid, tenant), f"ret:{action_id}")
        reader.queue(pipe, cid, tenant)
    raw = await pipe.execute() if refs else []
    n = 2 + reader.size
    zero = {"actions": 0, "returned": 0, "not_returned": 0, "pending": 0}
    groups: dict[str, dict[str, dict[str, int]]] = {
        "action": defaultdict(lambda: dict(zero)), "store": defaultdict(lambda: dict(zero)),
        "staff": defaultdict(lambda: dict(zero))}
    overall, on_holdout = dict(zero), 0
    newly: list[tuple[str, str]] = []
    for i, (cid, action_id, at) in enumerate(refs):
        blob, counted = raw[n * i], raw[n * i + 1]
        n_after = _returns(reader.result(raw[n * i + 2:n * (i + 1)]).get("sm"), at, window)
        if blob is None:
            continue  # erased
        a = json.loads(blob)
        if stores is not None and a.get("store_id") not in stores:
            continue
        if a.get("holdout"):
            on_holdout += 1
            continue
        outcome = _outcome(int(n_after), at, window, now_ms)
        if outcome == "returned" and not counted:
            newly.append((a["action"], action_id))
            pipe.hsetnx(keys.actions(cid, tenant), f"ret:{action_id}", "1")
        for group, name in (("action", a["action"]), ("store", a.get("store_id") or "none"),
                            ("staff", a["staff_id"])):
            bucket = groups[group][name]
            bucket["actions"] += 1
            bucket[outcome] += 1
        overall["actions"] += 1
        overall[outcome] += 1
    if newly:  # count each return once, whichever API process sees it first
        won = await pipe.execute()
        newly = [n for n, first in zip(newly, won, strict=True) if first]
    control = await _holdout(redis, keys, tenant, stores, since_ms, until_ms, now_ms, window, limit)
    acted, base = _rate(overall), control["return_rate"]
    body: dict[str, Any] = {
        "window_days": window_days, "since": iso_ms(since_ms), "until": iso_ms(until_ms),
        "overall": {**overall, "winback_rate": acted}, "truncated": len(members) >= limit,
        "actions_on_holdout_customers": on_holdout, "holdout": control,
        "uplift": round(acted - base, 4) if acted is not None and base is not None else None,
    }
    for group, buckets in groups.items():
        body[f"by_{group}"] = [{"key": k, **v, "winback_rate": _rate(v)}
                               for k, v in sorted(buckets.items())]
    return body, newly


async def _holdout(redis: Redis, keys: Keys, tenant: str, stores: frozenset[str] | None,
                   since_ms: int, until_ms: int, now_ms: int, window: int,
                   limit: int) -> dict[str, Any]:
    members: list[Any] = await redis.zrangebyscore(keys.holdout_index(tenant), since_ms,
                                                   until_ms, start=0, num=limit, withscores=True)
    states = await read_states(redis, keys, [(tenant, parse_customer_token(str(token))[1])
                                             for token, _at in members], ["sm", "store"])
    c = {"customers": 0, "returned": 0, "not_returned": 0, "pending": 0}
    for (_, score), state in zip(members, states, strict=True):
        if stores is not None and state.get("store") not in stores:
            continue
        c["customers"] += 1
        c[_outcome(_returns(state.get("sm"), int(score), window), int(score), window,
                   now_ms)] += 1
    return {**c, "return_rate": _rate(c)}
