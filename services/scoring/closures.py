"""Days a store is closed, which do not count as a customer's silence.

A school shut for the summer, a restaurant closed for August, a salon under renovation: every
customer stops coming at once, and a week after the doors close the model would see each of
them as away — an alert storm about people who will be back when the store opens. A store's
closures (``PUT /v1/stores/{store_id}``, ``closures``: local calendar days, first and last
inclusive, on the store's time zone) stop that clock: a customer's features are computed as if
"now" were earlier by the closed time since their last activity, so the days since their last
visit count open days only, and every window ends where it would have without the closure.

Pure computation; the scorer and the API build a :class:`Closures` per store from its record.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

from services.common.timefmt import named_zone

if TYPE_CHECKING:
    from services.scoring.rules import RuleSet

DAY_MS = 86_400_000


class Closures:
    """A store's closed periods as UTC instants: sorted, merged ``[start, end)`` spans."""

    __slots__ = ("_ends", "_spans")

    def __init__(self, spans: Iterable[tuple[int, int]]):
        merged: list[tuple[int, int]] = []
        for start, end in sorted(s for s in spans if s[1] > s[0]):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self._spans = merged
        self._ends = [e for _, e in merged]

    @classmethod
    def of(cls, periods: Iterable[tuple[date, date]], zone: tzinfo | None) -> Closures | None:
        """From local calendar days (``first``, ``last``, both closed) on ``zone`` (None: UTC):
        closed from the first day's midnight to the midnight after the last. None when there
        are no periods (nothing to shift)."""
        z = zone or UTC
        spans = []
        for first, last in periods:
            start = datetime.combine(first, time(0), z)
            end = datetime.combine(last + timedelta(days=1), time(0), z)
            spans.append((int(start.timestamp() * 1000), int(end.timestamp() * 1000)))
        out = cls(spans)
        return out if out._spans else None

    def closed_ms(self, since_ms: int, until_ms: int) -> int:
        """How much of ``(since_ms, until_ms]`` the store was closed, in milliseconds."""
        if until_ms <= since_ms:
            return 0
        total = 0
        i = bisect_right(self._ends, since_ms)  # the first span ending after since_ms
        spans = self._spans
        while i < len(spans):
            start, end = spans[i]
            if start >= until_ms:
                break
            total += min(end, until_ms) - max(start, since_ms)
            i += 1
        return total

    def open_until(self, since_ms: int, open_ms: int) -> int:
        """The instant by which the store has been open ``open_ms`` after ``since_ms``: a
        horizon of open time (a label's "within 90 days" that a summer break does not use up)."""
        end = since_ms + open_ms
        i = bisect_right(self._ends, since_ms)
        spans = self._spans
        while i < len(spans) and spans[i][0] < end:
            start, stop = spans[i]
            end += stop - max(start, since_ms)
            i += 1
        return end

    def open_now(self, last_ms: int | None, now_ms: int) -> int:
        """"Now" for a customer last active at ``last_ms``: ``now_ms`` less the time the store
        was closed since then (``now_ms`` itself without a last activity)."""
        if last_ms is None:
            return now_ms
        return now_ms - self.closed_ms(last_ms, now_ms)

    def __len__(self) -> int:
        return len(self._spans)

    def __repr__(self) -> str:
        return f"Closures({self._spans!r})"


def only_store(store_ids: Collection[str]) -> str | None:
    """The store a customer whose events name none belongs to: the tenant's only store, when it
    has exactly one on record (a school, a single salon whose POS sends no ``store_id``:
    its closed days and time zone are theirs); with none or several, none."""
    return next(iter(store_ids)) if len(store_ids) == 1 else None


def home_store(store: str | None, profile: str | None, only: str | None) -> str | None:
    """The store whose closed days and clock count for a customer, the one rule the scorer,
    the API's point-in-time reads and ``churnwatch train`` share: their profile's
    ``store_id`` where one was read for them (only for a customer whose events name no
    store), else the store they have, else the tenant's only store (:func:`only_store`)."""
    return profile or store or only


class ClosedDaysMissing(NamedTuple):
    """A tenant judged by rules that expect closed days (``closed_days_expected``: a school's)
    whose holidays would read as every customer leaving: the rules' name, and the stores, on
    record or named by its customers' events, without any closed day on record (none: the
    tenant has no store at all). The scorer's log and metric, ``GET /v1/status`` and the
    console's Team page say so from :func:`closed_days_missing`."""

    rules: str
    stores: tuple[str, ...]

    def describe(self, tenant: str) -> str:
        """In words, for the scorer's log and ``GET /v1/status``."""
        named = ", ".join(self.stores[:10]) + (f" and {len(self.stores) - 10} more"
                                                if len(self.stores) > 10 else "")
        where = (f"no closed day is on record for its store{'s' * (len(self.stores) > 1)} "
                 f"{named}" if self.stores else "it has no store on record to hold them")
        return (f"tenant {tenant!r} is judged as a {self.rules}, whose rules expect closed "
                f"days, but "
                f"{where}; its holidays will read as customers leaving (a school's three weeks "
                "into a break: every regular student high). Enter them with "
                "PUT /v1/stores/{store_id} (closures; never_closes for a store that never "
                "closes) or on the console's Team page")


def closed_days_missing(rules: RuleSet | None, has_closures: Mapping[str, bool]
                        ) -> ClosedDaysMissing | None:
    """Whether a tenant judged by ``rules`` lacks the closed days they expect. Its stores
    (``has_closures``: each store on record or named by its customers' events, and whether
    its record says when it closes: a closed day, or ``never_closes``): those without,
    sorted; a tenant with no store at all lacks them everywhere. None when nothing is missing
    or the rules expect nothing."""
    if rules is None or not rules.closed_days_expected:
        return None
    lacking = tuple(sorted(s for s, has in has_closures.items() if not has))
    if has_closures and not lacking:
        return None
    return ClosedDaysMissing(rules.name, lacking)


class StoreCalendar(NamedTuple):
    """What the scorer keeps of a store's record: its zone's name, its closed days, and
    whether it never closes (``Store.never_closes``)."""

    timezone: str
    closures: tuple[tuple[date, date], ...] = ()
    never_closes: bool = False

    @property
    def on_record(self) -> bool:
        """Whether the record says when it closes (``Store.closed_days_on_record``)."""
        return bool(self.closures) or self.never_closes


def closed_periods(raw: Any) -> tuple[tuple[date, date], ...]:
    """The ``(first, last)`` days of a stored store's ``closures`` (a JSON list of objects
    with ISO dates ``first`` and ``last``); anything else in it is skipped, never raised on
    (the API validated what it stored)."""
    out: list[tuple[date, date]] = []
    if not isinstance(raw, list):
        return ()
    for c in raw:
        try:
            first, last = date.fromisoformat(c["first"]), date.fromisoformat(c["last"])
        except (TypeError, KeyError, ValueError):
            continue
        if first <= last:
            out.append((first, last))
    return tuple(out)


def calendar_of(raw: str | bytes | None) -> StoreCalendar | None:
    """A stored store record (its JSON) as the scorer keeps it; None when it is not a readable
    JSON object."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return StoreCalendar(str(doc.get("timezone") or "UTC"), closed_periods(doc.get("closures")),
                         doc.get("never_closes") is True)


NEVER_CLOSED = Closures(())  # a store that never closes: none, and known to be none


def calendar_closures(calendar: StoreCalendar) -> Closures | None:
    """A store's :class:`Closures` on its own time zone: :data:`NEVER_CLOSED` for a store
    that never closes (its closed days are known: none), None when it has none on record."""
    if not calendar.closures:
        return NEVER_CLOSED if calendar.never_closes else None
    return Closures.of(calendar.closures, named_zone(calendar.timezone))
