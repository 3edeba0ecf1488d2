"""Everything churnwatch holds about one customer, as one JSON document (access requests).

Reads every per-customer key that :meth:`Keys.customer_all` lists (what erasure deletes) plus
the customer's entries in the tenant's indexes and the acknowledgements of their alerts, in
two pipelined round trips. The document names the customer; the audit record of the export
names them only by digest (:func:`services.records.erasure.subject_digest`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys, customer_token, get_many
from services.common.riskchange import TIERS
from services.common.timefmt import canonical, iso_ms, iso_ms_at, local_iso
from services.records.erasure import AUDIT_MAX, subject_digest
from services.scoring.features import Activity
from services.scoring.summary import Summary
from services.state.store import StateRead, inbox_entries


def _json(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"unreadable": str(raw)}


def _list(raws: list[Any]) -> list[Any]:
    return [_json(r) for r in raws]


def _events(blob: str | None) -> list[dict[str, Any]]:
    """The raw events the customer's summary still holds (its newest ones)."""
    if not blob:
        return []
    try:
        recent = Summary.decode(blob).recent()
    except ValueError:
        return [{"event_id": "", "unreadable": blob}]
    return [_event(a) for a in recent]


def _event(a: Activity) -> dict[str, Any]:
    row: dict[str, Any] = {"event_id": a.event_id, "type": a.kind,
                           "occurred_at": iso_ms_at(a.ts, a.tz_minutes),
                           "store_id": a.store_id, "amount": a.amount, "severity": a.severity,
                           "complaint_ref": a.complaint_ref, "status": a.status,
                           "channel": a.channel}
    return {k: v for k, v in row.items() if v is not None}


def _state(fields: dict[str, str]) -> dict[str, Any] | None:
    if not fields:
        return None
    out: dict[str, Any] = {"store_id": fields.get("store"), "tier": fields.get("tier") or None}
    for name, field in (("first_event_at", "first_ts"), ("last_event_at", "last_ts")):
        out[name] = local_iso(fields.get(field), fields.get("tz"))  # the shop's clock
    out["tier_since"] = iso_ms(fields.get("tier_since"))
    if fields.get("score"):
        out["score"] = float(fields["score"])
    if "risk" in fields:
        out["risk"] = _json(fields["risk"])
    return out


async def collect(redis: Redis, keys: Keys, customer_id: str, *, tenant: str) -> dict[str, Any]:
    """The export document of one customer (see ``CustomerExport`` for its shape)."""
    token = customer_token(customer_id, tenant)
    reader = StateRead(keys)
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.profile(customer_id, tenant))
    reader.queue(pipe, customer_id, tenant)
    pipe.lrange(keys.timeline(customer_id, tenant), 0, -1)
    pipe.lrange(keys.delivery_log(customer_id, tenant), 0, -1)
    pipe.hgetall(keys.actions(customer_id, tenant))
    pipe.get(keys.episode(customer_id, tenant))
    pipe.hvals(keys.drafts(customer_id, tenant))
    pipe.zscore(keys.holdout_index(tenant), token)
    for tier in TIERS:
        pipe.zscore(keys.tier_index(tier, tenant), token)
    profile, *rows = await pipe.execute()
    state, rows = reader.result(rows[:reader.size]), rows[reader.size:]
    timeline, deliveries, actions, episode, drafts, holdout, *tier_scores = rows
    events = _events(state.get("sm"))
    timeline_entries = _list(timeline)
    alert_ids = sorted({str(e["id"]) for e in timeline_entries
                        if isinstance(e, dict) and e.get("kind") == "tier_change" and e.get("id")})
    acks: dict[str, Any] = {}
    if alert_ids:
        raws = await get_many(redis, [keys.ack(a, tenant) for a in alert_ids])
        acks = {a: _json(r) for a, r in zip(alert_ids, raws, strict=True) if r is not None}
    listed = await inbox_entries(redis, keys, customer_id, tenant)
    indexes: dict[str, Any] = {
        "tier": next((t for t, s in zip(TIERS, tier_scores, strict=True) if s is not None), None),
        "holdout_since": iso_ms(int(float(holdout))) if holdout is not None else None,
    }
    return {
        "customer_id": customer_id,
        "tenant_id": tenant,
        "exported_at": canonical(iso_ms(int(time.time() * 1000)) or "") or "",
        "found": bool(profile or state or events or timeline or deliveries or actions or episode
                      or drafts or listed or indexes["tier"] or holdout is not None),
        "profile": _json(profile),
        "state": _state(dict(state)),
        "events": events,
        "timeline": timeline_entries,
        "notifications": _list(deliveries),
        "staff_actions": sorted((_json(v) for v in actions.values()),
                                key=lambda a: str(a.get("at", "")) if isinstance(a, dict) else ""),
        "alert_episode": _json(episode),
        "console_drafts": _drafts(drafts),
        "staff_alert_lists": sorted(
            ({**{k: v for k, v in e.items() if k not in ("customer_id", "at_ms")},
              "at": iso_ms(e["at_ms"]) if isinstance(e.get("at_ms"), int) else None}
             for _, _, e in listed), key=lambda e: str(e["at"])),
        "acknowledgements": acks,
        "indexes": indexes,
    }


def _drafts(raws: list[str]) -> list[dict[str, Any]]:
    """The console's unsaved win-back forms about the customer (services/console/sessions.py:
    the action and the staff member's note, kept until ``until``), without whose session or
    sign-in link holds each (a digest of a secret, not about the customer); oldest first."""
    out = []
    for raw in raws:
        d = _json(raw)
        if isinstance(d, dict):
            until = d.get("until")
            out.append({"action": d.get("action"), "note": d.get("note"),
                        "kept_until": iso_ms(int(until * 1000))
                        if isinstance(until, int | float) else None})
    return sorted(out, key=lambda d: str(d["kept_until"]))


async def audit(redis: Redis, keys: Keys, customer_id: str, *, tenant: str, by: str,
                request_id: str, audit_max: int = AUDIT_MAX) -> None:
    """An access request is audited like an erasure: who, when, and the customer's digest."""
    await redis.xadd(keys.audit(tenant), {"action": "export_customer",
                                          "subject": subject_digest(tenant, customer_id),
                                          "by": by, "request_id": request_id,
                                          "at_ms": str(int(time.time() * 1000))},
                     maxlen=audit_max, approximate=True)
