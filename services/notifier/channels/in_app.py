"""In-app channel: the alert lands in the staff member's list in the staff console
(``Keys.inbox``), where a badge counts the unacknowledged ones (services/console/alerts.py).

Idempotent by delivery id (a redelivery overwrites its own entry); at most
:data:`INBOX_MAX` entries per person (the oldest go first), kept :data:`INBOX_TTL_S` after the
last one. ``Keys.inbox_staff`` lists who has a list: erasing a customer removes their entries. Only staff with a profile have a console identity: the planner sends in-app
messages to them alone.

The same list also records, per person, each risk alert (and escalation) delivered to them
another way — e-mail, SMS — once it is delivered (:meth:`ConsoleList.record_sent`, called by
the notifier's delivered hook): one entry per alert (field ``sent:<alert id>``), whose ``via``
lists the channels it reached them by. So the console's alerts page is the person's whole
list of alerts to acknowledge, whatever the routing sends them by.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.common.exceptions import DeliveryError
from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION, Retention
from services.notifier.channels.base import ChannelName, Message
from services.notifier.channels.registry import Built, ChannelSpec

if TYPE_CHECKING:
    from services.notifier.routing import Recipient

INBOX_MAX = DEFAULT_RETENTION.inbox_max  # CHURNWATCH_INBOX_MAX_ENTRIES
INBOX_TTL_S = DEFAULT_RETENTION.inbox_ttl_s  # CHURNWATCH_INBOX_DAYS

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


SENT_KINDS = ("alert", "escalation")  # what asks a person to act: listed to acknowledge


class ConsoleList:
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

    async def record_sent(self, message: Message) -> bool:
        """``message`` (a risk alert or escalation to a staff member with a console identity,
        by any channel but the console's own) was delivered: listed in their alerts, once per
        alert. False when it is not such a message."""
        staff_id = _staff_id(message.recipient_key)
        if message.kind not in SENT_KINDS or message.channel == "in_app" or staff_id is None:
            return False
        await self.add(staff_id, message.tenant, f"sent:{message.event_id}", {
            "alert_id": message.event_id, "customer_id": message.customer_id,
            "kind": message.kind, "subject": message.subject, **_tiers(message.event),
            "at_ms": message.created_ms or int(time.time() * 1000),
            "via": [message.channel]}, merge=True)
        return True


def _tiers(event: bytes) -> dict[str, str]:
    """The tier change a risk-change CloudEvent announces (``tier``, ``previous_tier``), for
    the console to word the alert in the reader's language; empty if it does not say."""
    try:
        doc = json.loads(event)
        data = doc.get("data") or doc  # a CloudEvent, or a bare risk change
        return {k: str(data[k]) for k in ("tier", "previous_tier") if data.get(k)}
    except (ValueError, AttributeError, TypeError):
        return {}


class InAppChannel:
    name: ChannelName = "in_app"

    def __init__(self, redis: Redis, keys: Keys, *, retention: Retention = DEFAULT_RETENTION):
        self.list = ConsoleList(redis, keys, retention=retention)

    async def send(self, message: Message) -> None:
        entry = {"alert_id": message.event_id, "customer_id": message.customer_id,
                 "kind": message.kind, "subject": message.subject, "text": message.text,
                 **_tiers(message.event), "at_ms": message.created_ms or int(time.time() * 1000)}
        try:
            await self.list.add(message.to, message.tenant, message.delivery_id, entry)
        except RedisError as exc:
            raise DeliveryError(f"the console's alert list could not be written "
                                f"({type(exc).__name__})") from None

    async def aclose(self) -> None:
        return None


def _staff_id(recipient_key: str) -> str | None:
    """The staff id of a recipient key ``staff:<tenant>:<staff id>``, else None."""
    return recipient_key.split(":", 2)[2] if recipient_key.startswith("staff:") else None


def _target(person: Recipient) -> str | None:
    """A staff member with a profile has a console identity (their staff id); nobody else."""
    return _staff_id(person.key) if person.role != "customer" else None


def _build(b: Built) -> InAppChannel | None:
    # only when the routing file (or its escalation policy) sends in-app alerts
    if "in_app" not in b.used:
        return None
    return InAppChannel(b.redis, b.keys, retention=b.settings.retention)


SPEC = ChannelSpec(name="in_app", order=30, audience="staff", push=False, long_form=True,
                   target=_target, mask=lambda staff_id: f"console:{staff_id}",  # no contact data
                   build=_build)
