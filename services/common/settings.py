"""The one settings object of churnwatch.

Every entry point builds it once with :func:`load_settings` and passes it down through
constructors; nothing else reads ``CHURNWATCH_*`` variables. A wrong value fails at start-up
with a :class:`~services.common.exceptions.ConfigError` naming the variable and what it accepts.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.cleartext import cleartext_refusal
from services.common.exceptions import ConfigError
from services.common.logs import mask_url_credentials

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
ENV_PREFIX = "CHURNWATCH_"
# A secret containing one of these is a placeholder: production refuses it.
PLACEHOLDER_WORDS = ("change", "placeholder", "example", "secret", "development", "replace",
                     "xxxx")
DEVELOPMENT_ACK_LINK_SECRET = "churnwatch-development-ack-link-secret"


# The tier thresholds of an online shop (CHURNWATCH_BUSINESS_TYPE=online) where none is set:
# seven in ten of its active customers churn within 60 days, and at the general thresholds
# its owner was texted about ~100 customers a week per 1,000 active ones, right 81 % of the
# time; at these, 58, right 90 % (bench/live_alerts.py, docs/notifier.md).
ONLINE_TIERS = {"tier_medium_enter": 0.85, "tier_medium_exit": 0.8, "tier_high_enter": 0.93,
                "tier_high_exit": 0.9}


def tier_order_broken(medium_enter: float, medium_exit: float, high_enter: float,
                      high_exit: float) -> int | None:
    """Which ordering four tier levels break, wherever they were set (settings, a rules
    file's ``tiers``): 1 for medium.exit <= medium.enter < high.enter, 2 for medium.enter <=
    high.exit <= high.enter; None when they fit."""
    if not medium_exit <= medium_enter < high_enter:
        return 1
    if not medium_enter <= high_exit <= high_enter:
        return 2
    return None


@dataclass(frozen=True)
class ApiKey:
    """One API key: its secret and the scopes it grants. ``admin`` implies every scope."""

    name: str
    secret: SecretStr
    scopes: frozenset[str]
    tenant: str = "default"
    stores: frozenset[str] | None = None  # None: every store of the tenant

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def allows_store(self, store_id: str | None) -> bool:
        return self.stores is None or (store_id is not None and store_id in self.stores)

    @property
    def deployment_wide(self) -> bool:
        """An admin key of the default tenant bound to no store: ``/v1/status`` answers it with
        the whole deployment's counters, every other key with its own tenant's."""
        return self.tenant == "default" and self.allows("admin") and self.stores is None


_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse ``secret:scope+scope[@tenant[/store|store]]`` entries separated by commas.

    Without ``@tenant`` a key belongs to the ``default`` tenant; with ``/stores`` it only sees
    customers of those stores. Raises ValueError naming the entry on bad input."""
    keys: list[ApiKey] = []
    for n, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        secret, sep, scopes_raw = entry.rpartition(":")
        if not sep or not secret:
            raise ValueError(
                f"entry {n + 1} must look like 'secret:scope+scope' (scopes: {', '.join(SCOPES)})"
            )
        if len(secret) < 8:
            raise ValueError(f"entry {n + 1}: the secret must be at least 8 characters long")
        scopes_raw, at, binding = scopes_raw.partition("@")
        tenant, stores = "default", None
        if at:
            tenant, slash, stores_raw = binding.partition("/")
            if not _TENANT_RE.match(tenant):
                raise ValueError(f"entry {n + 1}: tenant {tenant[:40]!r} must be 1-64 letters, digits, "
                                 "'_', '.' or '-', starting with a letter or digit")
            if slash:
                stores = frozenset(x.strip() for x in stores_raw.split("|") if x.strip())
                if not stores:
                    raise ValueError(f"entry {n + 1}: name at least one store after '/', "
                                     "e.g. 'secret:read@acme/store-1|store-2'")
        scopes = frozenset(s.strip() for s in scopes_raw.split("+") if s.strip())
        unknown = sorted(scopes - set(SCOPES))
        if not scopes or unknown:
            raise ValueError(
                f"entry {n + 1}: unknown scope(s) {unknown or '(none given)'}; "
                f"use one or more of {', '.join(SCOPES)} joined with '+'"
            )
        keys.append(ApiKey(name=f"key{n + 1}", secret=SecretStr(secret), scopes=scopes,
                           tenant=tenant, stores=stores))
    return tuple(keys)


BUSINESS_TYPES = ("default", "salon", "restaurant", "retail", "online", "school")


def parse_tenant_business_types(raw: str) -> dict[str, str]:
    """Parse ``tenant=type`` entries separated by commas (``acme=salon,shop=online``): the
    business type of each tenant named, or a rules YAML file of its own (a path ending in
    .yaml or .yml); the others keep ``CHURNWATCH_BUSINESS_TYPE``. Raises ValueError naming the
    entry on bad input."""
    out: dict[str, str] = {}
    for n, entry in enumerate(part.strip() for part in raw.split(",")):
        if not entry:
            continue
        tenant, eq, kind = (x.strip() for x in entry.partition("="))
        if not eq or not tenant or not kind:
            raise ValueError(f"entry {n + 1} must look like 'tenant=type', e.g. 'acme=salon' "
                             f"(types: {', '.join(BUSINESS_TYPES)}; or a rules .yaml file)")
        if not _TENANT_RE.match(tenant):
            raise ValueError(f"entry {n + 1}: tenant {tenant[:40]!r} must be 1-64 letters, digits, "
                             "'_', '.' or '-', starting with a letter or digit")
        if kind.endswith((".yaml", ".yml")):
            if not Path(kind).is_file():
                raise ValueError(f"entry {n + 1}: {kind[:200]} is not a file; point it at a rules "
                                 "YAML file (see services/scoring/rules/default.yaml)")
        elif kind not in BUSINESS_TYPES:
            raise ValueError(f"entry {n + 1}: unknown business type {kind[:40]!r}; use one of "
                             f"{', '.join(BUSINESS_TYPES)}, or a rules file ending in .yaml")
        if tenant in out:
            raise ValueError(f"entry {n + 1}: tenant {tenant!r} is named twice")
        out[tenant] = kind
    return out


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str) -> float:
    """Seconds from ``172800``, ``1.5s``, ``250ms``, ``15m``, ``48h`` or ``2d``."""
    m = _DURATION.match(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a duration; use seconds or a number with ms, s, m, "
                         "h or d, e.g. 2d, 48h, 172800")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


class Settings(BaseSettings):
    """All configuration, read from ``CHURNWATCH_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    env: Literal["development", "production"] = "development"
    home: Path = Path(".churnwatch")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Kafka. ``up`` starts an embedded broker unless CHURNWATCH_KAFKA_BOOTSTRAP is set.
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_events: str = "churnwatch.events"
    topic_risk_changes: str = "churnwatch.risk-changes"
    topic_events_dlq: str = "churnwatch.events.dlq"
    topic_notifications_dlq: str = "churnwatch.notifications.dlq"
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    topic_replication: int = Field(default=1, ge=1, le=16)
    kafka_request_timeout_ms: int = Field(default=10_000, ge=500)
    # The idempotent producer needs InitProducerId, which some Kafka-protocol brokers (the
    # embedded Tansu with memory storage) do not implement. "auto" tries it and falls back
    # loudly to acks=all without idempotence; every consumer deduplicates by id either way.
    kafka_idempotence: Literal["auto"] | bool = "auto"
    # Kafka security (docs/operations.md, "TLS and authentication"). PLAINTEXT by default;
    # SASL_SSL with SCRAM-SHA-512 is the usual production choice. kafka_ssl_cafile verifies the
    # brokers' certificates (system CAs when unset); certfile/keyfile give mutual TLS.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    # Redis. ``up`` starts an embedded redis-server unless CHURNWATCH_REDIS_URL is set.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="cw", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    # Redis TLS: use a rediss:// URL (credentials go in the URL: rediss://user:password@host:port/0
    # for a Redis 6+ ACL user); redis_ssl_ca_certs verifies the server (system CAs when unset).
    redis_ssl_ca_certs: Path | None = None
    # Redis Cluster: redis_url names any node (redis[s]://host:port, database 0); the client
    # discovers the others. Every script and MULTI of churnwatch touches one hash slot.
    redis_cluster: bool = False

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # Set by `churnwatch up` for the API it starts: serve on this inherited socket, which `up`
    # bound to api_host:api_port and listens on itself, so that no other process can take the
    # port between `up` choosing it and the API serving. Unset: the API binds the address.
    api_socket_fd: int | None = Field(default=None, ge=0)
    api_keys: SecretStr = SecretStr("")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=10_000, ge=1, le=10_000)
    max_event_age_days: int = Field(default=36_500, ge=1)  # replays of old history welcome
    max_event_future_seconds: int = Field(default=86_400, ge=0)
    # An accepted batch goes to the events topic as envelopes: its events grouped by
    # partition, up to 500 events / 512 KB per Kafka message (services/common/envelope.py,
    # docs/contract.md). false: one Kafka message per event, as before. Every scorer reading
    # the topic must read envelopes before this is on.
    ingest_envelopes: bool = True
    # Query API (docs/api.md). Per-key token bucket, in-process (per API process): a key may
    # make api_rate_limit_per_second requests a second on average, bursts of api_rate_limit_burst;
    # 0 turns it off. Bodies of routes other than POST /v1/events are capped at api_max_json_body_bytes.
    api_rate_limit_per_second: float = Field(default=100.0, ge=0, le=100_000)
    api_rate_limit_burst: int = Field(default=200, ge=1, le=1_000_000)
    # Slow clients (services/server/slowclients.py): a request's headers must arrive within
    # this many seconds, its body within that many after the headers (0: no limit), and one
    # client address may hold at most this many slow (>1 s) unfinished requests (0: no cap).
    api_header_timeout_seconds: float = Field(default=10.0, ge=0, le=3600)
    api_body_timeout_seconds: float = Field(default=60.0, ge=0, le=3600)
    api_max_slow_connections_per_client: int = Field(default=16, ge=0, le=100_000)
    api_max_json_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Churn analytics: a customer has churned once their last activity is churn_inactive_days
    # ago ("inactive_days"), or churn_cadence_multiple x their own median cadence
    # ("cadence_multiple", never less than churn_min_days).
    churn_definition: Literal["inactive_days", "cadence_multiple"] = "inactive_days"
    churn_inactive_days: int = Field(default=90, ge=1, le=3650)
    churn_cadence_multiple: float = Field(default=3.0, gt=0, le=100)
    churn_min_days: int = Field(default=14, ge=1, le=3650)
    # Value tiers relative within each tenant (docs/scoring.md): the scorer recomputes a
    # tenant's quantile boundaries from a sample of its customers when they are older than
    # this, and every engine (scorer, API) re-reads them at most every 60 s.
    value_bounds_refresh_seconds: float = Field(default=3600.0, ge=1, le=30 * 86_400)
    analytics_cache_seconds: float = Field(default=30.0, ge=0, le=86_400)
    analytics_max_customers: int = Field(default=200_000, ge=100, le=10_000_000)
    # Win-back loop: an action "won the customer back" when they had an event within
    # winback_attribution_days after it. holdout_share of high-risk customers (chosen by a hash
    # of tenant and customer) are marked holdout: staff leave them alone, so uplift is measured.
    winback_attribution_days: int = Field(default=30, ge=1, le=365)
    holdout_share: float = Field(default=0.0, ge=0, le=0.5)

    # Staff console (/console, docs/console.md). Links in sign-in mails start with public_url
    # when set (the address staff reach the API at); unset, with the address the request came
    # to, and only for loopback addresses (a forged Host header must not redirect a link).
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    console_link_seconds: int = Field(default=900, ge=30, le=86_400)
    # auto: Secure cookies except on plain http to a loopback address (make run)
    console_cookie_secure: Literal["auto", "always"] = "auto"

    # Scorer.
    scorer_group: str = "churnwatch-scorer"
    scorer_metrics_port: int = Field(default=9101, ge=0, le=65535)
    # Scorer worker processes `churnwatch up` starts, in one consumer group: each takes a share
    # of the events partitions (one process uses one core; more than the partitions idle).
    scorer_processes: int = Field(default=1, ge=1, le=64)
    # Records per poll, and so per batch: the consumer hands each poll to the processor
    # whole (an envelope holds up to 500 events). Under a backlog polls are full, and
    # single-event records of one customer meet in one part only if the poll holds them.
    scorer_batch_max: int = Field(default=5000, ge=1, le=100_000)
    # Keys and values of records delivered and not yet acknowledged (queued, batched, being
    # applied): delivery waits beyond it, so that polls of envelopes stay bounded in memory.
    scorer_inflight_max_mb: float = Field(default=64.0, gt=0, le=65_536)
    # Events applied together: one state read, one scoring call and one write round trip per
    # part of a poll, so a customer's several events in one part cost one step, not several
    # (a backlog of envelopes: catching up, an import). A part ends at whichever of the two
    # comes first. Memory ~25 KB per customer of a part (their decoded summaries) and ~3 KB
    # per event: at most ~185 MB.
    scorer_apply_max_events: int = Field(default=20_000, ge=1, le=1_000_000)
    scorer_apply_max_customers: int = Field(default=5000, ge=1, le=100_000)
    # The batching window of the scorer agent's stream. The consumer hands the events topic's
    # records to the processor in batches itself (services/scorer/transport.py), so no record
    # waits in it any longer; kept so that configurations still load.
    scorer_batch_within_ms: int = Field(default=50, ge=1, le=60_000)
    scorer_fetch_max_wait_ms: int = Field(default=100, ge=1, le=30_000)
    clock: Literal["wall", "event"] = "wall"
    model: Path | None = None
    # Accepted and ignored since the summary replaced the raw-event window (its bounds are
    # fixed: services/scoring/summary.py); kept so that existing configurations still load.
    window_days: int = Field(default=365, ge=30, le=3650)
    retention_days: int = Field(default=400, ge=1)
    max_events_per_customer: int = Field(default=1000, ge=32, le=100_000)
    # event_id is unique per tenant: an id already used by another customer is a duplicate.
    # The tenant-wide id registry remembers an id for this many days at least (twice at most).
    event_id_memory_days: int = Field(default=30, ge=1, le=3650)
    tier_medium_enter: float = Field(default=0.45, gt=0, lt=1)
    tier_medium_exit: float = Field(default=0.35, gt=0, lt=1)
    tier_high_enter: float = Field(default=0.75, gt=0, lt=1)
    tier_high_exit: float = Field(default=0.65, gt=0, lt=1)
    tier_min_dwell_seconds: float = Field(default=0.0, ge=0)
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    sweep_max_customers: int = Field(default=500, ge=1)
    scorer_gauges_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    # A stop (SIGTERM/SIGINT) that takes longer ends with a hard exit (nothing is lost: what
    # was not committed is redelivered); Faust otherwise retries leaving a dead broker forever.
    scorer_shutdown_grace_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Models and rules (docs/model.md). CHURNWATCH_MODEL=scorecard serves the rule scorecard;
    # unset serves the default model shipped with churnwatch.
    model_refresh_seconds: float = Field(default=2.0, gt=0, le=3600)
    # After a switch every stored score is re-scored with the new model in steps of this many
    # customers (event batches run in between).
    model_rescore_batch: int = Field(default=1000, ge=1, le=100_000)
    # "online": an online shop, whose tier thresholds default higher (ONLINE_TIERS)
    business_type: Literal["default", "salon", "restaurant", "retail", "online", "school"] = "default"
    rules: Path | None = None
    # One deployment serving several kinds of business: "tenant=type,..." gives a tenant its
    # own business type (its packaged rules and, for "online", its tier levels) or its own
    # rules file ("tenant=/path/rules.yaml"); a tenant not named keeps business_type / rules.
    tenant_business_types: str = ""

    # -- Model quality: drift and live outcomes (services/scorer/quality.py; docs/model.md
    # "Drift and live quality"). Every scorer runs a pass each interval; one of them (a Redis
    # lease) samples and labels, all export the same gauges. sample_size 0: off.
    quality_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    quality_sample_size: int = Field(default=200, ge=0, le=100_000)  # per tenant and pass
    quality_cohort_max: int = Field(default=2000, ge=1, le=1_000_000)  # per model and day
    quality_window_days: int = Field(default=28, ge=1, le=3650)  # labelled days judged
    quality_drift_days: int = Field(default=7, ge=1, le=3650)  # sampled days compared
    quality_min_labelled: int = Field(default=200, ge=1)  # fewer: no live quality gauges
    quality_horizon_days: int = Field(default=0, ge=0, le=3650)  # 0: the model card's
    quality_max_tenants: int = Field(default=100, ge=1, le=100_000)  # sampled per pass
    # -- end of model quality

    # Notifier.
    notifier_group: str = "churnwatch-notifier"
    notifier_metrics_port: int = Field(default=9102, ge=0, le=65535)
    routing_file: Path | None = None
    webhook_allow_private: bool = False
    # Webhook targets and the SMS gateway must be https:// (they receive customer ids, names
    # and reasons), except on this machine (localhost, 127.0.0.0/8, ::1). true: plain http://
    # anywhere, for receivers on a private network that is trusted end to end.
    webhook_allow_http: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # 19 attempts with the default backoff (equal jitter: each wait is half to all of 2 s x 2^n,
    # capped at 1 h) span at least 4.07 h, 6.1 h on average and at most 8.1 h before the
    # dead-letter topic: a receiver down for 4 hours loses nothing, whatever the jitter.
    delivery_max_attempts: int = Field(default=19, ge=1, le=100)
    delivery_backoff_base_seconds: float = Field(default=2.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_from: str = "churnwatch@localhost"
    sms_gateway_url: str | None = None
    sms_gateway_style: Literal["json", "form"] = "json"
    sms_gateway_username: str | None = None
    sms_gateway_token: SecretStr | None = None
    sms_sender: str = "churnwatch"
    # Notifier, issue 5 (docs/notifier.md). SMTP TLS: smtp_ca_file verifies the server's
    # certificate (system CAs when unset) for smtp_security=starttls|tls.
    smtp_ca_file: Path | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Overrides for every tenant (<dir>/<locale>/) or one (<dir>/<tenant>/<locale>/) of the
    # packaged Jinja2 templates.
    notifier_templates_dir: Path | None = None
    # Escalate unacknowledged high-risk alerts to the store manager after this many seconds
    # (overrides the routing file's escalation.after; unset: the routing file decides).
    notifier_escalate_after_seconds: float | None = Field(default=None, gt=0)
    # After a restart (or an outage) at most this many queued retries start per second, at
    # most notifier_max_in_flight at once: no resend storm.
    notifier_retry_max_per_second: float = Field(default=50.0, gt=0, le=100_000)
    notifier_max_in_flight: int = Field(default=10, ge=1, le=1000)
    # Consecutive retryable failures that open an endpoint's circuit breaker.
    notifier_breaker_failures: int = Field(default=1, ge=1, le=1000)
    # Issue 14: one-click acknowledge links in staff messages (docs/notifier.md). public_url is
    # where people reach the API (unset: http://<api_host>:<api_port>, the real port under
    # `up`); links are HMAC-signed with ack_link_secret and expire after ack_link_ttl_seconds.
    public_url: str | None = None
    ack_link_secret: SecretStr | None = None
    ack_link_ttl_seconds: float = Field(default=7 * 86_400, gt=0, le=90 * 86_400)
    # A webhook subscription whose deliveries fail without a success for this long is paused
    # (no deliveries; its tenant's admins are e-mailed once); POST /v1/webhooks/{id}/resume.
    webhook_pause_after_seconds: float = Field(default=3 * 86_400, gt=0)

    # Alerts staff can trust (issue 14, docs/notifier.md). Durations: seconds or 250ms, 30s,
    # 15m, 2h, 2d. Staff channels never alert about a change whose cause is older than
    # alert_max_age by the wall clock (it still reaches the topic and webhooks, marked
    # catching_up); such changes are summarised once per recipient ("currently at risk")
    # alert_summary_after the last of them. A staff alert waits alert_settle (processing
    # time) so that out-of-order arrivals settle; a change reverted inside it sends nothing.
    # An episode ends on the customer's own visit/purchase, or after alert_episode_quiet at low.
    # The scorer decides a customer's tier without hysteresis or dwell when a new event of
    # theirs is older than their last scoring by more than alert_max_age.
    alert_max_age: float = Field(default=2 * 86_400.0, gt=0)
    alert_settle: float = Field(default=120.0, ge=0)
    alert_summary_after: float = Field(default=60.0, ge=0)
    alert_episode_quiet: float = Field(default=7 * 86_400.0, ge=0)

    # ---- Privacy: log pseudonyms (issue 17; docs/privacy.md) ---------------------------------
    # Logs name customers by a token, HMAC-SHA256(pseudonym_key, tenant NUL customer id)
    # (services/common/pseudonym.py). Unset: one random key created once in Redis
    # (<prefix>:pseudonym-key) and shared by every service. Secret: never logged.
    pseudonym_key: SecretStr | None = None
    # How long each kind of data lives, in one place (docs/privacy.md lists every kind, where
    # it lives, for how long and how erasure reaches it; Settings.retention hands them to the
    # code). A customer's state, summary, risk and timeline expire retention_days after their
    # last write (above); so does their delivery log (it had no expiry before).
    timeline_max_entries: int = Field(default=500, ge=10, le=100_000)  # entries the API adds
    delivery_log_max_entries: int = Field(default=200, ge=10, le=100_000)
    delivery_state_days: float = Field(default=30.0, gt=0, le=3650)  # delivered/failed marks
    alert_record_days: float = Field(default=30.0, gt=0, le=3650)  # alerts sent, their acks
    alert_episode_days: float = Field(default=90.0, gt=0, le=3650)
    inbox_max_entries: int = Field(default=200, ge=10, le=100_000)  # in-app alerts per person
    inbox_days: float = Field(default=30.0, gt=0, le=3650)
    audit_max_records: int = Field(default=100_000, ge=1000, le=100_000_000)  # per tenant
    # retention.ms of the topics churnwatch creates (168 h: Kafka's own default; topics that
    # exist already keep theirs: kafka-configs --alter --add-config retention.ms=...). Fractions
    # are fine (0.001 h = 3.6 s, for tests); Retention.topic_readable_ms is the full bound.
    topic_retention_hours: float = Field(default=168.0, gt=0, le=87_600)
    # Outbox of the development sinks (`make run`): files older than this are deleted.
    outbox_retention_days: float = Field(default=7.0, gt=0, le=3650)
    # ---- end of privacy settings ---------------------------------------------------------

    @field_validator("alert_max_age", "alert_settle", "alert_summary_after",
                     "alert_episode_quiet", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return parse_duration(v) if isinstance(v, str) else v

    @field_validator("pseudonym_key")
    @classmethod
    def _empty_pseudonym_key(cls, v: SecretStr | None) -> SecretStr | None:
        return None if v is not None and not v.get_secret_value() else v  # "": the Redis key

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, v: SecretStr) -> SecretStr:
        parse_api_keys(v.get_secret_value())
        return v

    @field_validator("tenant_business_types")
    @classmethod
    def _check_tenant_business_types(cls, v: str) -> str:
        parse_tenant_business_types(v)
        return v

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("must be host:port[,host:port...], e.g. 127.0.0.1:9092")
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0")
        return v

    def _online_tiers(self) -> str:
        """An online business's tier thresholds where none was set (:data:`ONLINE_TIERS`);
        the words a refused mix of thresholds adds (empty for other business types)."""
        if self.business_type != "online":
            return ""
        for name, value in ONLINE_TIERS.items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)  # frozen: set while validating
        return (" (CHURNWATCH_BUSINESS_TYPE=online defaults them to " + ", ".join(
            f"{ENV_PREFIX}{n.upper()}={v}" for n, v in ONLINE_TIERS.items())
            + ": set all four to choose your own)")

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.redis_cluster and not (self.redis_url.startswith(("redis://", "rediss://"))
                                       and _redis_db(self.redis_url) == 0):
            raise ValueError(
                "CHURNWATCH_REDIS_CLUSTER=true needs CHURNWATCH_REDIS_URL=redis://host:port (or "
                "rediss://) naming one node of the cluster, database 0 (a cluster has no others)")
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"CHURNWATCH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "CHURNWATCH_KAFKA_SASL_USERNAME and CHURNWATCH_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("set both CHURNWATCH_KAFKA_SSL_CERTFILE and CHURNWATCH_KAFKA_SSL_KEYFILE "
                             "(mutual TLS) or neither")
        online = self._online_tiers()
        broken = tier_order_broken(self.tier_medium_enter, self.tier_medium_exit,
                                   self.tier_high_enter, self.tier_high_exit)
        if broken == 1:
            raise ValueError(
                "tier thresholds must satisfy CHURNWATCH_TIER_MEDIUM_EXIT <= "
                "CHURNWATCH_TIER_MEDIUM_ENTER < CHURNWATCH_TIER_HIGH_ENTER" + online
            )
        if broken == 2:
            raise ValueError(
                "tier thresholds must satisfy CHURNWATCH_TIER_MEDIUM_ENTER <= "
                "CHURNWATCH_TIER_HIGH_EXIT <= CHURNWATCH_TIER_HIGH_ENTER" + online
            )
        if self.env == "production" and not self.keys:
            raise ValueError(
                "CHURNWATCH_API_KEYS must be set when CHURNWATCH_ENV=production "
                "(e.g. 's3cret-ingest-key:ingest,s3cret-admin-key:admin')"
            )
        if self.sms_gateway_url:
            cleartext = cleartext_refusal(self.sms_gateway_url, allow_http=self.webhook_allow_http,
                                          what="CHURNWATCH_SMS_GATEWAY_URL")
            if cleartext is not None:
                raise ValueError(cleartext)
        if self.public_url and not re.match(r"^https?://[^/\s]+(/\S*)?$",
                                                         self.public_url):
            raise ValueError(f"CHURNWATCH_PUBLIC_URL={self.public_url!r} must be an http(s) URL "
                             "like https://churn.example.com (where staff reach the API)")
        if self.env == "production":
            secret = self.ack_link_secret.get_secret_value() if self.ack_link_secret else ""
            if len(secret) < 32 or any(w in secret.lower() for w in PLACEHOLDER_WORDS):
                raise ValueError(
                    "CHURNWATCH_ACK_LINK_SECRET must be set to a random value of at least 32 "
                    "characters when CHURNWATCH_ENV=production (not a placeholder); e.g. "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        if self.env == "production" and self.pseudonym_key is not None:
            secret = self.pseudonym_key.get_secret_value()
            if len(secret) < 32 or any(w in secret.lower() for w in PLACEHOLDER_WORDS):
                raise ValueError(
                    "CHURNWATCH_PSEUDONYM_KEY must be a random value of at least 32 characters "
                    "when CHURNWATCH_ENV=production (not a placeholder), or unset (a key kept "
                    "in Redis); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        if self.model is not None and str(self.model) != "scorecard" and not self.model.is_file():
            raise ValueError(f"CHURNWATCH_MODEL={self.model} is not a file; train one with "
                             "`churnwatch train --out PATH`, or set it to 'scorecard' for the rule scorecard")
        if self.smtp_ca_file is not None and not self.smtp_ca_file.is_file():
            raise ValueError(f"CHURNWATCH_SMTP_CA_FILE={self.smtp_ca_file} is not a file; point "
                             "it at the PEM file of the CA that signed the SMTP server's "
                             "certificate, or unset it to use the system CAs")
        if self.notifier_templates_dir is not None and not self.notifier_templates_dir.is_dir():
            raise ValueError(f"CHURNWATCH_NOTIFIER_TEMPLATES_DIR={self.notifier_templates_dir} "
                             "is not a directory; create it with <locale>/ or <tenant>/<locale>/ "
                             "subfolders of *.j2 templates, or unset it")
        if self.rules is not None and not self.rules.is_file():
            raise ValueError(f"CHURNWATCH_RULES={self.rules} is not a file; point it at a rules "
                             "YAML file (see services/scoring/rules/default.yaml) or unset it to use "
                             "the packaged rules of CHURNWATCH_BUSINESS_TYPE")
        return self

    @property
    def api_public_url(self) -> str:
        """Where people reach the API: CHURNWATCH_PUBLIC_URL, else the API's own address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def ack_link_key(self) -> str:
        """The acknowledge-link secret (a fixed development value when unset; production
        refuses to start without one)."""
        if self.ack_link_secret:
            return self.ack_link_secret.get_secret_value()
        return DEVELOPMENT_ACK_LINK_SECRET

    def to_env(self) -> dict[str, str]:
        """These settings as ``CHURNWATCH_*`` variables, to hand to a child process."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[ENV_PREFIX + name.upper()] = str(value)
        return out

    # Derived values -------------------------------------------------------------------
    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return parse_api_keys(self.api_keys.get_secret_value())

    @property
    def business_types(self) -> dict[str, str]:
        """Tenant -> business type or rules file, for the tenants given their own
        (``CHURNWATCH_TENANT_BUSINESS_TYPES``)."""
        return parse_tenant_business_types(self.tenant_business_types)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.keys)

    def find_key(self, presented: str) -> ApiKey | None:
        """Constant-time lookup of a presented bearer secret."""
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(key.secret.get_secret_value().encode(), presented.encode()):
                found = key
        return found

    @property
    def retention(self) -> Retention:
        """How long each kind of data lives, as the code uses it (seconds and counts)."""
        day = 86_400
        return Retention(customer_ttl_s=self.retention_days * day,
                         timeline_max=self.timeline_max_entries,
                         delivery_log_max=self.delivery_log_max_entries,
                         delivery_state_ttl_s=int(self.delivery_state_days * day),
                         alert_record_ttl_s=int(self.alert_record_days * day),
                         episode_ttl_s=int(self.alert_episode_days * day),
                         inbox_max=self.inbox_max_entries, inbox_ttl_s=int(self.inbox_days * day),
                         audit_max=self.audit_max_records,
                         topic_retention_ms=max(1, round(self.topic_retention_hours
                                                         * 3_600_000)))

    @property
    def stack_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"


# ---- Privacy: retention (issue 17) --------------------------------------------------------
@dataclass(frozen=True)
class Retention:
    """How long each kind of data lives (``Settings.retention``; docs/privacy.md). The
    defaults are the settings' defaults, for code built without settings (tests, tools)."""

    customer_ttl_s: int = 400 * 86_400  # state, summary, risk, timeline, delivery log
    timeline_max: int = 500
    delivery_log_max: int = 200
    delivery_state_ttl_s: int = 30 * 86_400
    alert_record_ttl_s: int = 30 * 86_400
    episode_ttl_s: int = 90 * 86_400
    inbox_max: int = 200
    inbox_ttl_s: int = 30 * 86_400
    audit_max: int = 100_000
    topic_retention_ms: int = 168 * 3_600_000

    @property
    def topic_segment_ms(self) -> int:
        """``segment.ms`` of the topics churnwatch creates. Kafka deletes whole segments, each
        once its newest record is older than ``retention.ms``, and a segment takes new records
        for up to ``segment.ms`` (broker default 7 days). So a record stays readable up to
        retention + segment.ms: capping segment.ms at one day (or the retention, if shorter)
        keeps that bound close to the retention."""
        return min(self.topic_retention_ms, TOPIC_SEGMENT_MAX_MS)

    @property
    def topic_readable_ms(self) -> int:
        """How long a record on a churnwatch-created topic can stay readable on Apache Kafka:
        retention + segment.ms + the broker's retention check interval (Kafka's default
        ``log.retention.check.interval.ms``; a broker setting churnwatch cannot see)."""
        return self.topic_retention_ms + self.topic_segment_ms + KAFKA_RETENTION_CHECK_MS


TOPIC_SEGMENT_MAX_MS = 86_400_000  # one day
KAFKA_RETENTION_CHECK_MS = 300_000  # Kafka's default log.retention.check.interval.ms
DEFAULT_RETENTION = Retention()
# ---- end of retention ------------------------------------------------------------------------


def _redis_db(url: str) -> int:
    """The database number of a redis:// URL's path (0 when there is none)."""
    path = url.split("://", 1)[1].partition("?")[0].partition("/")[2]
    return int(path) if path.isdigit() else (0 if not path else -1)


def _describe(err: dict[str, object]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]  # type: ignore[attr-defined]
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not loc:
        return msg
    name = ENV_PREFIX + loc[0].upper()
    given = err.get("input")
    shown = "" if isinstance(given, dict) or given is None else f" (got {str(given)[:60]!r})"
    if any(word in loc[0] for word in ("api_keys", "password", "token", "secret", "pseudonym_key")):
        shown = ""
    elif "url" in loc[0] or "bootstrap" in loc[0]:
        shown = mask_url_credentials(shown)
    return f"{name}: {msg}{shown}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (plus explicit overrides), or raise ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
