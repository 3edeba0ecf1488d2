"""Time as text: the one owner of RFC 3339 / ISO-8601 formatting (UTC written ``Z``), epoch
milliseconds <-> RFC 3339, and "now" by the configured clock.

Every module that writes a timestamp for people or for other programs (API answers, CloudEvents,
logs, ledgers, webhook records, sinks, the demo feed) formats it here, so one instant has one
spelling everywhere.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:  # annotations only: this module is imported by the lowest layers
    from redis.asyncio import Redis

    from services.common.redisconn import Keys
    from services.common.settings import Settings

Timespec = Literal["auto", "seconds", "milliseconds", "microseconds"]


def rfc3339(dt: datetime, timespec: Timespec = "auto") -> str:
    """``dt`` (timezone-aware) in ISO-8601 / RFC 3339, its offset as given; UTC written ``Z``."""
    return dt.isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_from_epoch_s(ts: float, timespec: Timespec = "auto") -> str:
    """Unix seconds as RFC 3339 UTC (``Z``)."""
    return rfc3339(datetime.fromtimestamp(ts, UTC), timespec)


def utc_now(timespec: Timespec = "auto") -> str:
    """The wall clock now as RFC 3339 UTC (``Z``)."""
    return rfc3339(datetime.now(UTC), timespec)


def iso_ms(ms: str | int | float | None) -> str | None:
    """Epoch milliseconds (a number or its text, as Redis keeps it) as RFC 3339 UTC; None for
    none."""
    if ms in (None, ""):
        return None
    return rfc3339(datetime.fromtimestamp(int(float(ms)) / 1000, UTC))


def iso_ms_at(ms: int, tz_minutes: int) -> str:
    """Epoch milliseconds as RFC 3339 on the wall clock ``tz_minutes`` east of UTC
    (``2026-11-23T18:45:00-05:00``; ``Z`` at 0, as :func:`iso_ms`): an event time as the shop
    wrote it, its day the shop's (services/scoring/summary.py counts days so)."""
    zone = UTC if not tz_minutes else timezone(timedelta(minutes=tz_minutes))
    return rfc3339(datetime.fromtimestamp(ms / 1000, zone))


@lru_cache(maxsize=512)
def named_zone(name: str | None) -> tzinfo | None:
    """The IANA zone ``name`` (a store's or a staff member's ``timezone``), or None when it is
    UTC, empty or unknown: nothing to shift."""
    if not name or name in ("UTC", "Etc/UTC", "Etc/GMT", "GMT", "Z"):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def offset_minutes(zone: tzinfo | None, ms: int) -> int:
    """``zone``'s UTC offset in minutes at the instant ``ms`` (summer time included)."""
    if zone is None:
        return 0
    off = datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).utcoffset()
    return off // timedelta(minutes=1) if off else 0


def local_iso(ms: str | int | None, tz_minutes: str | int | None) -> str | None:
    """:func:`iso_ms_at` of stored text (a state hash's ``last_ts`` and ``tz``): None for no
    time, UTC without an offset."""
    if ms in (None, ""):
        return None
    return iso_ms_at(int(float(ms)), int(tz_minutes or 0))


def for_people(ts: float, tz_minutes: int = 0) -> str:
    """Unix seconds as people read a time in a message or on a page: ``2026-12-04 17:11 UTC``
    (to the minute, the zone said), or on the wall clock ``tz_minutes`` east of UTC:
    ``2026-12-04 12:11 UTC-05:00``."""
    return " ".join(clock_parts(ts, tz_minutes))


def clock_parts(ts: float, tz_minutes: int = 0) -> tuple[str, str]:
    """:func:`for_people`'s two halves, for a page that sets the zone apart (the console's
    timeline and alerts): ``("2026-12-04 12:11", "UTC-05:00")``."""
    if not tz_minutes:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M"), "UTC"
    hours, minutes = divmod(abs(tz_minutes), 60)
    zone = timezone(timedelta(minutes=tz_minutes))
    return (datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M"),
            f"UTC{'+' if tz_minutes > 0 else '-'}{hours:02d}:{minutes:02d}")


def parse_iso(value: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


async def now_ms(settings: Settings, redis: Redis, keys: Keys, tenant: str) -> int:
    """Wall time, or with CHURNWATCH_CLOCK=event the tenant's event clock (see
    ``Keys.event_clock``: the second newest customer's newest event time)."""
    if settings.clock == "event":
        top = await redis.zrevrange(keys.event_clock(tenant), 0, 1, withscores=True)
        if top:
            return int(float(top[-1][1]))
    return int(time.time() * 1000)


def canonical(value: str) -> str | None:
    """RFC 3339 in one fixed UTC form (milliseconds, Z), so that strings sort by time."""
    dt = parse_iso(value)
    if dt is None:
        return None
    return rfc3339(dt.astimezone(UTC), "milliseconds")
