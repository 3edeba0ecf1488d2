"""Each staff member's alert list in the console (``Keys.inbox``): what the notifier's in-app
channel writes (``services/notifier/channels/in_app.py``), what the console's alerts page reads,
and what follows a customer to their new owner when a person's customers are handed over
(:meth:`Inbox.move`).

Idempotent by field (a delivery id, or ``sent:<alert id>``); at most ``inbox_max`` entries per
person (the oldest go first), kept ``inbox_ttl_s`` after the last one. ``Keys.inbox_staff``
lists who has a list: erasing a customer removes their entries."""

from __future__ import annotations

import json
from typing import NamedTuple

from redis.asyncio import Redis

from services.common.redisconn import Keys, get_many
from services.common.settings import DEFAULT_RETENTION, Retention

INBOX_MAX = DEFAULT_RETENTION.inbox_max  # CHURNWATCH_INBOX_MAX_ENTRIES
INBOX_TTL_S = DEFAULT_RETENTION.inbox_ttl_s  # CHURNWATCH_INBOX_DAYS


MANAGERS_OWN = frozenset({"escalation"})  # entries a manager keeps when a customer gets an owner


class Moved(NamedTuple):
    """An alert :meth:`Inbox.move` gave to another person's list."""

    alert_id: str
    customer_id: str
    owner: str


# KEYS[1]: inbox hash. ARGV: field, entry JSON, max entries, ttl seconds, "merge" or "".
# Adds the entry (merge: an entry already there keeps its time and text and gains the new
# entry's ``via`` channels), drops the oldest beyond the cap (by at_ms), refreshes the TTL.
_ADD = """
local entry = ARGV[2]
if ARGV[5] == 'merge' then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  local ok, prev = false, nil
  if old then ok, prev = pcall(cjson.decode, old) end
  if ok and type(prev) == 'table' and type(prev['via']) == 'table' then
    local doc = cjson.decode(ARGV[2])
    local seen = {}
    for _, c in ipairs(prev['via']) do seen[c] = true end
    local added = false
    for _, c in ipairs(doc['via'] or {}) do
      if not seen[c] then table.insert(prev['via'], c); seen[c] = true; added = true end
    end
    if not added then return redis.call('HLEN', KEYS[1]) end
    entry = cjson.encode(prev)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], entry)
local n = redis.call('HLEN', KEYS[1])
local cap = tonumber(ARGV[3])
if n > cap then
  local all = redis.call('HGETALL', KEYS[1])
  local rows = {}
  for i = 1, #all, 2 do
    local ok, doc = pcall(cjson.decode, all[i + 1])
    rows[#rows + 1] = {all[i], ok and tonumber(doc['at_ms']) or 0}
  end
  table.sort(rows, function(a, b) return a[2] < b[2] end)
  for i = 1, n - cap do redis.call('HDEL', KEYS[1], rows[i][1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return n
"""


class Inbox:
    """Each staff member's alert list in the console (``Keys.inbox``)."""

    def __init__(self, redis: Redis, keys: Keys, *, retention: Retention = DEFAULT_RETENTION):
        self.redis = redis
        self.keys = keys
        self.max_entries, self.ttl_s = retention.inbox_max, retention.inbox_ttl_s
        self._add = redis.register_script(_ADD)

    async def add(self, staff_id: str, tenant: str, field: str, entry: dict[str, object], *,
                  merge: bool = False) -> None:
        await self._add(keys=[self.keys.inbox(staff_id, tenant)],
                        args=[field, json.dumps(entry, ensure_ascii=False), self.max_entries,
                              self.ttl_s, "merge" if merge else ""])
        # who has a list, for erasure (services/state/store.py, erase_customer)
        staff = self.keys.inbox_staff(tenant)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(staff, staff_id)
        pipe.expire(staff, self.ttl_s)
        await pipe.execute()

    async def move(self, from_id: str, tenant: str, to: dict[str, str], *,
                   keep_kinds: frozenset[str] = frozenset()) -> list[Moved]:
        """The unacknowledged alerts in ``from_id``'s list about the customers of ``to``
        (customer id -> their new owner) go to that owner's list, as they were (time, words,
        channels); acknowledged ones stay, the person's own record, and so do entries of
        ``keep_kinds``. Returns what moved."""
        raw = await self.redis.hgetall(self.keys.inbox(from_id, tenant))  # type: ignore[misc]
        found: list[tuple[str, str, Moved]] = []  # field, blob, what moves
        for field, blob in raw.items():
            try:
                entry = json.loads(blob)
                customer, alert_id = str(entry["customer_id"]), str(entry["alert_id"])
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("kind") in keep_kinds:
                continue
            if customer in to and to[customer] != from_id:
                found.append((str(field), str(blob), Moved(alert_id, customer, to[customer])))
        acked = await get_many(self.redis, [self.keys.ack(m.alert_id, tenant)
                                            for _, _, m in found])
        moved: list[Moved] = []
        fields: list[str] = []
        for (field, blob, m), ack in zip(found, acked, strict=True):
            if ack is None:
                await self.add(m.owner, tenant, field, json.loads(blob), merge=True)  # theirs kept
                moved.append(m)
                fields.append(field)
        if fields:  # (after every copy: an interrupted move is done again, nothing lost)
            await self.redis.hdel(self.keys.inbox(from_id, tenant), *fields)  # type: ignore[misc]
        return moved
