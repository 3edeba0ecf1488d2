"""Manager views: churn by month and store, tiers over time, win-back results by action and by
staff member with the holdout uplift — as SVG charts, each with a CSV download. For admins and
staff whose profile role is ``manager``; scoped to the session's tenant and stores."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.common.timefmt import now_ms
from services.console import charts, i18n
from services.console.customers import _staff_names
from services.console.sessions import Session
from services.console.web import current_session, here, page, to_sign_in
from services.records import churn, population, tierhistory, winback
from services.records.churn import Definition, Segment
from services.scoring.features import DAY_MS
from services.web.deps import Res, Resources
from services.web.formats import csv_response

router = APIRouter(include_in_schema=False)
MONTHS = 6
TIER_DAYS = 30
WINBACK_DAYS = 90
REPORTS = ("churn", "tiers", "winback_by_action", "winback_by_staff")


async def _data(res: Resources, session: Session) -> dict[str, Any]:
    s = res.settings
    stores = frozenset(session.stores) if session.stores is not None else None
    now = await now_ms(s, res.redis, res.keys, session.tenant)
    pop = await population.load(res.redis, res.keys, tenant=session.tenant, stores=stores,
                                max_customers=s.analytics_max_customers)
    d = Definition(s.churn_definition, s.churn_inactive_days, s.churn_cadence_multiple,
                   s.churn_min_days)
    by: Segment = "store" if stores is None or len(stores) > 1 else "all"
    churn_rows = churn.churn_table(pop, d, period="month", count=MONTHS, by=by, now_ms=now)
    one_store = next(iter(stores)) if stores is not None and len(stores) == 1 else None
    tiers = await tierhistory.snapshot_and_read(res.redis, res.keys, tenant=session.tenant,
                                                store=one_store, days=TIER_DAYS, now_ms=now)
    report, _ = await winback.report(res.redis, res.keys, tenant=session.tenant, stores=stores,
                                     since_ms=now - WINBACK_DAYS * DAY_MS, until_ms=now,
                                     now_ms=now, window_days=s.winback_attribution_days,
                                     limit=50_000)
    return {"churn": churn_rows, "tiers": tiers["history"], "tiers_now": tiers["current"],
            "winback": report, "winback_by_action": report["by_action"],
            "winback_by_staff": report["by_staff"]}


def _refused(request: Request, session: Session) -> Response:
    t = i18n.words(session.locale)
    return page("message.html.j2", request, locale=session.locale, status=403, session=session,
                csrf=session.csrf, heading=t["manager"], message=t["managers_only"],
                back="/console/at-risk")


@router.get("/console/manager")
async def manager_page(request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    if not session.manages:
        return _refused(request, session)
    t = i18n.words(session.locale)
    data = await _data(res, session)
    months = sorted({r["period_start"][:7] for r in data["churn"]})
    running = {r["period_start"][:7] for r in data["churn"] if not r["complete"]}
    labels = [f"{m} …" if m in running else m for m in months]
    segments = sorted({r["segment"] for r in data["churn"]})
    # every store's chart on one scale, said on each one's axis: a longer bar is a higher
    # churn rate whichever store's chart it is in (each chart was scaled to its own largest)
    top = charts.nice_top(max([r["churn_rate"] for r in data["churn"] if r["complete"]]
                              or [0.0]))
    churn_charts = []
    for segment in segments:
        # a month still running has no churn rate yet (its churns are not known until the
        # inactivity window has passed): a gap, not a bar at 0 %
        rate = {r["period_start"][:7]: r["churn_rate"] for r in data["churn"]
                if r["segment"] == segment and r["complete"]}
        churn_charts.append((segment, charts.hbars(f"{t['churn_rate']} · {segment}", labels,
                                                   [rate.get(m) for m in months], percent=True,
                                                   top=top)))
    history = data["tiers"]
    tiers_chart = charts.stacked(t["tiers_over_time"], [h["date"] for h in history],
                                 {tier: [h.get(tier, 0) for h in history]
                                  for tier in ("high", "medium", "low")},
                                 names={tier: t[tier] for tier in ("high", "medium", "low")})
    # bars named as people read them: the action in their language, the staff member by name
    by_action = data["winback_by_action"]
    action_chart = charts.hbars(t["winback_by_action"],
                                [t.get(f"action_{r['key']}", r["key"]) for r in by_action],
                                [r["winback_rate"] for r in by_action], percent=True,
                                missing=t["rate_pending"])
    by_staff = data["winback_by_staff"]
    names = await _staff_names(res, session.tenant, {str(r["key"]) for r in by_staff})
    staff_chart = charts.hbars(t["winback_by_staff"],
                               [names.get(str(r["key"]), str(r["key"])) for r in by_staff],
                               [r["winback_rate"] for r in by_staff], percent=True,
                               missing=t["rate_pending"])
    return page("manager.html.j2", request, locale=session.locale, session=session,
                csrf=session.csrf, churn_charts=churn_charts, tiers_chart=tiers_chart,
                churn_top=charts.tick_text(top, percent=True),
                tiers_now=data["tiers_now"], action_chart=action_chart if by_action else None,
                staff_chart=staff_chart if by_staff else None,
                tiers_chart_shown=bool(history),
                winback=data["winback"], months=MONTHS, winback_days=WINBACK_DAYS,
                here="/console/manager")


@router.get("/console/manager/{report}.csv")
async def manager_csv(report: str, request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    if not session.manages:
        return _refused(request, session)
    if report not in REPORTS:
        t = i18n.words(session.locale)
        return page("message.html.j2", request, locale=session.locale, status=404,
                    session=session, csrf=session.csrf, heading=t["manager"],
                    message=t["page_not_found"], back="/console/manager",
                    back_text=t["manager"])
    data = await _data(res, session)
    return csv_response(data[report], report)
