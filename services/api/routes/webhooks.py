"""Webhook subscriptions: every risk change is POSTed, signed, to each of them."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field

from services.alerting.webhooks import (
    add_subscription,
    delete_subscription,
    list_subscriptions,
    resume_subscription,
    validate_target,
)
from services.common.settings import ApiKey
from services.web.deps import AdminKey, Res
from services.web.openapi import AUTH, TOO_LARGE, error, responses

router = APIRouter(tags=["webhooks"])


def _tenant_wide(key: ApiKey) -> str:
    """Webhooks get every change of the tenant, whatever the store: store-bound keys may not
    manage them."""
    if key.stores is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "this API key is bound to stores; webhooks receive every store's "
                            "changes of the tenant, so they need a tenant-wide admin key")
    return key.tenant


class NewWebhook(BaseModel):
    url: str = Field(max_length=2048, examples=["https://crm.example.com/hooks/churnwatch"])
    secret: str = Field(min_length=16, max_length=512,
                        description="Used to sign deliveries (HMAC-SHA256); at least 16 characters.")


class Webhook(BaseModel):
    id: str
    url: str
    created_at: str
    status: Literal["active", "paused"] = Field(
        "active", description="paused: its deliveries failed for longer than "
        "CHURNWATCH_WEBHOOK_PAUSE_AFTER_SECONDS; it gets nothing until resumed.")
    paused_at: str | None = None
    failing_since: str | None = Field(None, description="First failure of the failing run.")
    paused_reason: str | None = Field(None, description="The last error before the pause.")


@router.post("/v1/webhooks", status_code=status.HTTP_201_CREATED, response_model=Webhook,
             summary="Subscribe a URL to risk changes",
             description="Every risk change of the key's tenant is POSTed to the URL, signed with the secret "
             "(Churnwatch-Signature header). Private, loopback and link-local targets are refused "
             "unless CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true; so are hosts that do not resolve. "
             "The URL must be https:// (deliveries carry customer data): plain http:// is "
             "accepted only to this machine (localhost, 127.0.0.0/8, ::1) or with "
             "CHURNWATCH_WEBHOOK_ALLOW_HTTP=true.",
             responses=responses(AUTH, TOO_LARGE))
async def create_webhook(body: NewWebhook, res: Res, key: AdminKey) -> Any:
    tenant = _tenant_wide(key)
    try:
        url = await asyncio.to_thread(validate_target, body.url,
                                      allow_private=res.settings.webhook_allow_private,
                                      allow_http=res.settings.webhook_allow_http)
    except ValueError as exc:
        raise HTTPException(422, f"url: {exc}") from None
    return await add_subscription(res.redis, res.keys, url=url, secret=body.secret, tenant=tenant)


@router.get("/v1/webhooks", response_model=list[Webhook], summary="List webhook subscriptions",
            description="The tenant's subscriptions (the secrets are never returned).",
            responses=responses(AUTH))
async def get_webhooks(res: Res, key: AdminKey) -> Any:
    return await list_subscriptions(res.redis, res.keys, _tenant_wide(key))


@router.delete("/v1/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a webhook subscription",
               description="404 when there is no such subscription.",
               responses=responses(AUTH, {404: error("No such subscription", "no webhook 'x'")}))
async def remove_webhook(webhook_id: str, res: Res, key: AdminKey) -> Response:
    if not await delete_subscription(res.redis, res.keys, webhook_id, _tenant_wide(key)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/webhooks/{webhook_id}/resume", response_model=Webhook,
             summary="Resume a paused webhook subscription",
             description="A subscription whose deliveries failed for longer than "
             "CHURNWATCH_WEBHOOK_PAUSE_AFTER_SECONDS (default 3 days) is paused and the tenant's "
             "admins are e-mailed once. Resuming sends it the risk changes from now on (those "
             "of the pause are not replayed) and restarts its failure clock. Idempotent: an "
             "active subscription stays active. 404 when the tenant has no such subscription.",
             responses=responses(AUTH, {404: error("No such subscription", "no webhook 'x'")}))
async def resume_webhook(webhook_id: str, res: Res, key: AdminKey) -> Any:
    sub = await resume_subscription(res.redis, res.keys, webhook_id, _tenant_wide(key))
    if sub is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")
    return sub
