"""What staff receive once churnwatch is live, and how often it is right: generated histories
of each business type, a year imported at go-live, then weeks of live operation replayed a day
at a time through the shared scoring engine (the packaged model, or ``CHURNWATCH_MODEL``'s;
the business type's packaged rules and tier thresholds — the generator's ``eshop`` is an
``online`` business —, or ``--tiers``) and the notifier's own episode policy
(``decide_episode``, ``claim``), with the packaged routing: high is e-mailed and texted at
once, medium goes into the owner's morning digest (left out when the customer is no longer at
medium by then), a genuine return from high after an alert is one "won back" e-mail.

    .venv/bin/python -m bench.live_alerts [--customers 2000] [--weeks 8] [--tiers ...]
        [--business default] [--end DATE] [--closed FIRST..LAST ...] [preset ...]

Per 1,000 customers active in the period (seen in the 60 days before its middle), each week:
high alerts, digest entries and won-back e-mails; and the share of alerted customers who
then made no visit, purchase or complaint within 60 days (the training label) against the
share of all active customers who did not. Customers are assessed at each of their events and
at the end of every day (silence); the settle window and quiet hours, which delay within a day,
are left out. Pure computation: no broker, Redis or notifier process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from services.common.events import validate_event
from services.common.riskchange import Cause, RiskChange
from services.common.settings import load_settings
from services.notifier.policy import ALERT, WON_BACK, Episode, claim, decide_episode
from services.scoring.activity import activity_from_event
from services.scoring.closures import Closures
from services.scoring.engine import Engine, Subject
from services.scoring.features import DAY_MS, Activity
from services.scoring.model import load_model
from services.scoring.rules import BUSINESS_TYPES, load_rules
from services.scoring.tiers import Thresholds
from services.synth import PRESETS, generate
from services.training.dataset import churned

HORIZON_DAYS = 60
EPISODE_QUIET_MS = 7 * DAY_MS  # CHURNWATCH_ALERT_EPISODE_QUIET's default
BUSINESS_OF = {"eshop": "online"}  # a preset -> the business type it stands for
OWNER = "owner|email"  # one recipient and channel stand for the owner's e-mail and SMS


@dataclass
class Outcome:
    preset: str
    customers: int
    weeks: int
    active: int = 0
    base_churn: float = 0.0
    alerts: list[tuple[str, int]] = field(default_factory=list)   # (customer, when) high
    digests: list[tuple[str, int]] = field(default_factory=list)  # listed in a morning digest
    won_back: list[tuple[str, int]] = field(default_factory=list)

    def per_week(self, items: Sequence[object]) -> float:
        return len(items) / self.weeks / max(self.active, 1) * 1000


def _change(previous: str, tier: str, kind: str, event_type: str | None) -> RiskChange:
    """The fields of a risk change the episode policy reads (the tiers and the cause)."""
    cause: dict[str, Any] = {"kind": kind, "event_type": event_type if kind == "event" else None}
    fields: dict[str, Any] = {"previous_tier": previous, "tier": tier,
                              "cause": Cause.model_construct(**cause)}
    return RiskChange.model_construct(**fields)


def simulate(preset: str, *, customers: int, weeks: int, seed: int = 5,
             end: datetime = datetime(2026, 6, 1, tzinfo=UTC),
             thresholds: Thresholds | None = None, business: str | None = None,
             closed: Sequence[tuple[date, date]] = ()
             ) -> tuple[Outcome, dict[str, list[Activity]]]:
    """Replay ``weeks`` of live operation after a year's import (see the module);
    ``business``: the business type every preset is scored as (None: the one it stands for);
    ``closed``: days every store is closed (``Store.closures``, first and last day), whose
    silence does not count. The live weeks end 60 days (the labels' horizon) before ``end``."""
    closures = Closures.of(closed, None)
    start_live = end - timedelta(days=7 * weeks + HORIZON_DAYS)  # labels need the horizon after
    events, _ = generate(preset=preset, customers=customers,
                         start=start_live - timedelta(days=365), end=end, seed=seed)
    acts: dict[str, list[Activity]] = {}
    for e in events:
        ev, _ = validate_event(e)
        if ev is not None:
            acts.setdefault(ev.customer_id, []).append(activity_from_event(ev))
    for a in acts.values():
        a.sort(key=lambda x: (x.ts, x.event_id))
    times = {c: [x.ts for x in a] for c, a in acts.items()}
    business = business or BUSINESS_OF.get(preset, preset)
    engine = Engine(load_model(load_settings().model), thresholds or Thresholds.from_settings(
                        load_settings(business_type=business)),
                    rules=load_rules(None, business if business in BUSINESS_TYPES else "default"))
    tiers: dict[str, tuple[str, int]] = {}
    episodes: dict[str, Episode] = {}
    out = Outcome(preset, customers, weeks)
    seq = 0

    def assess(cids: Sequence[str], now: int) -> dict[str, str]:
        subjects = []
        for c in cids:
            i = bisect_right(times[c], now)
            if i:
                tier, since = tiers.get(c, (None, None))
                subjects.append(Subject(c, acts[c][:i], first_seen_ms=times[c][0], tier=tier,
                                        tier_since_ms=since, closures=closures))
        return {s.customer_id: a.tier for s, a in zip(subjects, engine.assess(subjects, now),
                                                       strict=True)} if subjects else {}

    def changed(c: str, tier: str, now: int, kind: str, event_type: str | None,
                digest: dict[str, int], *, live: bool = True) -> None:
        nonlocal seq
        previous = tiers.get(c, ("low", 0))[0]
        if tier == previous:
            return
        tiers[c] = (tier, now)
        seq += 1
        decision, ep = decide_episode(episodes.get(c, Episode()), _change(previous, tier, kind, event_type),
                                      f"e{seq}", now_ms=now, quiet_ms=EPISODE_QUIET_MS)
        if decision == ALERT and tier == "high":
            told, ep = claim(ep, "summary" if not live else f"a{seq}", [OWNER], "high")
            if told and live:
                out.alerts.append((c, now))
        elif decision == ALERT:  # medium: the morning digest (it does not count as told)
            digest[c] = now
        elif decision == WON_BACK:
            out.won_back.append((c, now))
        episodes[c] = ep

    go_live = int(start_live.timestamp() * 1000)
    cids = sorted(acts)
    for c, tier in assess(cids, go_live).items():  # the import: one summary, not counted here
        changed(c, tier, go_live, "silence", None, {}, live=False)
    digest: dict[str, int] = {}
    for day in range(weeks * 7):
        d0 = go_live + day * DAY_MS
        for c in sorted(digest):  # the morning digest: whoever is still at medium in it
            if episodes[c].open and episodes[c].tier == "medium":
                out.digests.append((c, d0))
        digest = {}
        todays = sorted((x.ts, c, x.kind) for c in cids
                        for x in acts[c][bisect_right(times[c], d0):bisect_right(times[c], d0 + DAY_MS)])
        for ts, c, kind in todays:
            changed(c, assess([c], ts)[c], ts, "event", kind, digest)
        for c, tier in assess(cids, d0 + DAY_MS).items():  # the day's silence
            changed(c, tier, d0 + DAY_MS, "silence", None, digest)
    mid = go_live + weeks * 7 * DAY_MS // 2
    seen = [c for c in cids if bisect_right(times[c], mid) > bisect_right(times[c], mid - HORIZON_DAYS * DAY_MS)]
    out.active = len(seen)
    out.base_churn = sum(churned(acts[c], mid, HORIZON_DAYS) for c in seen) / max(len(seen), 1)
    return out, acts


def _churned_share(items: Sequence[tuple[str, int]], acts: dict[str, list[Activity]]) -> float | None:
    if not items:
        return None
    return sum(churned(acts[c], t, HORIZON_DAYS) for c, t in items) / len(items)


def _days_since_seen(items: Sequence[tuple[str, int]], acts: dict[str, list[Activity]]) -> float | None:
    days = []
    for c, t in items:
        i = bisect_right([x.ts for x in acts[c]], t)
        days.append((t - acts[c][i - 1].ts) / DAY_MS if i else 0.0)
    return statistics.median(days) if days else None


def row(o: Outcome, acts: dict[str, list[Activity]]) -> dict[str, float | int | str | None]:
    return {"preset": o.preset, "active": o.active, "base_churn": o.base_churn,
            "high_per_week": o.per_week(o.alerts), "high_churned": _churned_share(o.alerts, acts),
            "high_days_since_seen": _days_since_seen(o.alerts, acts),
            "digest_per_week": o.per_week(o.digests),
            "digest_churned": _churned_share(o.digests, acts),
            "digest_days_since_seen": _days_since_seen(o.digests, acts),
            "won_back_per_week": o.per_week(o.won_back)}


def _pct(v: object) -> str:
    return "–" if v is None else f"{float(v):.0%}"  # type: ignore[arg-type]


def _num(v: object) -> str:
    return "–" if v is None else f"{float(v):.0f}"  # type: ignore[arg-type]


def table(rows: Sequence[dict[str, float | int | str | None]]) -> str:
    lines = ["| business | active customers | churned within 60 d (all active) | high alerts a week per 1,000 | of them churned | days since last seen at the alert (median) | digest entries a week per 1,000 | of them churned | days since last seen (median) | won back a week per 1,000 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['active']} | {_pct(r['base_churn'])} | "
                     f"{float(r['high_per_week'] or 0):.1f} | {_pct(r['high_churned'])} | "
                     f"{_num(r['high_days_since_seen'])} | {float(r['digest_per_week'] or 0):.1f} | "
                     f"{_pct(r['digest_churned'])} | {_num(r['digest_days_since_seen'])} | "
                     f"{float(r['won_back_per_week'] or 0):.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--tiers", default="", metavar="ME,MX,HE,HX",
                        help="CHURNWATCH_TIER_MEDIUM_ENTER, _MEDIUM_EXIT, _HIGH_ENTER, _HIGH_EXIT "
                             "(default: the business type's)")
    parser.add_argument("--business", choices=BUSINESS_TYPES, default=None,
                        help="score every preset as this business type (CHURNWATCH_BUSINESS_TYPE; "
                             "default: the type each preset stands for)")
    parser.add_argument("--end", type=date.fromisoformat, default=date(2026, 6, 1),
                        help="the live weeks end 60 days before this date (default 2026-06-01: "
                             "live from late January)")
    parser.add_argument("--closed", action="append", default=[], metavar="FIRST..LAST",
                        help="days every store is closed, e.g. 2026-07-01..2026-08-31 "
                             "(repeatable): their silence does not count")
    parser.add_argument("presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args(argv)
    closed = []
    for spec in args.closed:
        first, _, last = spec.partition("..")
        try:
            closed.append((date.fromisoformat(first), date.fromisoformat(last)))
        except ValueError:
            parser.error(f"--closed {spec!r}: give two ISO dates, FIRST..LAST")
    tiers = None
    if args.tiers:
        me, mx, he, hx = (float(v) for v in args.tiers.split(","))
        tiers = Thresholds(me, mx, he, hx)
    rows = []
    for preset in args.presets:
        outcome, acts = simulate(preset, customers=args.customers, weeks=args.weeks, seed=args.seed,
                                 thresholds=tiers, business=args.business, closed=closed,
                                 end=datetime.combine(args.end, time(0), UTC))
        rows.append(row(outcome, acts))
        print(f"{preset}: done", file=sys.stderr, flush=True)
    as_type = f", scored as {args.business}" if args.business else ""
    as_type += "".join(f", closed {a}..{b}" for a, b in closed)
    as_type += f", live weeks ending 60 days before {args.end}" if args.end != date(2026, 6, 1) else ""
    print(f"{args.customers} generated customers a business, a year imported, then "
          f"{args.weeks} weeks live (seed {args.seed}, tiers {args.tiers or 'of the business type'}"
          f"{as_type}):\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
