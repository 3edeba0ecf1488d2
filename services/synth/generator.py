"""A latent churn process behind realistic point-of-sale histories.

Every customer has a personal cadence (salon ~3-8 weeks, restaurant ~1-3 weeks, retail: many
one-time buyers and irregular repeaters, eshop: an online shop where most customers buy once and
the rest reorder every one to six months, with routine returns; school: students attend classes
one to three times a week, skip some, pay fees about monthly and stay away over the summer
break), a mean ticket, a join date spread over the period and
a hidden churn time drawn from a hazard. Bad experiences raise the hazard — complaints more
than silent disappointments, unresolved complaints more than resolved ones — and new
customers churn more easily than loyal ones. Before churning, a share of customers drift (gaps
lengthen, tickets shrink); some churned customers come back after a long gap. Occasions lean
towards each business's busy weekdays, opening hours and busy months (seasonality: more
frequent occasions in the busy months, e.g. December for salons and shops, summer for
restaurants).

Each customer is simulated from its own random stream (``preset``, ``seed``, index), so a
customer's history and event ids do not depend on how many customers are generated.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from services.common.exceptions import ChurnwatchError
from services.common.timefmt import rfc3339

PRESETS = ("salon", "restaurant", "retail", "eshop", "school")
LOCAL_TZ = timezone(timedelta(hours=1))  # the shops' wall clock: a fixed offset, no DST
DAY_S = 86_400
CURRENCY = "EUR"

_STORE_NAMES = ("downtown", "riverside", "uptown", "harbor", "old-town", "station", "parkside",
                "market")
_SEVERITY_WEIGHT = {"low": 1.0, "medium": 2.5, "high": 5.0}  # hazard added while open
_OPEN_DECAY_DAYS = 180.0      # an unresolved grievance fades slowly ...
_RESOLVED_FACTOR = 0.3        # ... a resolved one keeps this share of its effect
_RESOLVED_DECAY_DAYS = 60.0   # and fades fast
_SILENT_BAD = 1.5             # a bad experience nobody hears about
_SILENT_DECAY_DAYS = 60.0
_NEWCOMER_BOOST = 1.5         # extra hazard at day 0 of tenure, fading over ~2 months
_DRIFT_SHARE = 0.6            # churners whose visits thin out and tickets shrink first
_JITTER = (0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5)  # day -3 .. +3 around the due date


class SynthError(ChurnwatchError, ValueError):
    """The generator was asked for something it cannot produce."""


@dataclass(frozen=True)
class SynthCustomer:
    """The truth behind one synthetic customer.

    ``churn_at`` is the first time the customer stopped coming back within the period (None
    if they never did); a churned customer may return later, after a long silence.
    """

    customer_id: str
    store_id: str
    cadence_days: float
    mean_ticket: float
    churn_at: datetime | None
    complainer: bool
    one_time: bool = False
    returned: bool = False        # came back after churning (a later episode)
    gap_shape: float = 1.0        # gamma shape of the gaps between occasions (the preset's)
    churns: tuple[datetime, ...] = ()  # every churn, the first and any after a return

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "store_id": self.store_id,
                "cadence_days": self.cadence_days, "mean_ticket": self.mean_ticket,
                "churn_at": rfc3339(self.churn_at) if self.churn_at else None,
                "complainer": self.complainer, "one_time": self.one_time,
                "returned": self.returned, "gap_shape": self.gap_shape,
                "churns": [rfc3339(c) for c in self.churns]}


@dataclass(frozen=True)
class _Preset:
    prefix: str
    default_stores: int
    cadence_days: tuple[float, float]     # personal cadences are log-uniform in this range
    gap_shape: float                      # gamma shape of gaps: higher is more regular
    ticket_median: float
    ticket_spread: float                  # lognormal sigma of mean tickets between customers
    ticket_noise: float                   # lognormal sigma of one ticket around the mean
    ticket_step: float                    # prices are multiples of this
    annual_churn: float                   # yearly churn probability of a typical customer
    one_time_share: float                 # customers who buy once and do not return
    visit_share: float                    # in-store occasions that produce a visit event
    purchase_share: float                 # visits that end with a transaction
    services: tuple[tuple[str, float], ...]  # (service, typical minutes)
    staff_prefix: str
    weekday_weight: tuple[float, ...]     # Monday .. Sunday
    hours: tuple[tuple[float, float], ...]  # opening windows, local hours
    online_share: float                   # highest personal share of online occasions
    online_channel: str
    quantity_mean: float
    return_share: float                   # churned customers who come back
    refund_share: float                   # bad experiences with a refund
    categories: tuple[str, ...]
    season: tuple[float, ...] = (1.0,) * 12  # occasion rate by month, January .. December
    online_floor: float = 0.0             # lowest personal share of online occasions
    routine_refund: float = 0.0           # purchases partly returned without a bad experience
    store_names: tuple[str, ...] = _STORE_NAMES


_PRESETS: dict[str, _Preset] = {
    "salon": _Preset(
        prefix="sal", default_stores=3, cadence_days=(21.0, 56.0), gap_shape=7.0,
        ticket_median=55.0, ticket_spread=0.4, ticket_noise=0.15, ticket_step=0.5,
        annual_churn=0.30, one_time_share=0.10, visit_share=1.0, purchase_share=0.92,
        services=(("haircut", 45), ("colour", 120), ("blow-dry", 40), ("manicure", 50),
                  ("beard-trim", 25), ("treatment", 60)),
        staff_prefix="stylist", weekday_weight=(0.5, 0.9, 1.0, 1.1, 1.3, 1.5, 0.2),
        hours=((9.0, 19.0),), online_share=0.0, online_channel="app", quantity_mean=1.3,
        return_share=0.12, refund_share=0.1,
        categories=("service_quality", "wait_time", "price", "staff", "booking"),
        season=(0.9, 0.9, 1.0, 1.0, 1.05, 1.1, 0.9, 0.8, 1.0, 1.0, 1.05, 1.3),
    ),
    "restaurant": _Preset(
        prefix="res", default_stores=4, cadence_days=(7.0, 21.0), gap_shape=2.5,
        ticket_median=34.0, ticket_spread=0.35, ticket_noise=0.3, ticket_step=0.01,
        annual_churn=0.45, one_time_share=0.2, visit_share=0.35, purchase_share=1.0,
        services=(("lunch", 55), ("dinner", 95), ("brunch", 75)),
        staff_prefix="server", weekday_weight=(0.6, 0.7, 0.8, 1.0, 1.5, 1.6, 1.2),
        hours=((11.5, 14.5), (18.0, 22.5)), online_share=0.4, online_channel="delivery",
        quantity_mean=2.2, return_share=0.15, refund_share=0.35,
        categories=("food_quality", "wait_time", "service", "order_wrong", "price"),
        season=(0.85, 0.85, 0.95, 1.0, 1.1, 1.2, 1.2, 1.15, 1.0, 0.95, 0.95, 1.25),
    ),
    "retail": _Preset(
        prefix="ret", default_stores=5, cadence_days=(14.0, 90.0), gap_shape=1.2,
        ticket_median=42.0, ticket_spread=0.6, ticket_noise=0.5, ticket_step=0.01,
        annual_churn=0.5, one_time_share=0.45, visit_share=0.05, purchase_share=1.0,
        services=(("fitting", 20), ("click_and_collect", 10), ("alterations", 30)),
        staff_prefix="clerk", weekday_weight=(0.7, 0.8, 0.8, 0.9, 1.1, 1.7, 0.6),
        hours=((10.0, 20.0),), online_share=0.7, online_channel="online", quantity_mean=2.0,
        return_share=0.08, refund_share=0.5,
        categories=("product_defect", "delivery", "returns", "staff", "price"),
        season=(1.0, 0.8, 0.9, 0.95, 1.0, 0.95, 1.05, 0.9, 0.95, 1.0, 1.35, 1.6),
    ),
    # An online shop: about two customers in three buy once and never come back (one_time_share
    # plus repeaters who churn before their second order); the rest reorder every 1-6 months,
    # very irregularly. Nearly every order is online (a few click-and-collect pick-ups at the
    # warehouse counter); one order in eight is partly sent back without any grievance (returns
    # are routine and do not raise the churn hazard), and bad experiences end in a refund more
    # often than anywhere else. Black Friday and Christmas dominate the year.
    "eshop": _Preset(
        prefix="esh", default_stores=2, cadence_days=(30.0, 180.0), gap_shape=0.9,
        ticket_median=48.0, ticket_spread=0.7, ticket_noise=0.45, ticket_step=0.01,
        annual_churn=0.55, one_time_share=0.6, visit_share=0.0, purchase_share=1.0,
        services=(("click_and_collect", 10),),
        staff_prefix="packer", weekday_weight=(1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6),
        hours=((9.0, 18.0),), online_share=1.0, online_channel="online", quantity_mean=1.8,
        return_share=0.1, refund_share=0.6,
        categories=("delivery", "product_defect", "returns", "payment", "customer_service"),
        season=(0.95, 0.8, 0.9, 0.9, 0.95, 0.9, 0.95, 0.9, 0.95, 1.0, 1.5, 1.6),
        online_floor=0.9, routine_refund=0.12, store_names=("webshop", "marketplace"),
    ),
    # A school (languages, music, dance, tutoring): enrolled students attend one to three
    # classes a week — each class a visit, at fixed times but with some skipped, so gaps are
    # fairly regular (a gamma shape of 3) —, pay a fee about once in five classes (roughly
    # monthly), and come far less in July and August and over Christmas. Few come for a trial
    # lesson only; students leave at about the salon's yearly rate, and a few return the next
    # year. The business type it stands for is `default`: no rules of its own.
    "school": _Preset(
        prefix="sch", default_stores=2, cadence_days=(2.5, 8.0), gap_shape=3.0,
        ticket_median=80.0, ticket_spread=0.35, ticket_noise=0.05, ticket_step=5.0,
        annual_churn=0.4, one_time_share=0.08, visit_share=1.0, purchase_share=0.2,
        services=(("class", 60), ("private_lesson", 45), ("exam_prep", 90)),
        staff_prefix="teacher", weekday_weight=(1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.05),
        hours=((15.0, 20.5),), online_share=0.0, online_channel="online", quantity_mean=1.0,
        return_share=0.1, refund_share=0.2,
        categories=("teaching", "schedule", "fees", "staff", "facilities"),
        season=(1.0, 0.95, 1.0, 0.9, 1.0, 0.85, 0.2, 0.2, 1.1, 1.0, 1.0, 0.7),
        store_names=("central", "north", "south"),
    ),
}


@dataclass
class _Complaint:
    severity: str
    category: str
    raised: float                 # day (float) the complaint is raised
    resolved: float | None        # day it is resolved, if ever


@dataclass
class _Occasion:
    t: float                      # local day number + hour fraction
    store: int
    online: bool
    ticket_factor: float = 1.0
    complaint: _Complaint | None = None
    refund: float | None = None   # share of the ticket refunded after a bad experience


@dataclass(frozen=True)
class _Frame:
    """The period in local days since local midnight of the start date."""

    origin_ts: int
    start_d: float
    end_d: float
    origin_weekday: int
    n_stores: int
    seed: int
    preset: str


def generate(*, preset: str = "salon", customers: int = 500, start: datetime, end: datetime,
             seed: int = 0, stores: int | None = None
             ) -> tuple[list[dict[str, Any]], list[SynthCustomer]]:
    """Events (JSON-ready dicts in the contract schema, sorted by ``occurred_at``) and the truth
    about each customer, for ``customers`` customers active between ``start`` and ``end``."""
    if preset not in _PRESETS:
        raise SynthError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if customers < 0:
        raise SynthError(f"customers must be 0 or more (got {customers})")
    if start.tzinfo is None or end.tzinfo is None:
        raise SynthError("start and end must carry a UTC offset, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
    if end <= start:
        raise SynthError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    cfg = _PRESETS[preset]
    n_stores = cfg.default_stores if stores is None else stores
    if n_stores < 1:
        raise SynthError(f"stores must be at least 1 (got {stores})")
    local_start = start.astimezone(LOCAL_TZ)
    origin = local_start.replace(hour=0, minute=0, second=0, microsecond=0)
    origin_ts = int(origin.timestamp())
    frame = _Frame(origin_ts=origin_ts, start_d=(start.timestamp() - origin_ts) / DAY_S,
                   end_d=(end.timestamp() - origin_ts) / DAY_S, origin_weekday=origin.weekday(),
                   n_stores=n_stores, seed=seed, preset=preset)
    store_ids = [store_id(preset, i, cfg.store_names) for i in range(n_stores)]
    events: list[tuple[int, str, dict[str, Any]]] = []
    truth: list[SynthCustomer] = []
    lo_ts, hi_ts = start.timestamp(), end.timestamp()
    for idx in range(customers):
        sim = _CustomerSim(idx, cfg, frame, store_ids)
        for ts, event in sim.run():
            if lo_ts <= ts <= hi_ts:
                events.append((ts, event["event_id"], event))
        truth.append(sim.truth())
    events.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in events], truth


def store_id(preset: str, index: int, names: tuple[str, ...] = _STORE_NAMES) -> str:
    """``salon-downtown``, ``salon-riverside``, ... then ``salon-09``, ``salon-10``."""
    if index < len(names):
        return f"{preset}-{names[index]}"
    return f"{preset}-{index + 1:02d}"


def write_ndjson(events: Iterable[dict[str, Any]], path: Path) -> int:
    """Write one compact JSON object per line; return the number of events written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def write_truth(truth: Iterable[SynthCustomer], path: Path) -> int:
    """The true churn times (and latent traits), one JSON object per customer and line."""
    return write_ndjson((c.to_json() for c in truth), path)


class _CustomerSim:
    def __init__(self, idx: int, cfg: _Preset, frame: _Frame, store_ids: list[str]):
        self.cfg, self.frame, self.store_ids = cfg, frame, store_ids
        self.rng = rng = random.Random(f"churnwatch-synth/{frame.preset}/{frame.seed}/{idx}")
        self.customer_id = f"{cfg.prefix}-{idx:05d}"
        self.event_prefix = f"{cfg.prefix}-{frame.seed}-{idx:05d}"
        lo, hi = cfg.cadence_days
        self.cadence = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        self.mean_ticket = round(cfg.ticket_median * rng.lognormvariate(0.0, cfg.ticket_spread), 2)
        self.complainer = rng.random() < 0.12
        self.frailty = rng.lognormvariate(-0.245, 0.7)  # mean 1
        self.online = rng.uniform(cfg.online_floor, cfg.online_share) if cfg.online_share else 0.0
        weights = [1.0 / (i + 1) ** 0.6 for i in range(frame.n_stores)]
        self.home = rng.choices(range(frame.n_stores), weights)[0]
        self.favourite_staff = rng.randint(1, 5)
        self.one_time = rng.random() < cfg.one_time_share
        if rng.random() < 0.35:  # already a loyal customer when the period starts
            self.join = frame.start_d + rng.uniform(0.0, self.cadence)
            self.since = frame.start_d - rng.uniform(60.0, 1500.0)
        else:
            self.join = self.since = rng.uniform(frame.start_d, frame.end_d)
        self.h0 = -math.log(1.0 - cfg.annual_churn) / 365.0
        self.first_churn: float | None = None
        self.churns: list[float] = []
        self.returned = False
        self.seq = 0

    # -- the latent process -------------------------------------------------------------
    def run(self) -> list[tuple[int, dict[str, Any]]]:
        out: list[tuple[int, dict[str, Any]]] = []
        t, first = self.join, True
        while t < self.frame.end_d:
            occasions, churn = self._episode(t, first)
            if churn is not None and len(occasions) > 2 and self.rng.random() < _DRIFT_SHARE:
                self._drift(occasions, churn, t)
            silent_from = churn if churn is not None else math.inf
            for occ in sorted(occasions, key=lambda o: o.t):
                out.extend(self._render(occ, silent_from))
            if churn is None:
                break
            if self.first_churn is None:
                self.first_churn = churn
            self.churns.append(churn)
            if self.rng.random() >= self.cfg.return_share:
                break
            self.returned = True
            t, first = churn + self.rng.uniform(150.0, 400.0), False
        return out

    def _episode(self, t: float, first: bool) -> tuple[list[_Occasion], float | None]:
        """Occasions from ``t`` until the customer churns; the churn day, or None if the
        customer is still around at the end of the period."""
        rng, cfg = self.rng, self.cfg
        threshold, cum = rng.expovariate(1.0), 0.0
        occasions: list[_Occasion] = []
        complaints: list[_Complaint] = []
        silent: list[float] = []
        earliest = math.floor(t)
        while True:
            occ = self._occasion(t, earliest)
            earliest = math.floor(occ.t) + 1
            if occ.t >= self.frame.end_d:
                return occasions, None
            self._experience(occ, complaints, silent)
            occasions.append(occ)
            if first and self.one_time and len(occasions) == 1:
                churn = occ.t + rng.uniform(1.0, 3.0)
                return occasions, churn if churn < self.frame.end_d else None
            gap = self.cadence * rng.gammavariate(cfg.gap_shape, 1.0 / cfg.gap_shape)
            gap = max(1.0, gap / cfg.season[self._month(occ.t + gap / 2) - 1])
            if rng.random() < 0.04:  # holidays, illness: a long but innocent gap
                gap *= rng.uniform(1.5, 3.0)
            rate = self._hazard(occ.t + gap / 2, complaints, silent)
            if cum + rate * gap >= threshold:
                churn = occ.t + max(1.0, (threshold - cum) / rate)
                return occasions, churn if churn < self.frame.end_d else None
            cum += rate * gap
            t = occ.t + gap

    def _month(self, t: float) -> int:
        return datetime.fromtimestamp(self.frame.origin_ts + t * DAY_S, LOCAL_TZ).month

    def _hazard(self, x: float, complaints: list[_Complaint], silent: list[float]) -> float:
        boost = 1.0 + _NEWCOMER_BOOST * math.exp(-(x - self.since) / 60.0)
        extra = 0.0
        for c in complaints:
            if c.raised <= x:
                w = _SEVERITY_WEIGHT[c.severity]
                if c.resolved is not None and c.resolved <= x:
                    extra += w * _RESOLVED_FACTOR * math.exp(-(x - c.raised) / _RESOLVED_DECAY_DAYS)
                else:
                    extra += w * math.exp(-(x - c.raised) / _OPEN_DECAY_DAYS)
        for s in silent:
            if s <= x:
                extra += _SILENT_BAD * math.exp(-(x - s) / _SILENT_DECAY_DAYS)
        return self.h0 * self.frailty * boost * (1.0 + extra)

    def _occasion(self, t: float, earliest_day: int) -> _Occasion:
        """An occasion within three days of day ``t`` (not before ``earliest_day``), on a
        weekday picked in proportion to how busy the business is that day."""
        rng, cfg = self.rng, self.cfg
        online = rng.random() < self.online
        target = math.floor(t)
        days = [d for d in range(target - 3, target + 4) if d >= earliest_day] or [earliest_day]
        weights = [_JITTER[min(6, max(0, d - target + 3))]
                   * (1.0 if online else cfg.weekday_weight[(self.frame.origin_weekday + d) % 7])
                   for d in days]
        day = rng.choices(days, weights)[0]
        if online:
            hour = rng.uniform(7.0, 23.0)
        else:
            lo, hi = rng.choices(cfg.hours, [b - a for a, b in cfg.hours])[0]
            hour = rng.uniform(lo, hi - 1.0)
        if day + hour / 24.0 < self.frame.start_d:  # the period starts later that day
            day += 1
        store = self.home
        if self.frame.n_stores > 1 and rng.random() < 0.1:
            store = rng.randrange(self.frame.n_stores)
        return _Occasion(t=day + hour / 24.0, store=store, online=online)

    def _experience(self, occ: _Occasion, complaints: list[_Complaint], silent: list[float]) -> None:
        rng, cfg = self.rng, self.cfg
        bad = rng.random() < 0.07
        voiced = bad and rng.random() < (0.85 if self.complainer else 0.3)
        spurious = not bad and rng.random() < (0.08 if self.complainer else 0.01)
        if bad and not voiced:
            silent.append(occ.t)
        if voiced or spurious:
            if voiced:
                severity = rng.choices(("low", "medium", "high"), (0.3, 0.45, 0.25))[0]
            else:
                severity = rng.choices(("low", "medium"), (0.7, 0.3))[0]
            raised = occ.t + rng.uniform(0.1, 0.8)
            resolved = None
            if rng.random() < (0.5 if severity == "high" else 0.65):
                resolved = raised + rng.uniform(0.5, 10.0)
            complaint = _Complaint(severity, rng.choice(cfg.categories), raised, resolved)
            if spurious:  # a nitpick worries the shop more than the customer
                complaint = _Complaint(severity, complaint.category, raised, raised)
            complaints.append(complaint)
            occ.complaint = complaint
        if bad and rng.random() < cfg.refund_share:
            occ.refund = rng.uniform(0.3, 1.0)
        elif cfg.routine_refund and rng.random() < cfg.routine_refund:
            occ.refund = rng.uniform(0.2, 1.0)  # sent back: wrong size, changed mind

    def _drift(self, occasions: list[_Occasion], churn: float, start: float) -> None:
        """Thin out and cheapen the occasions of the last few cadences before ``churn``."""
        rng = self.rng
        span = max(30.0, self.cadence * rng.uniform(2.5, 4.0))
        span = min(span, churn - start)
        if span <= 1.0:
            return
        w0, stretch = churn - span, rng.uniform(0.6, 1.2)
        keep: list[_Occasion] = occasions[:1]  # the first visit of an episode always happens
        for occ in occasions[1:]:
            if occ.t > w0:
                u = (occ.t - w0) / span
                moved = w0 + span * (u + stretch * u * u)
                occ.ticket_factor = 1.0 - 0.6 * u
                if moved < churn - 2.0:
                    shift = math.floor(moved) - math.floor(occ.t)
                    occ.t += shift
                    if occ.complaint is not None:  # the complaint follows its visit
                        occ.complaint.raised += shift
                        if occ.complaint.resolved is not None:
                            occ.complaint.resolved += shift
                elif occ.complaint is None:
                    continue  # this visit never happens
            keep.append(occ)
        occasions[:] = keep

    def truth(self) -> SynthCustomer:
        churn_at = None
        if self.first_churn is not None:
            churn_at = datetime.fromtimestamp(self.frame.origin_ts + self.first_churn * DAY_S, UTC)
        return SynthCustomer(customer_id=self.customer_id, store_id=self.store_ids[self.home],
                             cadence_days=round(self.cadence, 2), mean_ticket=self.mean_ticket,
                             churn_at=churn_at, complainer=self.complainer,
                             one_time=self.one_time, returned=self.returned,
                             churns=tuple(datetime.fromtimestamp(self.frame.origin_ts + c * DAY_S,
                                                                 UTC) for c in self.churns),
                             gap_shape=self.cfg.gap_shape)

    # -- rendering ------------------------------------------------------------------------
    def _render(self, occ: _Occasion, silent_from: float) -> list[tuple[int, dict[str, Any]]]:
        rng, cfg = self.rng, self.cfg
        out: list[tuple[int, dict[str, Any]]] = []
        channel = cfg.online_channel if occ.online else "in_store"
        store = self.store_ids[occ.store]
        staff = None if occ.online else f"{cfg.staff_prefix}-{occ.store + 1}{self._staff_no()}"
        t, purchase = occ.t, True
        if not occ.online and rng.random() < cfg.visit_share:
            service, minutes = rng.choice(cfg.services)
            duration = float(max(10, round(minutes * rng.uniform(0.8, 1.3))))
            out.append(self._event(t, "visit", store, channel, service=service, staff_id=staff,
                                   duration_minutes=duration))
            t += duration / 1440.0
            purchase = rng.random() < cfg.purchase_share
        amount = 0.0
        if purchase:
            amount = self._ticket(occ)
            quantity = 1 + min(9, int(rng.expovariate(1.0 / max(cfg.quantity_mean - 1.0, 0.1))))
            fields: dict[str, Any] = {"amount": amount, "currency": CURRENCY, "quantity": quantity}
            if staff is not None:
                fields["staff_id"] = staff
            out.append(self._event(t, "transaction", store, channel, **fields))
        c = occ.complaint
        if c is not None:
            complaint_id = f"cmp-{self.event_prefix}-{self.seq:04d}"
            base = {"severity": c.severity, "category": c.category, "complaint_id": complaint_id}
            out.append(self._event(c.raised, "complaint", store, channel, status="open", **base))
            if c.resolved is not None and c.resolved < silent_from:
                out.append(self._event(c.resolved, "complaint", store, channel, status="resolved",
                                       **base))
        if occ.refund is not None and amount > 0:
            when = (c.raised if c is not None else t) + rng.uniform(0.05, 3.0)
            if when < silent_from:
                refund = -round(max(cfg.ticket_step, amount * occ.refund), 2)
                out.append(self._event(when, "transaction", store, channel, amount=refund,
                                       currency=CURRENCY, quantity=1))
        return out

    def _staff_no(self) -> int:
        return self.favourite_staff if self.rng.random() < 0.7 else self.rng.randint(1, 6)

    def _ticket(self, occ: _Occasion) -> float:
        cfg = self.cfg
        x = self.mean_ticket * occ.ticket_factor * self.rng.lognormvariate(0.0, cfg.ticket_noise)
        month = datetime.fromtimestamp(self.frame.origin_ts + occ.t * DAY_S, LOCAL_TZ).month
        if month == 12:
            x *= 1.15
        return round(max(cfg.ticket_step, round(x / cfg.ticket_step) * cfg.ticket_step), 2)

    def _event(self, t: float, kind: str, store: str, channel: str, **fields: Any
               ) -> tuple[int, dict[str, Any]]:
        ts = self.frame.origin_ts + round(t * DAY_S)
        self.seq += 1
        event: dict[str, Any] = {
            "event_id": f"{self.event_prefix}-{self.seq:04d}",
            "type": kind,
            "customer_id": self.customer_id,
            "occurred_at": datetime.fromtimestamp(ts, LOCAL_TZ).isoformat(),
            "store_id": store,
            "channel": channel,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        return ts, event
