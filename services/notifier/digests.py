"""Digests: many alerts for one recipient grouped into one message per interval.

Keys (under ``Keys.digest_base``, one hash tag: the take script renames buffers to batches):

- ``dg:b:<buffer>`` - hash of the buffered items (event id -> item JSON) plus ``_recipient``
  and ``_tenant``; ``<buffer>`` is ``<channel>|<recipient key>``, with ``|<seconds>s`` or
  ``|at HH:MM:SS|<time zone>`` for a route's digest of its own (``digest: 1d``,
  ``digest: {at: "08:00"}``: one per time zone of the recipient's customers' stores), or
  ``|readdressed`` for the items of a digest whose reader is no longer the one to tell (they
  left the team, or the customer has another owner), due at once for whoever receives each
  customer's alerts now, when that person has no digest of their own in the same flush to
  join (``Digester.flush`` judges every due batch before sending any); an item holds the risk
  change it was written from (``event``), so that it can be written again for someone else;
- ``dg:due`` - zset buffer -> flush time (ms), set when the first item arrives;
- ``dg:seen:<channel>|<recipient>|<event id>`` - marks an item as buffered once (a replayed
  record is not buffered twice, even after its digest went out);
- ``dg:for:<channel>|<recipient key>|<event id>`` - the item is in one of that person's
  digests, whichever its schedule: an item re-addressed to them is not buffered again;
- ``dg:batch:<buffer>:<n>`` + set ``dg:batches`` - a buffer taken for sending. A batch is
  deleted only once its message is delivered or durably queued, and its delivery id derives
  from the batch name, so a notifier killed in between resends nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.notifier.channels import registry
from services.notifier.channels.base import Message, delivery_id
from services.notifier.policy import next_at, zone
from services.notifier.routing import Recipient
from services.notifier.settle import Erased
from services.notifier.templates import DIGEST_LISTED, Templates, at_risk_url

logger = logging.getLogger(__name__)

SEEN_TTL_S = 7 * 86_400
FLUSH_BATCH = 50

_ADD = """
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[5])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], '_recipient', ARGV[3], '_tenant', ARGV[6])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[7])
  return 1
end
return 0
"""

# KEYS: a batch of the flush under way, the item's mark; ARGV: field, item, mark TTL. An item
# re-addressed during a flush joins the new reader's own digest of that flush (-1: that batch
# went out meanwhile; 0: the item was listed to them already).
_ADD_TO_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: due zset, batches set; ARGV: now ms, limit, key prefix of buffers/batches. Due buffers
# are renamed to numbered batches (the go-live summaries take theirs the same way).
TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, name in ipairs(due) do
  redis.call('ZREM', KEYS[1], name)
  local buffer = ARGV[3] .. 'b:' .. name
  if redis.call('EXISTS', buffer) == 1 then
    local n = redis.call('INCR', ARGV[3] .. 'seq')
    local batch = ARGV[3] .. 'batch:' .. name .. ':' .. n
    redis.call('RENAME', buffer, batch)
    redis.call('SADD', KEYS[2], batch)
    table.insert(out, batch)
  end
end
return out
"""

Deliver = Callable[[Message], Awaitable[None]]
# (customer id, tenant, tier of the item) -> is the customer still at that tier in the episode
# the item was buffered in? A digest goes out up to an interval (a day, say) after its first
# item: a customer who came back, fell back, or rose to a tier with an alert of its own since
# is not listed as still to act on.
Standing = Callable[[list[tuple[str, str, str]]], Awaitable[list[bool]]]
# (reader, channel, tenant, [(field, item)]) -> the fields of items no longer the reader's (they
# left the team, or the customer has another owner now): written again for whoever receives the
# customer's alerts now, left out of this digest
Taken = Callable[[Recipient, str, str, list[tuple[str, dict[str, Any]]]], Awaitable[set[str]]]


class Digester:
    def __init__(self, redis: Redis, keys: Keys, *, templates: Templates, interval_s: float,
                 link_base: str = ""):
        self.redis = redis
        self.link_base = link_base.rstrip("/")  # the console, for the items a digest leaves out
        self.keys = keys
        self.templates = templates
        self.interval_s = interval_s
        self.base = keys.digest_base
        self._add = redis.register_script(_ADD)
        self._add_to_batch = redis.register_script(_ADD_TO_BATCH)
        self._take = redis.register_script(TAKE_DUE)
        # while a flush is under way: "<channel>|<recipient key>" -> one of its batches not
        # sent yet, and the batches that gained a re-addressed item
        self._open: dict[str, str] = {}
        self._grown: set[str] = set()

    async def add(self, *, channel: str, recipient: Recipient, tenant: str, event_id: str,
                  item: dict[str, Any], now_ms: int, interval_s: float | None = None,
                  at: dtime | None = None, timezone: str = "", readdressed: bool = False
                  ) -> bool:
        """Buffer ``item``; False when it was buffered before (a replay). A route's own
        schedule goes in a buffer of its own: ``interval_s`` (``digest: 1d``) after the first
        item, or the next ``at`` of the clock in ``timezone`` (``digest: {at: "08:00"}``);
        neither: the file's ``digest.interval``. A morning digest is kept per time zone: a
        regional manager over stores in Berlin and New York gets each store's list at 08:00
        there, not the New York customers at 02:00 New York time. ``readdressed``: an item of
        a digest that was due for someone else (who left the team, or no longer owns the
        customer), now for whoever receives the customer's alerts; it joins that person's own
        digest when one goes out in the same flush, else a buffer of its own, due now (the
        list was due already)."""
        name = f"{channel}|{recipient.key}"
        if readdressed:
            name += "|readdressed"
            due_ms = now_ms
        elif at is not None:
            name += f"|at {at.strftime('%H:%M:%S')}"
            due_ms = int(next_at(datetime.fromtimestamp(now_ms / 1000, UTC), zone(timezone),
                                 at).timestamp() * 1000)
        else:
            if interval_s is not None:
                name += f"|{int(interval_s)}s"
            due_ms = now_ms + int((self.interval_s if interval_s is None else interval_s) * 1000)
        # the item's mark leaves the zone out: one buffered before the zone was in the buffer's
        # name (replayed across the upgrade) is not buffered a second time
        seen = self.base + f"seen:{name}|{event_id}"
        # in any of this person's digests: a re-addressed item they had already is not
        # listed to them a second time (a route to the owner and the store's manager alike)
        listed = self.base + f"for:{channel}|{recipient.key}|{event_id}"
        if readdressed:
            seen = listed
            batch = self._open.get(f"{channel}|{recipient.key}")
            if batch is not None:
                joined = int(await self._add_to_batch(
                    keys=[batch, listed],
                    args=[event_id, json.dumps(item, ensure_ascii=False), SEEN_TTL_S]))
                if joined >= 0:
                    if joined:
                        self._grown.add(batch)
                    return bool(joined)
        if at is not None and not readdressed:
            name += f"|{timezone or 'UTC'}"
        added = await self._add(
            keys=[self.base + "b:" + name, self.base + "due", seen, listed],
            args=[event_id, json.dumps(item, ensure_ascii=False), json.dumps(asdict(recipient)),
                  due_ms, SEEN_TTL_S, tenant, name])
        return bool(added)

    async def flush(self, *, now_ms: int, deliver: Deliver, erased: Erased | None = None,
                    standing: Standing | None = None, taken: Taken | None = None) -> int:
        """Send every digest that is due (and any batch left by a crash); returns how many.
        An item about a customer erased after it was buffered (``erased``), or no longer at
        the item's tier (``standing``), is left out, as is all but the newest item of a
        customer, and one that is no longer the reader's (``taken``: they left the team, or
        the customer has another owner now; it goes to whoever receives the customer's alerts
        now); a digest left with no item is not sent."""
        await self._take(keys=[self.base + "due", self.base + "batches"],
                         args=[now_ms, FLUSH_BATCH, self.base])
        members = await self.redis.smembers(self.base + "batches")  # type: ignore[misc]
        batches = sorted(str(b) for b in members)[:FLUSH_BATCH]
        # Every batch is judged first, then sent: an item one reader no longer has (``taken``)
        # joins the new reader's own digest of this flush, whatever the batches' order.
        self._open = {}
        for batch in batches:
            self._open.setdefault(self._person(batch), batch)
        self._grown = set()
        try:
            judged: dict[str, tuple[dict[str, str], set[str]]] = {}  # batch -> (fields, read)
            for batch in batches:
                raw: dict[str, str] = await self.redis.hgetall(batch)  # type: ignore[misc, assignment]
                read = set(raw)
                if raw and erased is not None:
                    raw = await self._without_erased(batch, raw, erased)
                if raw and standing is not None:
                    raw = await self._still_standing(batch, raw, standing)
                if raw and taken is not None:
                    raw = await self._still_theirs(batch, raw, taken)
                judged[batch] = raw, read
            for batch in batches:
                raw, read = judged[batch]
                if self._open.get(person := self._person(batch)) == batch:
                    del self._open[person]  # nothing joins it once read for sending
                if batch in self._grown:  # re-addressed items joined it after it was judged
                    now: dict[str, str] = await self.redis.hgetall(batch)  # type: ignore[misc, assignment]
                    listed = {_customer(v) for f, v in raw.items() if not f.startswith("_")}
                    raw = {**{f: v for f, v in now.items() if f.startswith("_")}, **raw,
                           **{f: v for f, v in now.items() if f not in read
                              and _customer(v) not in listed}}  # (one item a customer)
                if raw:
                    message = self._message(batch, raw)
                    if message is not None:
                        await deliver(message)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(batch)
                    pipe.srem(self.base + "batches", batch)
                    await pipe.execute()
        finally:
            self._open, self._grown = {}, set()
        return len(batches)

    def _person(self, batch: str) -> str:
        """``<channel>|<recipient key>`` of a batch (``…batch:<buffer>:<n>``)."""
        return "|".join(batch[len(self.base + "batch:"):].rsplit(":", 1)[0].split("|")[:2])

    @staticmethod
    async def _without_erased(batch: str, raw: dict[str, str], erased: Erased
                              ) -> dict[str, str]:
        """The batch's fields less the items of customers erased since they were buffered
        (none left: ``{}``, nothing to send); one erasure lookup for the whole batch."""
        tenant = raw.get("_tenant", "default")
        asked: list[tuple[str, tuple[str, str, int]]] = []  # field -> (customer, tenant, ms)
        for field, value in raw.items():
            if not field.startswith("_"):
                try:
                    item = json.loads(value)
                    asked.append((field, (str(item["customer_id"]), tenant,
                                          int(item.get("created_ms", 0)))))
                except (ValueError, KeyError, TypeError):
                    pass  # unreadable: _message reports it
        gone = {field for (field, _), flag in zip(
            asked, await erased([who for _, who in asked]), strict=True) if flag}
        for field in sorted(gone):
            logger.info("digest %s: an item's customer was erased since; left out", batch,
                        extra={"event_id": field})
        out = {f: v for f, v in raw.items() if f not in gone}
        return out if any(not f.startswith("_") for f in out) else {}

    @staticmethod
    async def _still_standing(batch: str, raw: dict[str, str], standing: Standing
                              ) -> dict[str, str]:
        """The batch's fields less the items whose customer is no longer at the item's tier
        (``standing``), and less every item of a customer but the newest; ``{}`` when none
        is left. One lookup for the whole batch."""
        tenant = raw.get("_tenant", "default")
        newest: dict[str, tuple[int, str, str]] = {}  # customer -> (at ms, field, tier)
        keep: set[str] = set()
        for field, value in raw.items():
            if field.startswith("_"):
                continue
            try:
                item = json.loads(value)
                key = (int(item.get("at_ms", 0)), field, str(item["tier_id"]))
                customer = str(item["customer_id"])
            except (ValueError, KeyError, TypeError):
                keep.add(field)  # unreadable (_message reports it), or buffered without its tier
                continue
            if customer not in newest or key > newest[customer]:
                newest[customer] = key
        asked = sorted(newest.items())
        flags = await standing([(customer, tenant, tier) for customer, (_, _, tier) in asked])
        keep |= {field for (_, (_, field, _)), flag in zip(asked, flags, strict=True) if flag}
        out = {f: v for f, v in raw.items() if f.startswith("_") or f in keep}
        if len(out) < len(raw):
            logger.info("digest %s: %d item(s) left out (the customer moved since, or is listed "
                        "by a newer item)", batch, len(raw) - len(out))
        return out if any(not f.startswith("_") for f in out) else {}

    def _channel(self, batch: str) -> str:
        return batch[len(self.base + "batch:"):].split("|", 1)[0]

    async def _still_theirs(self, batch: str, raw: dict[str, str], taken: Taken
                            ) -> dict[str, str]:
        """The batch's fields less the items ``taken`` gave to someone else (the reader left, or
        no longer owns the customer); ``{}`` when none is left."""
        items: list[tuple[str, dict[str, Any]]] = []
        for field, value in raw.items():
            if not field.startswith("_"):
                try:
                    item = json.loads(value)
                except ValueError:
                    continue  # _message reports it
                if isinstance(item, dict):
                    items.append((field, item))
        try:
            reader = Recipient(**json.loads(raw["_recipient"]))
        except (KeyError, ValueError, TypeError):
            return raw  # _message reports it
        gone = await taken(reader, self._channel(batch), raw.get("_tenant", "default"), items)
        if gone:
            logger.info("digest %s: %d item(s) went to whoever receives the customers' alerts "
                        "now", batch, len(gone))
        out = {f: v for f, v in raw.items() if f not in gone}
        return out if any(not f.startswith("_") for f in out) else {}

    def _message(self, batch: str, raw: dict[str, str]) -> Message | None:
        recipient = Recipient(**json.loads(raw.pop("_recipient")))
        tenant = raw.pop("_tenant", "default")
        # most valuable first (as the at-risk lists; items buffered before they carried a
        # priority: in the order they came)
        items = sorted((json.loads(v) for v in raw.values()),
                       key=lambda i: (-float(i.get("priority", 0.0)), i.get("at_ms", 0)))
        channel = self._channel(batch)
        target = registry.target(channel, recipient)
        if not items or not target or channel not in registry.names(push=True):
            logger.error("digest batch %s cannot be sent (no items or no %s address); dropped",
                         batch, channel)
            return None
        did = delivery_id("digest:" + batch, channel, target)
        more = ""  # staff find those left out in the console's list of the first one's tier
        if len(items) > DIGEST_LISTED and self.link_base and recipient.role != "customer":
            more = at_risk_url(self.link_base, str(items[DIGEST_LISTED].get("tier_id", "medium")))
        subject, text, html = self.templates.digest(items, recipient, tenant=tenant,
                                                    channel=channel, delivery_id=did,
                                                    more_url=more)
        created = min(int(i.get("created_ms", 0)) for i in items)
        return Message(delivery_id=did, channel=channel,  # type: ignore[arg-type]
                       event_id=items[0].get("event_id", ""), customer_id="", to=target,
                       event=digest_event(items),
                       recipient_name=recipient.name, subject=subject, text=text, html=html,
                       tenant=tenant, created_ms=created, recipient_key=recipient.key,
                       timezone=items[0].get("timezone", ""), kind="digest")


def _customer(item: str) -> str | None:
    """The customer id of a buffered item's JSON (None when unreadable)."""
    try:
        return str(json.loads(item)["customer_id"])
    except (ValueError, KeyError, TypeError):
        return None


def digest_event(items: list[dict[str, Any]]) -> bytes:
    """A digest message's ``event``: its items' ids, and the risk changes they were written
    from (with when each was published), so that the digest can be written again for someone
    else when its recipient left the team before it reached them (:func:`digest_changes`).
    Items buffered before they carried their change have only their id."""
    return json.dumps({"digest": [i.get("event_id") for i in items],
                       # whose delivery log tells what became of it (Deliverer._log)
                       "customers": [[str(i.get("customer_id", "")), str(i.get("event_id", ""))]
                                     for i in items if i.get("customer_id")],
                       "changes": [{"event": i["event"], "created_ms": int(i.get("created_ms", 0))}
                                   for i in items if isinstance(i.get("event"), str)]},
                      ensure_ascii=False).encode()


def digest_customers(event: bytes) -> list[tuple[str, str]]:
    """The (customer id, event id) of each item a digest message lists."""
    try:
        return [(str(c), str(e)) for c, e in json.loads(event).get("customers", [])]
    except (ValueError, TypeError, AttributeError):
        return []


def digest_changes(event: bytes) -> list[tuple[bytes, int]]:
    """The (raw risk change, ms published) pairs a digest message was written from (none
    from a digest of items buffered before they carried them)."""
    try:
        doc = json.loads(event)
        return [(str(c["event"]).encode(), int(c.get("created_ms", 0)))
                for c in doc.get("changes", [])]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []
