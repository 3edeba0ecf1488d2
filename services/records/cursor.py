"""Opaque, stable page cursors: the (score, member) of the last item of a page."""

from __future__ import annotations

import base64
import json

from services.records.errors import Invalid


def encode(score: str, member: str) -> str:
    raw = json.dumps([score, member], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
        float(score)
        if not isinstance(score, str) or not isinstance(member, str):
            raise ValueError
    except (ValueError, TypeError, UnicodeDecodeError):
        raise Invalid("cursor: not a cursor this API returned; pass next_cursor unchanged, "
                      "or omit it for the first page") from None
    return score, member
