"""Log pseudonyms: which customer a log line's ``cust_...`` token names, and back (admin only).

Logs never carry customer ids (services/common/logs.py); they carry a keyed-hash token
(services/common/pseudonym.py). These two reads let an operator follow a customer through the
logs without the logs naming anyone. Each lookup is audited like an erasure or an export: the
tenant's audit stream records who looked up whom (the customer named by digest).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from services.common.pseudonym import load_key, pseudonym
from services.common.redisconn import parse_customer_token
from services.common.riskchange import TIERS
from services.records.erasure import subject_digest
from services.web.deps import AdminKey, Res
from services.web.middleware import request_id
from services.web.openapi import AUTH, NOT_FOUND, responses

router = APIRouter(tags=["admin"])
SCAN_CHUNK = 1000


class Pseudonym(BaseModel):
    token: str = Field(description="What log lines carry in `customer_id` and message texts.",
                       examples=["cust_3f9a0c5be1d24a77"])
    customer_id: str = Field(examples=["c-1042"])
    tenant_id: str = Field(examples=["default"])


def _check_tenant(tenant: str | None, key_tenant: str) -> None:
    if tenant is not None and tenant != key_tenant:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"this API key belongs to tenant {key_tenant!r}; it may not look up "
                            "another tenant's customers")


async def _audit(res: Res, request: Request, *, action: str, tenant: str, customer_id: str,
                 by: str) -> None:
    await res.redis.xadd(res.keys.audit(tenant), {
        "action": action, "subject": subject_digest(tenant, customer_id), "by": by,
        "request_id": request_id(request), "at_ms": str(int(time.time() * 1000))},
        maxlen=res.settings.retention.audit_max, approximate=True)


TenantParam = Annotated[str | None, Query(max_length=64, description="The tenant (default: "
                                          "the API key's own; another tenant answers 403).")]


@router.get(
    "/v1/admin/pseudonyms",
    response_model=Pseudonym,
    summary="A customer's log token",
    description="The pseudonymous token (`cust_` + 16 hex digits) that log lines carry for "
    "this customer instead of their id: HMAC-SHA256 of tenant and id with the pseudonym key "
    "(docs/privacy.md). Whether churnwatch holds anything about the customer does not "
    "matter. Audited (`pseudonym_lookup`).",
    responses=responses(AUTH),
)
async def token_of(request: Request, res: Res, key: AdminKey,
                   customer_id: str = Query(min_length=1, max_length=128,
                                            examples=["+8613800138000"]),
                   tenant: TenantParam = None) -> Pseudonym:
    _check_tenant(tenant, key.tenant)
    secret = await load_key(res.settings, res.redis)
    await _audit(res, request, action="pseudonym_lookup", tenant=key.tenant,
                 customer_id=customer_id, by=key.name)
    return Pseudonym(token=pseudonym(secret, key.tenant, customer_id), customer_id=customer_id,
                     tenant_id=key.tenant)


def _match(secret: bytes, tenant: str, token: str, members: list[str]) -> str | None:
    for member in members:
        member_tenant, customer = parse_customer_token(member)
        if member_tenant == tenant and pseudonym(secret, tenant, customer) == token:
            return customer
    return None


@router.get(
    "/v1/admin/pseudonyms/{token}",
    response_model=Pseudonym,
    summary="The customer a log token names",
    description="Resolves a log token among the tenant's scored customers (the members of its "
    "tier indexes, at most `CHURNWATCH_ANALYTICS_MAX_CUSTOMERS` of them). 404 when no "
    "customer of the tenant has it: an erased customer, one with no events scored, another "
    "tenant's, or a token made with another key. Audited (`pseudonym_resolve`).",
    responses=responses(AUTH, NOT_FOUND),
)
async def resolve(token: Annotated[str, Path(pattern=r"^cust_[0-9a-f]{16}$",
                                             examples=["cust_3f9a0c5be1d24a77"])],
                  request: Request, res: Res, key: AdminKey,
                  tenant: TenantParam = None) -> Pseudonym:
    _check_tenant(tenant, key.tenant)
    secret = await load_key(res.settings, res.redis)
    budget = res.settings.analytics_max_customers
    stores = sorted(key.stores) if key.stores is not None else [None]  # store-bound: theirs only
    for index in [res.keys.tier_index(t, key.tenant, s) for t in TIERS for s in stores]:
        cursor = 0
        while budget > 0:
            cursor, found = await res.redis.zscan(index, cursor, count=SCAN_CHUNK)
            members = [str(m) for m, _ in found]
            budget -= len(members)
            customer = await asyncio.to_thread(_match, secret, key.tenant, token, members)
            if customer is not None:
                await _audit(res, request, action="pseudonym_resolve", tenant=key.tenant,
                             customer_id=customer, by=key.name)
                return Pseudonym(token=token, customer_id=customer, tenant_id=key.tenant)
            if cursor == 0:
                break
    raise HTTPException(status.HTTP_404_NOT_FOUND,
                        "no customer of this tenant has that token (erased, never scored, or "
                        "beyond the first CHURNWATCH_ANALYTICS_MAX_CUSTOMERS)")
