"""Staff actions as the API and the console record them (:func:`record_action`), and a
customer's complaints marked resolved: the resolution events a POS would send.

A complaint is closed in churnwatch by a later complaint event with the same ``complaint_id``
and ``status=resolved`` (the contract's events). When staff record the win-back action
``complaint_resolved`` (API or console), the API publishes those events for the customer's
open complaints — validated, then published and counted by ingestion's own path
(``Resources.intake``) as POST /v1/events does, before the action is recorded — so that the
customer's score, reasons and page stop telling an unresolved complaint once the scorer has
read them (usually well under a second).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.events import (
    DEFAULT_TENANT,
    AnyEvent,
    TimeBounds,
    event_to_json,
    validate_event_in,
)
from services.common.timefmt import iso_ms_at, now_ms
from services.records import alertacks, winback
from services.records.holdout import holdout
from services.scoring.summary import Summary
from services.state.store import read_states
from services.web.deps import Resources


class NoSuchComplaint(ValueError):
    """The complaint named is not open for this customer."""


def resolution_events(summary: Summary, *, tenant: str, customer_id: str, at_ms: int,
                      action_id: str, store_id: str | None, only: str | None = None
                      ) -> list[dict[str, Any]]:
    """The resolution events (contract form) of the customer's complaints open at ``at_ms``
    (only ``only``'s when given: NoSuchComplaint if it is not open), with event ids derived
    from the action's (a redelivery changes nothing).

    Each is timed at the customer's newest event, or a millisecond after the complaint's
    newest event when that is later (a resolution must be the complaint's newest event) —
    not at ``at_ms``: an event "now" would read as the customer being seen now (last seen,
    days since the last complaint) and move their activity windows, though the customer did
    nothing. It is written at the customer's UTC offset (their newest event's), so that it
    lands on the customer's own day and leaves the clock their days are read on as it was.
    The staff action keeps the time it was recorded."""
    open_now = summary.open_complaints(at_ms)
    if only is not None:
        open_now = [c for c in open_now if c[0] == only]
        if not open_now:
            known = ", ".join(repr(ref) for ref, _, _ in summary.open_complaints(at_ms))
            raise NoSuchComplaint(
                f"customer {customer_id!r} has no open complaint {only!r}; "
                + (f"open: {known}" if known else "none is open")
                + " (leave complaint_id out to resolve every open one)")
    out = []
    for n, (ref, newest, _) in enumerate(sorted(open_now)):
        event: dict[str, Any] = {
            "event_id": f"resolved-{action_id}-{n}", "type": "complaint",
            "customer_id": customer_id,
            "occurred_at": iso_ms_at(max(summary.last_ts or newest, newest + 1),
                                     summary.tz_minutes),
            "complaint_id": ref, "status": "resolved"}
        if tenant != DEFAULT_TENANT:
            event["tenant_id"] = tenant
        if store_id:
            event["store_id"] = store_id
        out.append(event)
    return out


async def resolve_complaints(res: Resources, *, tenant: str,
                             customer_id: str, at_ms: int, action_id: str,
                             store_id: str | None, store_bound: bool,
                             only: str | None = None) -> list[str]:
    """Publish the resolution events of the customer's open complaints (see
    :func:`resolution_events`); returns the complaint ids resolved. Raises NoSuchComplaint,
    ValueError (an event the edge refuses: its message) or BrokerUnavailable (nothing was
    acknowledged: the caller records nothing and asks for a retry)."""
    [state] = await read_states(res.redis, res.keys, [(tenant, customer_id)], ["sm"])
    try:
        summary = Summary.decode(state.get("sm") or "")
    except ValueError:  # none yet, or one this version cannot read: nothing known open
        summary = Summary.empty()
    drafts = resolution_events(summary, tenant=tenant, customer_id=customer_id, at_ms=at_ms,
                               action_id=action_id, store_id=store_id, only=only)
    s = res.settings
    bounds = TimeBounds(datetime.now(UTC), timedelta(days=s.max_event_age_days),
                        timedelta(seconds=s.max_event_future_seconds))
    events: list[AnyEvent] = []
    for i, draft in enumerate(drafts):
        event, _, errors = validate_event_in(draft, bounds, i)
        if event is None:
            raise ValueError("; ".join(f"{e.field}: {e.message}" for e in errors))
        events.append(event)
    if events:
        await res.intake.accept(res, events, [(e.customer_id.encode(), event_to_json(e))
                                              for e in events], store_bound=store_bound)
    return [str(d["complaint_id"]) for d in drafts]


async def record_action(res: Resources, *, tenant: str, customer_id: str,
                        body: dict[str, Any], tier: str | None, store_id: str | None,
                        store_bound: bool, complaint_id: str | None = None) -> dict[str, Any]:
    """Record a staff action (the API's and the console's one way): "now" by the configured
    clock, a ``complaint_resolved`` closing the complaints first (:func:`resolve_complaints`;
    its errors propagate and nothing is recorded), then the action itself, counted, then the
    customer's alerts not acknowledged yet acknowledged by the staff member who acted
    (``acknowledged_alerts``)."""
    at = await now_ms(res.settings, res.redis, res.keys, tenant)
    action_id = winback.new_action_id()
    stored = dict(body)
    if body["action"] == "complaint_resolved":  # the resolution events first: nothing half-done
        stored["resolved_complaints"] = await resolve_complaints(
            res, tenant=tenant, customer_id=customer_id, at_ms=at, action_id=action_id,
            store_id=store_id, store_bound=store_bound, only=complaint_id)
    action = await winback.record(
        res.redis, res.keys, tenant=tenant, customer_id=customer_id, body=stored, at_ms=at,
        store_id=store_id, holdout=holdout(tier, tenant, customer_id, res.settings.holdout_share),
        retention=res.settings.retention, action_id=action_id)
    res.metrics.winback_actions.labels(body["action"]).inc()
    # acting on the customer is having seen their alerts: acknowledged (the escalation stops)
    action["acknowledged_alerts"] = await alertacks.acknowledge_outstanding(
        res.redis, res.keys, tenant=tenant, customer_id=customer_id,
        by=str(body["staff_id"]), retention=res.settings.retention)
    return action
