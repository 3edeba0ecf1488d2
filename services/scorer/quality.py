"""Drift and live quality of the served models, per model version (docs/model.md "Drift and
live quality"): a periodic pass of the scorer worker.

Each pass (one scorer process at a time holds a short Redis lease; the others export the
report it stored, so every worker shows the same gauges):

1. **sample** up to ``CHURNWATCH_QUALITY_SAMPLE_SIZE`` scored customers per tenant at random
   from the tenant's tier indexes, and keep their stored prediction (score, tier, time, model
   version, and the bins of their features and score in the model's training reference) in
   the cohort of that model version and prediction day — a hash of at most
   ``CHURNWATCH_QUALITY_COHORT_MAX`` customers (:meth:`Keys.quality_cohort`);
2. **label** every sampled prediction whose horizon (the model card's, or
   ``CHURNWATCH_QUALITY_HORIZON_DAYS``) has passed on its tenant's clock (wall time, or the
   event clock under ``CHURNWATCH_CLOCK=event``): churned (1) when the customer had no
   activity within the horizon after the prediction, as training labels snapshots;
3. **judge** each model version on the labelled predictions of the last
   ``CHURNWATCH_QUALITY_WINDOW_DAYS`` days: ROC AUC, Brier, calibration by score bin, the
   share of the high tier that churned; and the drift of the last
   ``CHURNWATCH_QUALITY_DRIFT_DAYS`` days of samples: PSI per feature and of the score
   against the training snapshot (both only from ``CHURNWATCH_QUALITY_MIN_LABELLED`` samples
   on: fewer say nothing; models trained before the reference was stored have none:
   ``churnwatch_model_drift_reference`` is 0 and no PSI is exported);
4. store the report (``Keys.quality_report``) and set the gauges.

Customers are read through the state store's public reads (:func:`read_states`,
:meth:`StateStore.read`); every key is a single key (Redis Cluster safe).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from services.common.redisconn import (
    DEFAULT_TENANT,
    Keys,
    cohort_member,
    customer_token,
    parse_cohort_member,
    parse_customer_token,
)
from services.common.settings import Settings
from services.scoring import drift
from services.scoring.features import DAY_MS
from services.state.store import TIERS, Ref, StateStore, read_states

logger = logging.getLogger(__name__)

DEFAULT_HORIZON_DAYS = 90  # a model without a card (the rule scorecard)
MAX_VERSIONS = 3  # model versions exported (the served one and the newest others)
READ_CHUNK = 500  # customers per pipeline
SAMPLED_FIELDS = ("scored_at", "risk")

# KEYS[1]: a cohort hash. ARGV[1]: cap, ARGV[2]: ttl s, then (customer token, its labelled
# field, entry) triples. Adds the customers the cohort has not had yet (pending under their
# token, or labelled under its digest) while it holds fewer than the cap; returns how many.
ADD_LUA = """
local n = redis.call('HLEN', KEYS[1])
local cap = tonumber(ARGV[1])
local added = 0
for i = 3, #ARGV, 3 do
  if n >= cap then break end
  if redis.call('HEXISTS', KEYS[1], ARGV[i + 1]) == 0
      and redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    n = n + 1
    added = added + 1
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return added
"""


@dataclass
class Sample:
    """One sampled prediction (a cohort entry)."""

    score: float
    tier: str
    as_of_ms: int
    codes: str  # drift.bin_codes against the version's reference, "" without one
    label: int | None = None
    # days since the customer's last activity when predicted: what recency alone would score
    # (None in entries written before it was kept)
    recency_days: float | None = None

    def dumps(self) -> str:
        return json.dumps([round(self.score, 6), self.tier, self.as_of_ms, self.codes,
                           self.label, self.recency_days], separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> Sample | None:
        try:
            score, tier, as_of, codes, label, *rest = json.loads(raw)
            recency = rest[0] if rest else None
            return cls(float(score), str(tier), int(as_of), str(codes),
                       None if label is None else int(label),
                       None if recency is None else float(recency))
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Cohort:
    version: str
    day: int
    horizon_days: int

    @property
    def member(self) -> str:
        return cohort_member(self.version, self.day, self.horizon_days)

    @classmethod
    def parse(cls, member: str) -> Cohort | None:
        parsed = parse_cohort_member(member)
        return None if parsed is None else cls(*parsed)


def labelled_field(token: str) -> str:
    """A labelled entry's field: a digest of the customer token (no customer id; never a
    token, which always holds a ``/``)."""
    return "~" + hashlib.blake2b(token.encode(), digest_size=10).hexdigest()


def card_of(model: Any) -> dict[str, Any]:
    card = getattr(model, "card", None)
    return card if isinstance(card, dict) else {}


def reference_of(model: Any) -> dict[str, Any] | None:
    ref = card_of(model).get("reference")
    return ref if drift.usable(ref) else None


def holdout_auc(model: Any) -> float | None:
    try:
        value = card_of(model)["holdout"]["model"]["roc_auc"]
    except (KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def judge(samples: list[Sample], *, min_labelled: int) -> dict[str, Any]:
    """Live quality of one model version from its labelled samples (pure)."""
    done = [s for s in samples if s.label is not None]
    y = [int(s.label or 0) for s in done]
    p = [s.score for s in done]
    out: dict[str, Any] = {"labelled": len(done), "pending": len(samples) - len(done)}
    if len(done) < min_labelled:
        return out
    out["churn_rate"] = sum(y) / len(y)
    out["auc"] = drift.roc_auc(y, p)
    out["brier"] = drift.brier(y, p)
    table = drift.calibration(y, p)
    out["calibration"] = table
    out["calibration_error"] = drift.calibration_error(table)
    high = [s.tier == "high" for s in done]
    if sum(high) >= max(1, min_labelled // 10):
        out["high_precision"] = drift.precision(y, high)
    out["high_samples"] = sum(high)
    # the same predictions ranked by days since the last activity alone: a model that does
    # worse has learned what does not hold for these customers (docs/model.md)
    known = [s for s in done if s.recency_days is not None]
    out["recency_samples"] = len(known)
    if len(known) >= min_labelled:
        yk = [int(s.label or 0) for s in known]
        days = [float(s.recency_days or 0.0) for s in known]
        out["recency_auc"] = drift.roc_auc(yk, days)
        compared = drift.auc_difference(yk, [s.score for s in known], days)
        if compared is not None:
            out["auc_over_recency"], out["auc_over_recency_stderr"] = compared
    return out


def judge_version(days: list[int], rows: list[list[Any]], *, newest_day: int,
                  reference: dict[str, Any] | None, min_labelled: int, drift_days: int
                  ) -> dict[str, Any]:
    """One model version's report from its cohorts' entries (``rows``: each cohort's values,
    in the order of ``days``): :func:`judge` of every sample, and the PSI of the samples of
    the last ``drift_days`` against ``reference`` (from ``min_labelled`` samples on)."""
    samples: list[Sample] = []
    recent: list[str] = []
    for day, entries in zip(days, rows, strict=True):
        got = [s for s in (Sample.loads(str(v)) for v in entries or []) if s is not None]
        samples += got
        if day > newest_day - drift_days:
            recent += [s.codes for s in got if s.codes]
    r = judge(samples, min_labelled=min_labelled)
    r["reference"] = reference is not None
    r["drift_samples"] = len(recent)
    if reference is not None and len(recent) >= min_labelled:
        values = drift.psi_from_codes(reference, recent)
        r["score_psi"] = values.pop(drift.SCORE, None)
        r["feature_psi"] = values
    return r


class QualityMetrics:
    """The gauges, labelled by model version (at most :data:`MAX_VERSIONS`; features: the
    model's feature list; calibration bins: 10)."""

    def __init__(self, registry: CollectorRegistry):
        v = ["model_version"]
        self.auc = Gauge("churnwatch_model_live_auc", "ROC AUC of labelled live predictions "
                         "(churned = no activity within the horizon)", v, registry=registry)
        self.brier = Gauge("churnwatch_model_live_brier", "Brier score of labelled live "
                           "predictions", v, registry=registry)
        self.calibration_error = Gauge(
            "churnwatch_model_live_calibration_error", "Expected calibration error of labelled "
            "live predictions: |mean predicted - observed churn rate| per score bin, weighted",
            v, registry=registry)
        self.predicted = Gauge("churnwatch_model_live_predicted_churn", "Mean predicted churn "
                               "probability of labelled live predictions in a score bin",
                               [*v, "bin"], registry=registry)
        self.observed = Gauge("churnwatch_model_live_observed_churn", "Observed churn rate of "
                              "labelled live predictions in a score bin", [*v, "bin"],
                              registry=registry)
        self.high_precision = Gauge("churnwatch_model_live_high_precision", "Share of labelled "
                                    "high-tier predictions whose customer churned", v,
                                    registry=registry)
        self.churn_rate = Gauge("churnwatch_model_live_churn_rate", "Observed churn rate of "
                                "labelled live predictions", v, registry=registry)
        self.samples = Gauge("churnwatch_model_live_samples", "Sampled live predictions in "
                             "the quality window: labelled, or pending (horizon not passed)",
                             [*v, "state"], registry=registry)
        self.holdout_auc = Gauge("churnwatch_model_holdout_auc", "ROC AUC of the model on "
                                 "its training holdout (model card)", v, registry=registry)
        self.recency_auc = Gauge("churnwatch_model_live_recency_auc", "ROC AUC of days since "
                                 "the last activity alone on the same labelled live "
                                 "predictions", v, registry=registry)
        self.over_recency = Gauge("churnwatch_model_live_auc_over_recency", "Live ROC AUC of "
                                  "the model minus that of days since the last activity alone, "
                                  "on the same predictions", v, registry=registry)
        self.recency_samples = Gauge(
            "churnwatch_model_live_recency_samples", "Labelled live predictions that kept the "
            "days since the last activity (those the recency comparison is judged on)", v,
            registry=registry)
        self.over_recency_stderr = Gauge(
            "churnwatch_model_live_auc_over_recency_stderr", "Standard error of "
            "churnwatch_model_live_auc_over_recency (DeLong, paired)", v, registry=registry)
        self.feature_psi = Gauge("churnwatch_model_feature_psi", "Population stability index "
                                 "of a feature: recent live samples vs the training snapshot",
                                 [*v, "feature"], registry=registry)
        self.score_psi = Gauge("churnwatch_model_score_psi", "Population stability index of "
                               "the score: recent live samples vs the training snapshot", v,
                               registry=registry)
        self.drift_reference = Gauge(
            "churnwatch_model_drift_reference", "1 when the model card has reference "
            "distributions (drift is computed), 0 when not (a model trained before them: "
            "retrain to get drift)", v, registry=registry)
        self.last_pass = Gauge("churnwatch_model_quality_last_pass_timestamp_seconds",
                               "Wall time of the quality report exported", registry=registry)
        self._all = [self.auc, self.brier, self.calibration_error, self.predicted,
                     self.observed, self.high_precision, self.churn_rate, self.samples,
                     self.holdout_auc, self.feature_psi, self.score_psi, self.drift_reference,
                     self.recency_auc, self.over_recency, self.over_recency_stderr,
                     self.recency_samples]

    def export(self, report: dict[str, Any]) -> None:
        for g in self._all:
            g.clear()
        for version, r in (report.get("versions") or {}).items():
            self.samples.labels(version, "labelled").set(r.get("labelled", 0))
            self.samples.labels(version, "pending").set(r.get("pending", 0))
            self.drift_reference.labels(version).set(1 if r.get("reference") else 0)
            if "recency_samples" in r:
                self.recency_samples.labels(version).set(r["recency_samples"])
            for gauge, key in ((self.auc, "auc"), (self.brier, "brier"),
                               (self.calibration_error, "calibration_error"),
                               (self.high_precision, "high_precision"),
                               (self.churn_rate, "churn_rate"), (self.holdout_auc, "holdout_auc"),
                               (self.score_psi, "score_psi"), (self.recency_auc, "recency_auc"),
                               (self.over_recency, "auc_over_recency"),
                               (self.over_recency_stderr, "auc_over_recency_stderr")):
                if drift.finite(r.get(key)):
                    gauge.labels(version).set(r[key])
            for row in r.get("calibration") or []:
                self.predicted.labels(version, row["bin"]).set(row["predicted"])
                self.observed.labels(version, row["bin"]).set(row["observed"])
            for feature, value in (r.get("feature_psi") or {}).items():
                self.feature_psi.labels(version, feature).set(value)
        if report.get("at"):
            self.last_pass.set(report["at"])


class QualityTracker:
    """The quality pass of one scorer process (see the module's docstring)."""

    def __init__(self, store: StateStore, settings: Settings,
                 models: Callable[[], dict[str, Any]], registry: CollectorRegistry | None = None,
                 metrics: QualityMetrics | None = None):
        self.store = store
        self.redis = store.redis
        self.keys: Keys = store.keys
        self.settings = settings
        self.models = models  # version -> model, those this process knows (ActiveModel.known)
        self.metrics = metrics or QualityMetrics(registry or CollectorRegistry())
        self.event_clock = settings.clock == "event"
        self.owner = uuid.uuid4().hex
        # cohort -> its size when every entry was labelled: not read again until it grows
        self._settled: dict[Cohort, int] = {}
        self._said_no_reference: set[str] = set()

    # the pass ---------------------------------------------------------------------------
    async def run(self, *, force: bool = False) -> dict[str, Any] | None:
        """One pass: sample, label and judge when this process holds the lease (``force``:
        regardless), then export the newest report. Returns the report exported."""
        lease_ms = max(int(self.settings.quality_interval_seconds * 900), 1000)
        mine = force or bool(await self.redis.set(self.keys.quality_lease, self.owner,
                                                  nx=True, px=lease_ms))
        report: dict[str, Any] | None
        if mine and self.settings.quality_sample_size > 0:
            report = await self.compute()
            await self.redis.set(self.keys.quality_report, json.dumps(report),
                                 ex=max(int(self.settings.quality_interval_seconds * 10), 3600))
        else:
            raw = await self.redis.get(self.keys.quality_report)
            report = json.loads(raw) if raw else None
        if report is not None:
            self.metrics.export(report)
        return report

    async def compute(self) -> dict[str, Any]:
        started = time.perf_counter()
        tenants = await self._tenants()
        nows = await self._nows(tenants)
        sampled = await self.sample(tenants, nows)
        labelled = await self.label(nows)
        report = await self.judge_all(nows)
        report["sampled"], report["labelled_now"] = sampled, labelled
        logger.info("model quality pass: %d predictions sampled, %d labelled, %d model "
                    "version(s) judged in %.2f s", sampled, labelled, len(report["versions"]),
                    time.perf_counter() - started)
        return report

    async def _tenants(self) -> list[str]:
        limit = self.settings.quality_max_tenants
        found = await self.redis.srandmember(self.keys.tenants, limit) or []
        return sorted({DEFAULT_TENANT, *map(str, found)})[:max(limit, 1)]

    async def _nows(self, tenants: list[str]) -> dict[str, int]:
        """Each tenant's now: wall time, or its event clock (tenants without one left out)."""
        if not self.event_clock:
            wall = int(time.time() * 1000)
            return dict.fromkeys(tenants, wall)
        clocks = await self.store.read_clocks(tenants)
        return {t: c for t, c in clocks.items() if c is not None}

    def horizon_days(self, model: Any) -> int:
        if self.settings.quality_horizon_days:
            return self.settings.quality_horizon_days
        value = card_of(model).get("horizon_days")
        return int(value) if isinstance(value, int) and value > 0 else DEFAULT_HORIZON_DAYS

    # 1. sample --------------------------------------------------------------------------
    async def sample(self, tenants: Iterable[str], nows: dict[str, int]) -> int:
        """Put a random sample of each tenant's scored customers in the cohorts."""
        refs: list[Ref] = []
        for tenant in tenants:
            if tenant in nows:
                refs += await self._pick(tenant, self.settings.quality_sample_size)
        if not refs:
            return 0
        known = self.models()
        cohorts: dict[Cohort, dict[str, str]] = {}
        for i in range(0, len(refs), READ_CHUNK):
            chunk = refs[i:i + READ_CHUNK]
            states = await read_states(self.redis, self.keys, chunk, SAMPLED_FIELDS)
            for ref, state in zip(chunk, states, strict=True):
                got = self._prediction(state, known)
                if got is not None:
                    cohort, sample = got
                    cohorts.setdefault(cohort, {})[customer_token(ref[1], ref[0])] = sample.dumps()
        added = 0
        for cohort, entries in cohorts.items():
            ttl = (cohort.horizon_days + self.settings.quality_window_days + 2) * 86_400
            args: list[Any] = [self.settings.quality_cohort_max, ttl]
            for token, value in entries.items():
                args += [token, labelled_field(token), value]
            key = self.keys.quality_cohort(cohort.version, cohort.day)
            added += int(await self.redis.eval(ADD_LUA, 1, key, *args))
            await self.redis.zadd(self.keys.quality_cohorts, {cohort.member: cohort.day})
        return added

    async def _pick(self, tenant: str, n: int) -> list[Ref]:
        """Up to ``n`` random customers of the tenant, from its tier indexes in proportion to
        their sizes (every scored customer is in exactly one)."""
        pipe = self.redis.pipeline(transaction=False)
        for tier in TIERS:
            pipe.zcard(self.keys.tier_index(tier, tenant))
        sizes = [int(x) for x in await pipe.execute()]
        total = sum(sizes)
        if total == 0 or n <= 0:
            return []
        pipe = self.redis.pipeline(transaction=False)
        wanted = []
        for tier, size in zip(TIERS, sizes, strict=True):
            k = min(size, max(1, round(n * size / total))) if size else 0
            if k:
                pipe.zrandmember(self.keys.tier_index(tier, tenant), k)
                wanted.append(k)
        rows = await pipe.execute() if wanted else []
        out = []
        for row in rows:
            for token in row or []:
                t, cid = parse_customer_token(str(token))
                if t == tenant:
                    out.append((t, cid))
        return out

    def _prediction(self, state: dict[str, str], known: dict[str, Any]
                    ) -> tuple[Cohort, Sample] | None:
        """A customer's stored prediction as a cohort entry; None when there is none or the
        customer is outside the training population (silent for over a year)."""
        raw = state.get("risk")
        if not raw:
            return None
        try:
            risk = json.loads(raw)
            version = str(risk["model_version"])
            score = float(risk["score"])
            tier = str(risk["tier"])
            features = risk.get("features") or {}
            as_of = int(float(state["scored_at"])) if state.get("scored_at") else _ms(risk["as_of"])
        except (ValueError, KeyError, TypeError):
            return None
        if features.get("days_since_last_activity", 0.0) > drift.MAX_DORMANT_DAYS:
            return None
        model = known.get(version)
        reference = reference_of(model) if model is not None else None
        codes = drift.bin_codes(reference, features, score) if reference else ""
        cohort = Cohort(version, as_of // DAY_MS, self.horizon_days(model))
        recency = features.get("days_since_last_activity")
        return cohort, Sample(score, tier, as_of, codes, recency_days=None if recency is None
                              else round(float(recency), 3))

    # 2. label ---------------------------------------------------------------------------
    async def _cohorts(self) -> list[Cohort]:
        """The cohorts, one per (version, day): two processes that knew the version's horizon
        differently name one cohort twice; the shorter horizon wins (labelled sooner)."""
        out: dict[tuple[str, int], Cohort] = {}
        for c in await self._members():
            seen = out.get((c.version, c.day))
            if seen is None or c.horizon_days < seen.horizon_days:
                out[(c.version, c.day)] = c
        return list(out.values())

    async def _members(self) -> list[Cohort]:
        members = await self.redis.zrange(self.keys.quality_cohorts, 0, -1)
        return [c for c in (Cohort.parse(str(m)) for m in members) if c is not None]

    async def label(self, nows: dict[str, int]) -> int:
        """Label the sampled predictions whose horizon has passed on their tenant's clock."""
        if not nows:
            return 0
        newest = max(nows.values())
        done = 0
        # nothing of a cohort can be due on any clock before its day + horizon
        candidates = [c for c in await self._cohorts()
                      if c.day * DAY_MS + c.horizon_days * DAY_MS <= newest]
        pipe = self.redis.pipeline(transaction=False)
        for c in candidates:
            pipe.hlen(self.keys.quality_cohort(c.version, c.day))
        sizes = [int(n) for n in await pipe.execute()] if candidates else []
        self._settled = {c: n for c, n in self._settled.items() if c in set(candidates)}
        for cohort, size in zip(candidates, sizes, strict=True):
            if self._settled.get(cohort) == size:
                continue  # every entry labelled last time, and none added since
            horizon_ms = cohort.horizon_days * DAY_MS
            key = self.keys.quality_cohort(cohort.version, cohort.day)
            entries = await self.redis.hgetall(key)
            due: dict[str, tuple[Ref, Sample]] = {}
            waiting = 0
            for token, raw in entries.items():
                s = Sample.loads(str(raw))
                if s is None or s.label is not None:
                    continue
                waiting += 1
                ref = parse_customer_token(str(token))
                now = nows.get(ref[0])
                if now is not None and s.as_of_ms + horizon_ms <= now:
                    due[str(token)] = (ref, s)
            settled = waiting == len(due)  # every entry labelled after this pass
            if not due:
                if settled:
                    self._settled[cohort] = len(entries)
                continue
            tokens = list(due)
            # a labelled entry no longer needs to name its customer: it moves to a digest, so
            # customer ids stay in the cohorts only until the horizon (an erased customer's
            # pending entry is dropped when it falls due)
            updates: dict[Any, Any] = {}  # digest -> entry (redis-py's mapping is invariant)
            erased: list[str] = []
            renamed: list[str] = []
            for i in range(0, len(tokens), READ_CHUNK):
                chunk = tokens[i:i + READ_CHUNK]
                states = await self.store.load([due[t][0] for t in chunk])
                for token in chunk:
                    ref, s = due[token]
                    cs = states.get(ref)
                    if cs is None:  # erased meanwhile: no outcome to judge
                        erased.append(token)
                        continue
                    summary = cs.summary
                    s.label = drift.label(s.as_of_ms, cs.last_ts, horizon_ms,
                                          lambda a, b, sm=summary: sm.returned_between(a + 1, b))
                    updates[labelled_field(token)] = s.dumps()
                    renamed.append(token)
            pipe = self.redis.pipeline(transaction=False)
            if updates:
                pipe.hset(key, mapping=updates)
            if erased or renamed:
                pipe.hdel(key, *erased, *renamed)
            await pipe.execute()
            done += len(updates)
            if settled:
                self._settled[cohort] = len(entries) - len(erased)
        return done

    # 3. judge ---------------------------------------------------------------------------
    async def judge_all(self, nows: dict[str, int]) -> dict[str, Any]:
        known = self.models()
        newest_day = (max(nows.values()) // DAY_MS) if nows else int(time.time() * 1000) // DAY_MS
        by_version: dict[str, list[Cohort]] = {}
        oldest = newest_day - self.settings.quality_window_days
        stale = [c for c in await self._members() if c.day < oldest - c.horizon_days]
        for c in await self._cohorts():
            if c.day >= oldest - c.horizon_days:
                by_version.setdefault(c.version, []).append(c)
        if stale:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.quality_cohorts, *(c.member for c in stale))
            for c in stale:
                pipe.delete(self.keys.quality_cohort(c.version, c.day))
            await pipe.execute()
        served = [v for v in known if v in by_version]
        others = sorted((v for v in by_version if v not in served),
                        key=lambda v: max(c.day for c in by_version[v]), reverse=True)
        versions = (served + others)[:MAX_VERSIONS]
        out: dict[str, Any] = {}
        for version in versions:
            cohorts = by_version[version]
            pipe = self.redis.pipeline(transaction=False)
            for c in cohorts:
                pipe.hvals(self.keys.quality_cohort(c.version, c.day))
            rows = await pipe.execute()
            model = known.get(version)
            reference = reference_of(model) if model is not None else None
            if reference is None and version not in self._said_no_reference:
                self._said_no_reference.add(version)
                logger.info("model %s has no training reference in its card (%s): its drift "
                            "is not computed, its live quality is; retrain it with this "
                            "churnwatch to get drift", version,
                            "trained before references" if model is not None
                            else "not loaded in this process")
            # parsing and judging ~100,000 samples takes ~0.5 s: off the event loop
            r = await asyncio.to_thread(
                judge_version, [c.day for c in cohorts], rows, newest_day=newest_day,
                reference=reference, min_labelled=self.settings.quality_min_labelled,
                drift_days=self.settings.quality_drift_days)
            r["holdout_auc"] = holdout_auc(model) if model is not None else None
            out[version] = r
        return {"at": time.time(), "versions": out}


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


__all__ = ["QualityMetrics", "QualityTracker", "Sample", "judge"]
