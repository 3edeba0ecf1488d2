"""Shared OpenAPI pieces: the error body and the error responses every route documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """Every error answer: what went wrong and what to fix (a list for field-level errors)."""

    detail: str | list[Any] = Field(description="What is wrong and how to fix it.",
                                    examples=["unknown API key"])
    request_id: str | None = Field(None, description="Quote it when asking for help (500s).")


def error(description: str, example: str) -> dict[str, Any]:
    return {"model": Problem, "description": description,
            "content": {"application/json": {"example": {"detail": example}}}}


AUTH: dict[int | str, dict[str, Any]] = {
    401: error("Missing or unknown API key", "missing API key: send 'Authorization: Bearer <key>'"),
    403: error("The key lacks the scope, or may not see this tenant's store",
              "this API key lacks the 'read' scope"),
    422: error("A parameter or the body is invalid; the detail names it",
              "limit: must be between 1 and 500"),
    429: error("Rate limit of this key exceeded; retry after the Retry-After header's seconds",
              "rate limit exceeded; retry in 1 s"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error("Unknown customer (in this tenant and "
                                                        "the key's stores)",
                                                        "no risk known for customer 'c-1'")}
TOO_LARGE: dict[int | str, dict[str, Any]] = {413: error("Request body too large",
                                                        "request body is over 65536 bytes")}
CSV_CONTENT: dict[str, Any] = {"text/csv": {"schema": {"type": "string"},
                                            "example": "period_start,segment,churn_rate\n"}}


def responses(*parts: Mapping[Any, Any]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for p in parts:
        out.update(p)
    return out
