"""The at-risk list: one tier's index, by priority, in pages with a stable cursor."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from services.common.actions import reasons_why
from services.common.profiles import CustomerProfile
from services.common.redisconn import Keys, parse_customer_token
from services.common.riskchange import holds_tier
from services.common.timefmt import local_iso
from services.records import cursor as cursors
from services.records.holdout import holdout
from services.scoring.lifecycle import stage_name
from services.state.store import StateRead, priority_from_index

# KEYS[1]: tier zset. ARGV: count, has cursor (0/1), cursor score, cursor member.
# From the cursor's own rank when it is still where it was (O(log N + count)); otherwise
# everything after (score, member) in (score desc, member desc) order.
PAGE_LUA = """
local n = tonumber(ARGV[1])
if ARGV[2] == '0' then return redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES') end
local s, m = tonumber(ARGV[3]), ARGV[4]
local cur = redis.call('ZSCORE', KEYS[1], m)
if cur and tonumber(cur) == s then
  local r = redis.call('ZREVRANK', KEYS[1], m)
  return redis.call('ZREVRANGE', KEYS[1], r + 1, r + n, 'WITHSCORES')
end
local out, off = {}, 0
while #out < 2 * n and off < 20 * n + 1000 do
  local got = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', off, n)
  if #got == 0 then break end
  for i = 1, #got, 2 do
    local sc = tonumber(got[i + 1])
    if (sc < s or got[i] < m) and #out < 2 * n then
      out[#out + 1] = got[i]; out[#out + 1] = got[i + 1]
    end
  end
  off = off + n
end
return out
"""
ST_FIELDS = ("tier", "score", "store", "last_ts", "risk", "tz")


class AtRiskQuery:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._page = redis.register_script(PAGE_LUA)

    async def page(self, *, tenant: str, tier: str, store: str | None, owner: str | None,
                   limit: int, cursor: str | None, holdout_share: float,
                   value_tier: str | None = None, lifecycle: str | None = None
                   ) -> dict[str, Any]:
        """One page of the tier's customers by priority, those who can still be won back
        before the churned (:func:`~services.state.store.index_score`). ``owner``,
        ``value_tier`` and ``lifecycle`` filter the entries read (a bounded number per page:
        a filtered page may be short while ``next_cursor`` is not null)."""
        index = self.keys.tier_index(tier, tenant, store)
        filtered = owner is not None or value_tier is not None or lifecycle is not None
        want = limit if not filtered else min(max(limit * 10, 200), 2000)
        after = cursors.decode(cursor) if cursor else None
        args: list[Any] = [want + 1, 0, "", ""] if after is None else [want + 1, 1, *after]
        flat = await self._page(keys=[index], args=args)
        entries = [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]
        more = len(entries) > want
        entries = entries[:want]
        refs = [parse_customer_token(m) for m, _ in entries]
        reader = StateRead(self.keys, ST_FIELDS)
        pipe = self.redis.pipeline(transaction=False)
        for t, cid in refs:
            reader.queue(pipe, cid, t)
            pipe.get(self.keys.profile(cid, t))
        raw = await pipe.execute() if refs else []
        n = reader.size + 1
        items: list[dict[str, Any]] = []
        last: tuple[str, str] | None = None
        seen = 0
        for i, ((member, prio), (t, cid)) in enumerate(zip(entries, refs, strict=True)):
            last = (prio, member)
            seen += 1
            fields = reader.result(raw[n * i:n * i + reader.size])
            state, prof = [fields.get(f) for f in ST_FIELDS], raw[n * i + n - 1]
            if state[0] is None or t != tenant:
                continue  # erased or expired since it was indexed
            profile = CustomerProfile.model_validate_json(prof) if prof else None
            if owner is not None and (profile is None or profile.owner_staff_id != owner):
                continue
            item = _item(cid, tenant, state, prio, profile, holdout_share)
            if ((value_tier is not None and item["value_tier"] != value_tier)
                    or (lifecycle is not None and item["lifecycle_stage"] != lifecycle)):
                continue
            items.append(item)
            if len(items) == limit:
                more = more or i + 1 < len(entries)
                break
        next_cursor = cursors.encode(*last) if more and last is not None else None
        return {"tier": tier, "items": items, "next_cursor": next_cursor,
                "scanned": seen}


async def tenant_stores(redis: Redis, keys: Keys, tenant: str) -> list[str]:
    """The tenant's stores, sorted: those its customers' events named (the scorer's store
    set, which files the at-risk list by store) and those configured (``PUT /v1/stores``)."""
    pipe = redis.pipeline(transaction=False)
    pipe.smembers(keys.store_set(tenant))
    pipe.hkeys(keys.stores(tenant))
    named, configured = await pipe.execute()
    return sorted({str(s) for s in named} | {str(s) for s in configured})


async def stores_with_customers(redis: Redis, keys: Keys, tenant: str) -> set[str]:
    """The stores the tenant's customers have belonged to, by their events, profiles or as
    the only store (the scorer's store set): not the stores merely configured."""
    return {str(s) for s in await redis.smembers(keys.store_set(tenant))}  # type: ignore[misc]


def _item(cid: str, tenant: str, state: list[str | None], prio: str,
          profile: CustomerProfile | None, share: float) -> dict[str, Any]:
    tier, score, store, last_ts, risk_raw, tz = state
    risk = json.loads(risk_raw) if risk_raw else {}
    reasons = risk.get("reasons") or []
    action = risk.get("suggested_action") or {}
    # what holds, not that a rule, hysteresis or dwell holds the tier (reasons[0] then); and
    # the reason the action answers (the card read "49 days since the only visit" beside
    # "Resolve the open complaint first"): the SMS's reason too
    told = reasons_why(reasons, str(action.get("code") or ""), 1)
    return {
        "customer_id": cid, "tier": tier, "score": float(score or 0.0),
        "priority": priority_from_index(float(prio)), "value_tier": risk.get("value_tier"),
        "lifecycle_stage": stage_name(risk.get("lifecycle_stage")),
        "top_reason": told[0] if told else (reasons[0] if reasons else None),
        # why the tier is above what the score alone gives (a rule, hysteresis, dwell): the
        # list shows it beside "high · 0.30", which otherwise reads as a contradiction
        "tier_reason": reasons[0] if reasons and holds_tier(reasons[0]) else None,
        "suggested_action": risk.get("suggested_action"), "store_id": store,
        "owner_staff_id": profile.owner_staff_id if profile else None,
        "name": profile.name if profile else None,
        "last_event_at": local_iso(last_ts, tz), "holdout": holdout(tier, tenant, cid, share),
    }
