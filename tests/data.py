"""Small, explicit event builders for tests (timestamps always given, never "now")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def visit(cid: str, at: datetime, n: int | str, store: str = "salon-downtown", amount: float | None = 45.0
          ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"event_id": f"{cid}-v{n}", "type": "visit", "customer_id": cid,
                                  "occurred_at": iso(at), "store_id": store}]
    if amount is not None:
        out.append({"event_id": f"{cid}-t{n}", "type": "transaction", "customer_id": cid,
                    "occurred_at": iso(at + timedelta(minutes=40)), "store_id": store,
                    "amount": amount, "currency": "EUR"})
    return out


def regular(cid: str, *, every_days: float, count: int, start: datetime = T0,
            store: str = "salon-downtown", amount: float = 45.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(count):
        out += visit(cid, start + timedelta(days=every_days * i), i, store, amount)
    return out


def complaint(cid: str, at: datetime, n: int | str, severity: str = "high", status: str = "open",
              ref: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": f"{cid}-c{n}", "type": "complaint", "customer_id": cid,
                         "occurred_at": iso(at), "severity": severity, "status": status}
    if ref:
        e["complaint_id"] = ref
    return e


def by_time(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]))
