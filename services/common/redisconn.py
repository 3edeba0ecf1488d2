"""The one place that knows how to talk to Redis, and how churnwatch names its keys.

A customer is known by (tenant, customer_id). Every key of one customer shares the hash tag
``{<tenant>/<customer>}`` (see :func:`customer_token`) so that a Redis Cluster keeps them in
one slot and a Lua script may touch them together.

Other keys that one script or MULTI moves together share a group tag ``{<prefix>:<group>}``
(:meth:`Keys.tagged`): the notifier's delivery ledger (``dlv``: delivery states, retry queue
and payloads), settle queue (``settle``), escalations (``esc``), digests (``dg``), go-live
summaries (``sum``) and rate-limit counters (``rl``). Everything else is read or written one
key at a time, or in non-transactional pipelines (which a cluster client splits per node).
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any, cast

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.maint_notifications import MaintNotificationsConfig

try:  # the sentinel redis-py's hiredis parser gives hiredis for "no whole reply yet"
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # another redis-py layout: every read goes redis-py's own way
    _NOT_ENOUGH_DATA = None

from services.common.settings import Settings


def make_redis(settings: Settings, **overrides: object) -> Redis:
    """The client of ``CHURNWATCH_REDIS_URL``: a :class:`redis.asyncio.RedisCluster` when
    ``CHURNWATCH_REDIS_CLUSTER`` is set (the URL names any node; the client finds the others
    and sends each command to the node of its slot), else a plain :class:`Redis`.

    Typed as ``Redis`` either way: churnwatch uses only commands both serve the same way. On a
    cluster every Lua script, MULTI/EXEC (``pipeline(transaction=True)``) and multi-key command
    must touch one hash slot (the key names below see to it); a non-transactional pipeline may
    span slots (the cluster client splits it per node), and :func:`get_many` reads keys of
    many slots."""
    options: dict[str, object] = {
        "decode_responses": True,
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
        "max_connections": 64,  # per node on a cluster
    }
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_ca_certs is not None:
        options["ssl_ca_certs"] = str(settings.redis_ssl_ca_certs)  # TLS: verify with this CA
    options.update(overrides)
    if settings.redis_cluster:
        cluster = RedisCluster.from_url(settings.redis_url, **options)
        _pack_fast(cluster)
        return cast(Redis, cluster)
    # Blocking: a burst of more concurrent commands than connections (an API under 100 parallel
    # requests) waits up to `timeout` for a free one instead of failing with "Too many
    # connections" (which the API reported as 503 Redis unavailable).
    #
    # No maintenance notifications (a Redis Enterprise / RESP3 feature churnwatch does not use):
    # redis-py's default ("auto") also turns off the pool's check that a pooled connection was
    # not closed by the server, so after Redis restarted every pooled connection failed its
    # next command once (the API answered 503 for up to max_connections requests).
    options.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    pool = BlockingConnectionPool.from_url(settings.redis_url, timeout=10, **options)
    client = Redis(connection_pool=pool)
    _pack_fast(client)
    return client


class _HiredisPacking:
    """Commands packed by hiredis's C packer. redis-py's asyncio connections pack every
    command in Python (~50 µs for a scorer's write script with its ~40 arguments: a sixth of
    the scorer's time per event); its sync connections already use hiredis. Same bytes on the
    wire: hiredis formats str (UTF-8), bytes, int and float as redis-py's encoder does; any
    other argument goes to redis-py's packer, which raises its usual error."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0] if args else None
        if isinstance(first, str) and " " in first:  # "CONFIG GET": separate arguments
            args = (*first.split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # None, bool, a memoryview of another kind...
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


class _BufferedReplies:
    """A reply already whole in hiredis's buffer is returned at once. redis-py's asyncio
    connections read every reply of a pipeline through a timeout context and three coroutine
    layers (~8 µs per reply; the scorer reads three per customer in a batch); the replies of a
    pipeline mostly arrive together, so all but the first are already buffered. A reply not
    yet whole, a read with a timeout of its own, raw or push reads go redis-py's way, with
    ``socket_timeout``; errors are raised as redis-py raises them."""

    async def read_response(self, disable_decoding: bool = False,
                            timeout: float | None = None,  # noqa: ASYNC109  redis-py's signature
                            *, disconnect_on_error: bool = True,
                            push_request: bool | None = False) -> Any:
        parser = getattr(self, "_parser", None)
        reader = getattr(parser, "_reader", None)
        if (reader is not None and _NOT_ENOUGH_DATA is not None and timeout is None
                and not disable_decoding and not push_request
                and getattr(parser, "_connected", False)):
            response = reader.gets()
            if response is not _NOT_ENOUGH_DATA:
                return await self._buffered(parser, response, disconnect_on_error)
        return await super().read_response(  # type: ignore[misc]
            disable_decoding, timeout, disconnect_on_error=disconnect_on_error,
            push_request=push_request)

    async def _buffered(self, parser: Any, response: Any, disconnect_on_error: bool) -> Any:
        """What redis-py's parser and connection do with a reply they read."""
        push = getattr(parser, "_hiredis_PushNotificationType", None)
        if push is not None and isinstance(response, push):
            await parser.handle_push_response(response)  # RESP3 push: then the real reply
            return await super().read_response(  # type: ignore[misc]
                disconnect_on_error=disconnect_on_error)
        broken = response if isinstance(response, RedisConnectionError) else (
            response[0] if isinstance(response, list) and response
            and isinstance(response[0], RedisConnectionError) else None)
        if broken is not None:
            if disconnect_on_error:
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise broken
        interval = getattr(self, "health_check_interval", 0)
        if interval:
            self.next_health_check = asyncio.get_running_loop().time() + interval
        if isinstance(response, ResponseError):
            raise response from None
        return response


class _FastConnection(_HiredisPacking, _BufferedReplies, Connection):
    pass


class _FastSSLConnection(_HiredisPacking, _BufferedReplies, SSLConnection):
    pass


class _FastUnixConnection(_HiredisPacking, _BufferedReplies, UnixDomainSocketConnection):
    pass


_FAST = {Connection: _FastConnection, SSLConnection: _FastSSLConnection,
         UnixDomainSocketConnection: _FastUnixConnection}


def _pack_fast(client: Redis | RedisCluster) -> None:
    """Swap the client's connection class for its hiredis-packing twin (the pool's, or on a
    cluster the one every node's pool is made with); a class we do not know stays as it is."""
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        for kwargs in (client.connection_kwargs, manager.connection_kwargs):
            cls = kwargs.get("connection_class", Connection)
            if cls in _FAST:
                kwargs["connection_class"] = _FAST[cls]
        for node in [*client.startup_nodes, *manager.startup_nodes.values(), *client.get_nodes()]:
            if node.connection_class in _FAST:
                node.connection_class = _FAST[node.connection_class]
        return
    pool = client.connection_pool
    if pool.connection_class in _FAST:
        pool.connection_class = _FAST[pool.connection_class]


def is_cluster(redis: Redis) -> bool:
    """Whether ``redis`` (from :func:`make_redis`) is a Redis Cluster client."""
    return isinstance(redis, RedisCluster)


async def get_many(redis: Redis, keys: list[str]) -> list[Any]:
    """The values of many keys, in order, whatever their slots: one MGET on a single Redis;
    on a cluster (where MGET needs one slot) a non-transactional pipeline of GETs, one round
    trip per node."""
    if not keys:
        return []
    if not is_cluster(redis):
        return list(await redis.mget(keys))  # decode_responses: str | None each
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(await pipe.execute())


DEFAULT_TENANT = "default"


def cohort_member(version: str, day: int, horizon_days: int) -> str:
    """A member of ``Keys.quality_cohorts``: ``<version>|<day>|<horizon days>``."""
    return f"{version}|{day}|{horizon_days}"


def parse_cohort_member(member: str) -> tuple[str, int, int] | None:
    """(version, day, horizon days) of a ``Keys.quality_cohorts`` member; None if unreadable."""
    rest, _, horizon = member.rpartition("|")
    version, _, day = rest.rpartition("|")
    try:
        return version, int(day), int(horizon)
    except ValueError:
        return None
# st: state (small fields only), sm: summary of events, rk: risk snapshot, pf: profile, dl:
# delivery log, tl: timeline, ac: staff actions, al: ids of the alerts sent about them, dr:
# the console's unsaved action forms about them (drafts); ev and ed held raw events before the
# summary (erasure still deletes them).
CUSTOMER_KEY_SUFFIXES = ("ev", "ed", "st", "sm", "rk", "pf", "dl", "tl", "ac", "al", "dr")


def _tag(value: str) -> str:
    # Percent-encode the characters that would break the hash tag or the separator; injective.
    return (value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
            .replace("/", "%2F"))


def _untag(value: str) -> str:
    return (value.replace("%2F", "/").replace("%7D", "}").replace("%7B", "{")
            .replace("%25", "%"))


@lru_cache(maxsize=65_536)
def customer_token(customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
    """``<tenant>/<customer>``, escaped: the hash tag of the customer's keys, and how indexes
    (the silence index, the at-risk index) name a customer."""
    return f"{_tag(tenant)}/{_tag(customer_id)}"


def parse_customer_token(token: str) -> tuple[str, str]:
    """Inverse of :func:`customer_token`: ``(tenant, customer_id)``."""
    tenant, _, customer = token.partition("/")
    return _untag(tenant), _untag(customer)


class Keys:
    """Key names under one prefix (``CHURNWATCH_REDIS_PREFIX``; tests use a fresh one each)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    # per customer -------------------------------------------------------------------
    def customer_base(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """Prefix of every key of one customer: ``<prefix>:c:{<token>}``; add ``:<suffix>``."""
        return f"{self.prefix}:c:{{{customer_token(customer_id, tenant)}}}"

    def state(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The customer's state hash: tier, score, times, version... every field short, so
        Redis keeps it a compact listpack (see ``services/state/store.py``; read it through
        ``services.state.store.StateRead``)."""
        return f"{self.customer_base(customer_id, tenant)}:st"

    def summary(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The summary of the customer's events (``Summary.encode()``), a string."""
        return f"{self.customer_base(customer_id, tenant)}:sm"

    def risk(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The customer's risk snapshot as stored (compact JSON, see
        ``services.state.store.risk_snapshot``), a string."""
        return f"{self.customer_base(customer_id, tenant)}:rk"

    def timeline(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The customer's timeline (tier changes, staff actions...), a capped list."""
        return f"{self.customer_base(customer_id, tenant)}:tl"

    def actions(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """Hash action id -> staff action JSON (win-back loop); written by the API."""
        return f"{self.customer_base(customer_id, tenant)}:ac"

    def drafts(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """Hash holder (a console session's or sign-in link's digest) -> an unsaved win-back
        action form about the customer (``services/console/sessions.py``): kept with the
        customer's other keys, so erasing the customer drops what staff typed about them."""
        return f"{self.customer_base(customer_id, tenant)}:dr"

    def customer_all(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> list[str]:
        """Every key churnwatch keeps for one customer: what erasure deletes. A new
        per-customer key must be listed here."""
        base = self.customer_base(customer_id, tenant)
        return [*(f"{base}:{suffix}" for suffix in CUSTOMER_KEY_SUFFIXES),
                self.episode(customer_id, tenant)]

    def episode(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The notifier's alert episode of a customer (ids and tiers of the alerts sent),
        under the customer's hash tag like their other keys (erased with them)."""
        return self.notifier_key(f"ep:{{{customer_token(customer_id, tenant)}}}")

    def profile(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """The customer's profile (owner, contact, consent...), a JSON string."""
        return f"{self.customer_base(customer_id, tenant)}:pf"

    def staff(self, tenant: str = DEFAULT_TENANT) -> str:
        """Hash staff_id -> staff JSON of one tenant."""
        return f"{self.prefix}:t:{_tag(tenant)}:staff"

    def former_staff(self, tenant: str = DEFAULT_TENANT) -> str:
        """Set of the staff ids removed from the tenant's team and not added back: a profile
        write naming one of them does not take a customer from a current owner
        (``services.records.profiles``)."""
        return f"{self.prefix}:t:{_tag(tenant)}:former"

    def stores(self, tenant: str = DEFAULT_TENANT) -> str:
        """Hash store_id -> store JSON (time zone, manager) of one tenant."""
        return f"{self.prefix}:t:{_tag(tenant)}:stores"

    def profile_stores(self, tenant: str = DEFAULT_TENANT) -> str:
        """``"1"`` once a profile of the tenant named a ``store_id``, ``"0"`` when its profiles
        were looked through and none did: the scorer reads the profile of a customer whose
        events name no store only in tenants with stores on record or this ``"1"``
        (``services.records.owners.note_profile_stores``)."""
        return f"{self.prefix}:t:{_tag(tenant)}:pfstores"

    def team_log(self, tenant: str = DEFAULT_TENANT) -> str:
        """List of the tenant's staff and store changes, newest first, capped: JSON ``{"at_ms",
        "what": "staff"|"store", "id", "action", "fields", "by"}`` (field names, never values)."""
        return f"{self.prefix}:t:{_tag(tenant)}:teamlog"

    # per tenant ---------------------------------------------------------------------
    def owned(self, staff_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """Set of the ids of the customers whose profile names ``staff_id`` their owner: a
        superset (``services/records/owners.py`` checks each profile before acting on it)."""
        return f"{self.prefix}:t:{_tag(tenant)}:owns:{_tag(staff_id)}"

    def owners(self, tenant: str = DEFAULT_TENANT) -> str:
        """Set of the staff ids that have an :meth:`owned` set (removed staff included)."""
        return f"{self.prefix}:t:{_tag(tenant)}:owners"

    def owners_built(self, tenant: str = DEFAULT_TENANT) -> str:
        """Set once the tenant's profiles written before the owner sets existed were read into
        them (``services.records.owners.ensure_index``)."""
        return f"{self.prefix}:t:{_tag(tenant)}:owners:built"

    def tier_index(self, tier: str, tenant: str = DEFAULT_TENANT, store: str | None = None) -> str:
        """Zset of the tenant's (or one store's) customers in ``tier``: customer token ->
        priority (score x customer value). Written by the scorer on every re-score; read by
        the at-risk list; its ZCARD is the customers-per-tier gauge."""
        base = f"{self.prefix}:t:{_tag(tenant)}"
        if store is not None:
            base += f":s:{_tag(store)}"
        return f"{base}:tier:{tier}"

    def store_set(self, tenant: str = DEFAULT_TENANT) -> str:
        """Set of the store ids the tenant's events named."""
        return f"{self.prefix}:t:{_tag(tenant)}:storeset"

    def erased(self, tenant: str = DEFAULT_TENANT) -> str:
        """The tenant's erasure ledger: hash keyed digest of the customer (the pseudonym,
        ``services/common/pseudonym.py``) -> ``<partition>:<offset>:<ms>`` of their tombstone
        on the events topic (records of the customer before it are ignored, whatever replays
        them); no customer id in it."""
        return f"{self.prefix}:t:{_tag(tenant)}:erased"

    def erased_at(self, tenant: str = DEFAULT_TENANT) -> str:
        """Zset digest -> erasure time (ms): ledger entries leave once the events topic's
        retention has dropped every record they guard against."""
        return f"{self.prefix}:t:{_tag(tenant)}:erased-at"

    def audit(self, tenant: str = DEFAULT_TENANT) -> str:
        """Stream of the tenant's audit records (erasures...), capped; written by the API."""
        return f"{self.prefix}:t:{_tag(tenant)}:audit"

    def tier_history(self, tenant: str = DEFAULT_TENANT) -> str:
        """Hash YYYY-MM-DD -> JSON tier counts of that day (snapshotted by the API on read)."""
        return f"{self.prefix}:t:{_tag(tenant)}:tierhist"

    def winback_index(self, tenant: str = DEFAULT_TENANT) -> str:
        """Zset ``<customer token>|<action id>`` -> action time (ms): every staff action of the
        tenant, for win-back analytics; the action itself lives in the customer's ``ac`` hash."""
        return f"{self.prefix}:t:{_tag(tenant)}:winback"

    def holdout_index(self, tenant: str = DEFAULT_TENANT) -> str:
        """Zset customer token -> when the customer entered the high tier as a member of the
        holdout group (ms; written by the scorer's commit, first time wins): the control
        group of win-back analytics."""
        return f"{self.prefix}:t:{_tag(tenant)}:holdout"

    def tenant_stats(self, tenant: str = DEFAULT_TENANT) -> str:
        """Hash of the tenant's own pipeline counters (the global ones are ``stats``); in the
        scorer's slot, so one script counts a batch everywhere."""
        return f"{self.scorer_base}:t:{_tag(tenant)}:stats"

    def value_bounds(self, tenant: str = DEFAULT_TENANT) -> str:
        """JSON of the tenant's value-tier boundaries (services/scoring/valuebounds.py):
        quantiles of a sample of its customers, recomputed periodically by the scorer."""
        return f"{self.prefix}:t:{_tag(tenant)}:valuebounds"

    @property
    def tenants(self) -> str:
        """Set of the tenants the scorer has seen."""
        return f"{self.prefix}:tenants"

    def due(self, partition: int, tenant: str = DEFAULT_TENANT) -> str:
        """Silence index of one tenant and events-topic partition: customer token -> next
        re-score time (ms), on that tenant's clock. The default tenant keeps the key name it
        had before tenants had clocks of their own."""
        if tenant == DEFAULT_TENANT:
            return f"{self.prefix}:due:{partition}"
        return f"{self.prefix}:t:{_tag(tenant)}:due:{partition}"

    def event_clock(self, tenant: str = DEFAULT_TENANT) -> str:
        """Zset of the tenant's event clock (CHURNWATCH_CLOCK=event): a digest of each of the
        3 customers with the newest events -> their newest event time (ms, capped at wall
        time + the allowed future skew). The clock is the second newest (services/scorer/
        state.py CLOCK_LUA), so no single customer moves it."""
        return f"{self.prefix}:t:{_tag(tenant)}:clock"

    def event_ids(self, tenant: str, bucket: int, generation: int) -> str:
        """Hash event id -> digest of the customer that first used it: one of the tenant's
        id registries (ids hashed into buckets; a new generation every
        CHURNWATCH_EVENT_ID_MEMORY_DAYS). The generations of one bucket share a hash tag."""
        return f"{self.prefix}:ids:{{{_tag(tenant)}/{bucket}}}:{generation}"

    # groups of keys moved together (one hash tag each) -----------------------------
    def tagged(self, group: str, name: str = "") -> str:
        """``<prefix>:{<prefix>:<group>}[:<name>]``: the keys of one group share a hash tag,
        so a Redis Cluster keeps them in one slot (scripts and MULTI may touch them together).
        """
        base = f"{self.prefix}:{{{self.prefix}:{group}}}"
        return f"{base}:{name}" if name else base

    # global -------------------------------------------------------------------------

    @property
    def scorer_base(self) -> str:
        """Prefix of the scorer's counters: one hash tag, so that a batch's offsets and stats
        are committed by one script on Redis Cluster too."""
        return f"{self.prefix}:sc:{{{_tag(self.prefix)}/sc}}"

    def offsets(self, topic: str) -> str:
        """Hash partition -> next offset of ``topic`` the scorer has fully processed."""
        return f"{self.scorer_base}:offsets:{topic}"

    def scored(self, topic: str) -> str:
        """Hash with ``events``: the events (single or in envelopes) of ``topic`` the scorer
        has processed — ``events_scored_total`` (forgotten with the offsets; tombstones are
        not events: the stats' ``erasures_total``)."""
        return f"{self.scorer_base}:scored:{topic}"

    def commit_marker(self, process: str) -> str:
        """One scorer process's last commit token (a retried commit counts once)."""
        return f"{self.scorer_base}:commit:{process}"

    @property
    def shadow_model(self) -> str:
        """JSON ``{"path", "version", "activated_at"}`` of the challenger every scorer scores in
        shadow (``churnwatch model shadow``); absent: none."""
        return f"{self.prefix}:model:shadow"

    def rescore(self, partition: int) -> str:
        """Re-scoring after a model switch, per events-topic partition: hash ``version``
        (the model the stored scores come from), ``pass`` (running | done) and ``t:<tenant>``
        (the ZSCAN cursor of that tenant's silence index, or done); see
        ``Processor.rescore_step``."""
        return f"{self.prefix}:rescore:{partition}"

    @property
    def active_model(self) -> str:
        """JSON ``{"path", "version", "activated_at"}`` of the model every process serves
        (``churnwatch model activate``); absent: each serves its configured model."""
        return f"{self.prefix}:model:active"

    # model quality (services/scorer/quality.py): single keys, each in a slot of its own
    def quality_cohort(self, version: str, day: int) -> str:
        """Hash customer token -> one sampled prediction of model ``version`` made on ``day``
        (days since the epoch, on the tenant's clock): JSON ``[score, tier, as_of ms, bin
        codes, label]``, label null until the horizon has passed; once labelled the entry is
        kept under ``~<digest of the token>`` instead (no customer id). Capped per day."""
        return f"{self.prefix}:mq:c:{_tag(version)}:{day}"

    @property
    def quality_cohorts(self) -> str:
        """Zset ``<version>|<day>|<horizon days>`` -> day: the cohorts that exist."""
        return f"{self.prefix}:mq:cohorts"

    @property
    def quality_lease(self) -> str:
        """Which scorer process runs the quality pass now (SET NX PX)."""
        return f"{self.prefix}:mq:lease"

    @property
    def quality_report(self) -> str:
        """JSON of the last quality pass; every scorer exports its gauges from it."""
        return f"{self.prefix}:mq:report"

    @property
    def stats(self) -> str:
        """Hash of the pipeline's global counters (events applied, duplicates...)."""
        return f"{self.scorer_base}:stats"

    @property
    def webhooks(self) -> str:
        return f"{self.prefix}:webhooks"

    # The delivery ledger (services/notifier/ledger.py): a delivery's state moves together
    # with its retry-queue entry and payload, so all three share the group tag ``dlv``.
    def delivery(self, delivery_id: str) -> str:
        """State of one delivery (ids are 32 hex digits: never ``retry``)."""
        return self.tagged("dlv", delivery_id)

    @property
    def retry_queue(self) -> str:
        return self.tagged("dlv", "retry")

    @property
    def retry_payloads(self) -> str:
        return self.tagged("dlv", "retry:data")

    def delivery_log(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        return f"{self.customer_base(customer_id, tenant)}:dl"

    def customer_alerts(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """Set of the ids of the alerts sent about the customer (``alert`` records, their
        ``ack``): erasure deletes those records too."""
        return f"{self.customer_base(customer_id, tenant)}:al"

    # notifier -----------------------------------------------------------------------
    def ack(self, alert_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """Acknowledgement of one alert of ``tenant`` (alert id = the risk-change CloudEvent
        ``id``): JSON ``{"by", "at"}``; written by :func:`services.alerting.acks.acknowledge`.
        One tenant's key cannot name another tenant's acknowledgement."""
        if tenant == DEFAULT_TENANT:
            return f"{self.prefix}:ack:{alert_id}"
        return f"{self.prefix}:ack:{_tag(tenant)}/{alert_id}"

    def alert(self, alert_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """An alert the notifier sent (or digested) for ``tenant``: JSON ``{"customer_id",
        "store_id", "at"}``; the API answers 404 to acknowledgements of ids without one."""
        return f"{self.prefix}:alert:{_tag(tenant)}/{alert_id}"

    def ack_link(self, token: str) -> str:
        """A one-click acknowledge link (``services.alerting.acks.AckLinks``): JSON
        ``{"tenant", "alert_id", "by", "exp"}``, kept until it expires."""
        return f"{self.prefix}:acklink:{token}"

    def inbox(self, staff_id: str, tenant: str = DEFAULT_TENANT) -> str:
        """A staff member's in-app alerts (the console's alert list): hash delivery id ->
        JSON ``{"alert_id", "customer_id", "kind", "subject", "text", "at_ms"}``, capped."""
        return f"{self.prefix}:t:{_tag(tenant)}:inbox:{_tag(staff_id)}"

    def inbox_staff(self, tenant: str = DEFAULT_TENANT) -> str:
        """Set of the staff ids of ``tenant`` with an in-app alert list (``inbox``): erasure
        finds a customer's entries in them without scanning the keyspace."""
        return f"{self.prefix}:t:{_tag(tenant)}:inboxes"

    def notifier_key(self, name: str) -> str:
        """Notifier-private keys used one at a time (episodes, webhook health):
        ``<prefix>:ntf:<name>``. Keys a script or MULTI moves together are below."""
        return f"{self.prefix}:ntf:{name}"

    @property
    def settle_queue(self) -> str:
        """Zset alert id -> due (ms) of the settle window (services/notifier/settle.py)."""
        return self.tagged("settle")

    @property
    def settle_data(self) -> str:
        """Hash alert id -> the held alert's JSON; moves with :attr:`settle_queue`."""
        return self.tagged("settle", "data")

    @property
    def escalation_queue(self) -> str:
        """Zset alert id -> due (ms) of escalations (services/alerting/escalation.py)."""
        return self.tagged("esc")

    @property
    def escalation_data(self) -> str:
        """Hash alert id -> the escalation's JSON; moves with :attr:`escalation_queue`."""
        return self.tagged("esc", "data")

    @property
    def escalation_prepared(self) -> str:
        """Zset alert id -> when (ms) its escalation was prepared: an entry of
        :attr:`escalation_data` never armed is dropped a week later (services/alerting/
        escalation.py)."""
        return self.tagged("esc", "prepared")

    @property
    def escalation_handed(self) -> str:
        """Hash alert id -> JSON ``{"at_ms", "manager"}``: the alert went to someone else's
        list in a hand-over (services/alerting/escalation.py); moves with the queue."""
        return self.tagged("esc", "handed")

    def escalation_done(self, alert_id: str) -> str:
        """Marks an alert escalated (or dropped as acknowledged); set with the queue's MULTI."""
        return self.tagged("esc", f"done:{alert_id}")

    @property
    def digest_base(self) -> str:
        """Prefix (ends with ``:``) of the digest keys (services/notifier/digests.py): buffers,
        due zset, batches, sequence and seen markers, all under one tag (the take script
        renames buffers to batches)."""
        return self.tagged("dg") + ":"

    @property
    def summary_base(self) -> str:
        """Prefix (ends with ``:``) of the go-live summary keys (services/notifier/golive.py),
        one tag like :attr:`digest_base`."""
        return self.tagged("sum") + ":"

    def rate_limit(self, scope: str) -> str:
        """A rate-limit counter (services/notifier/noise.py); one script checks and counts a
        recipient's and a channel's counters at once, so all share the tag ``rl``."""
        return self.tagged("rl", scope)
