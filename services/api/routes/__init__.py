"""The API's routers, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.routes import (
    actions,
    analytics,
    atrisk,
    customers,
    profiles,
    pseudonyms,
    status,
    webhooks,
    winback,
)

ROUTERS: tuple[APIRouter, ...] = tuple(m.router for m in (
    atrisk, customers, profiles, actions, analytics, winback, webhooks, pseudonyms, status))
