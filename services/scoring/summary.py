"""INTERIM (replaced by the compact summary): the customer's raw events behind the Summary API."""

from __future__ import annotations

import json
from collections.abc import Iterable

from services.scoring.activity import activity_from_row, encode_activity
from services.scoring.features import Activity, compute_features

K_RECENT = 8


class Summary:
    def __init__(self) -> None:
        self._acts: dict[str, Activity] = {}
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    @classmethod
    def empty(cls) -> Summary:
        return cls()

    def knows(self, event_id: str) -> bool:
        return event_id in self._acts

    def beyond_memory(self, a: Activity) -> bool:
        return False

    def fold(self, a: Activity) -> bool:
        if a.event_id in self._acts:
            return False
        self._acts[a.event_id] = a
        self.first_ts = a.ts if self.first_ts is None else min(self.first_ts, a.ts)
        self.last_ts = a.ts if self.last_ts is None else max(self.last_ts, a.ts)
        return True

    def newest_event_id(self) -> str | None:
        if not self._acts:
            return None
        return max(self._acts.values(), key=lambda a: (a.ts, a.event_id)).event_id

    def recent(self) -> list[Activity]:
        return sorted(self._acts.values(), key=lambda a: (a.ts, a.event_id))[-K_RECENT:]

    def features(self, now_ms: int, first_seen_ms: int | None = None) -> dict[str, float]:
        return compute_features(self._acts.values(), now_ms, first_seen_ms)

    def returned_between(self, start_ms: int, end_ms: int) -> bool:
        return any(start_ms <= a.ts <= end_ms and a.kind != "complaint"
                   for a in self._acts.values())

    def last_at_or_before(self, ms: int) -> int | None:
        return max((a.ts for a in self._acts.values() if a.ts <= ms), default=None)

    def daily(self) -> list[dict[str, float]]:
        days: dict[int, dict[str, float]] = {}
        for a in self._acts.values():
            d = days.setdefault(a.ts // 86_400_000, {"day": a.ts // 86_400_000, "visits": 0,
                                "transactions": 0, "refunds": 0, "complaints": 0, "spend": 0.0})
            if a.kind == "visit":
                d["visits"] += 1
            elif a.kind == "complaint":
                d["complaints"] += 1
            elif a.amount is not None and a.amount < 0:
                d["refunds"] += 1
                d["spend"] += a.amount
            else:
                d["transactions"] += 1
                d["spend"] += a.amount or 0.0
        return [days[k] for k in sorted(days)]

    def encode(self) -> str:
        rows = {i: json.loads(encode_activity(a)) for i, a in sorted(self._acts.items())}
        return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, blob: str) -> Summary:
        s = cls()
        try:
            rows = json.loads(blob)
        except ValueError as exc:
            raise ValueError(f"not a customer summary: {exc}") from exc
        for i, row in rows.items():
            s.fold(activity_from_row(i, row))
        return s


def summarize(activities: Iterable[Activity]) -> Summary:
    s = Summary()
    for a in activities:
        s.fold(a)
    return s
