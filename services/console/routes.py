"""The staff console's routes (docs/console.md), composed into one router the API includes."""

from __future__ import annotations

from fastapi import APIRouter

from services.console import alerts, auth, customers, manager, team

router = APIRouter(include_in_schema=False)
for module in (auth, alerts, customers, manager, team):
    router.include_router(module.router)
