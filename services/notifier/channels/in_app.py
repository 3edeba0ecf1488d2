"""In-app channel: the alert lands in the staff member's list in the staff console
(``Keys.inbox``), where a badge counts the unacknowledged ones (services/console/alerts.py).

Idempotent by delivery id (a redelivery overwrites its own entry); at most
:data:`INBOX_MAX` entries per person (the oldest go first), kept :data:`INBOX_TTL_S` after the
last one. ``Keys.inbox_staff`` lists who has a list: erasing a customer removes their entries. Only staff with a profile have a console identity: the planner sends in-app
messages to them alone.
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

# KEYS[1]: inbox hash. ARGV: delivery id, entry JSON, max entries, ttl seconds.
# Adds the entry, drops the oldest beyond the cap (by at_ms), refreshes the TTL.
_ADD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
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


class InAppChannel:
    name: ChannelName = "in_app"

    def __init__(self, redis: Redis, keys: Keys, *, retention: Retention = DEFAULT_RETENTION):
        self.redis = redis
        self.keys = keys
        self.max_entries, self.ttl_s = retention.inbox_max, retention.inbox_ttl_s
        self._add = redis.register_script(_ADD)

    async def send(self, message: Message) -> None:
        entry = {"alert_id": message.event_id, "customer_id": message.customer_id,
                 "kind": message.kind, "subject": message.subject, "text": message.text,
                 "at_ms": message.created_ms or int(time.time() * 1000)}
        try:
            await self._add(keys=[self.keys.inbox(message.to, message.tenant)],
                            args=[message.delivery_id, json.dumps(entry, ensure_ascii=False),
                                  self.max_entries, self.ttl_s])
            # who has a list, for erasure (services/state/store.py, erase_customer)
            staff = self.keys.inbox_staff(message.tenant)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(staff, message.to)
            pipe.expire(staff, self.ttl_s)
            await pipe.execute()
        except RedisError as exc:
            raise DeliveryError(f"the console's alert list could not be written "
                                f"({type(exc).__name__})") from None

    async def aclose(self) -> None:
        return None


def _target(person: Recipient) -> str | None:
    """A staff member with a profile has a console identity (their staff id); nobody else."""
    if person.key.startswith("staff:") and person.role != "customer":
        return person.key.split(":", 2)[2]
    return None


def _build(b: Built) -> InAppChannel | None:
    # only when the routing file (or its escalation policy) sends in-app alerts
    if "in_app" not in b.used:
        return None
    return InAppChannel(b.redis, b.keys, retention=b.settings.retention)


SPEC = ChannelSpec(name="in_app", order=30, audience="staff", push=False, long_form=True,
                   target=_target, mask=lambda staff_id: f"console:{staff_id}",  # no contact data
                   build=_build)
