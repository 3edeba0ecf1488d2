"""Webhook subscriptions: every risk change is POSTed, signed, to each of them."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field

from services.common.settings import ApiKey
from services.ingest.deps import AdminKey, Res
from services.ingest.openapi import AUTH, TOO_LARGE, error, responses
from services.notifier.webhooks import (
    add_subscription,
    delete_subscription,
    list_subscriptions,
    validate_target,
)

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


@router.post("/v1/webhooks", status_code=status.HTTP_201_CREATED, response_model=Webhook,
             summary="Subscribe a URL to risk changes",
             description="Every risk change of the key's tenant is POSTed to the URL, signed with the secret "
             "(Churnwatch-Signature header). Private, loopback and link-local targets are refused "
             "unless CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true; so are hosts that do not resolve.",
             responses=responses(AUTH, TOO_LARGE))
async def create_webhook(body: NewWebhook, res: Res, key: AdminKey) -> Any:
    tenant = _tenant_wide(key)
    try:
        url = await asyncio.to_thread(validate_target, body.url,
                                      allow_private=res.settings.webhook_allow_private)
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
