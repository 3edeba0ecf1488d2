"""Path and query parameters shared by the routes (validated, documented)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from starlette.convertors import Convertor, register_url_convertor

# No control characters, and not blank: at least one character that is not whitespace.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"


class _AnyPath(Convertor[str]):
    """Starlette's ``path`` (ids may contain "/"), but its ``.*`` stops at a newline, so an id
    holding one matched no route (a bare 404). This one matches any character, and the id's
    own validation answers 422 naming the parameter."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())  # routes: "/v1/customers/{customer_id:anypath}"

CustomerId = Annotated[str, Path(min_length=1, max_length=128, pattern=_NO_CONTROL,
                                 description="The customer's id as sent in events.",
                                 examples=["c-1042"])]
StaffId = Annotated[str, Path(min_length=1, max_length=128, pattern=_NO_CONTROL,
                              examples=["stylist-7"])]
StoreId = Annotated[str, Path(min_length=1, max_length=128, pattern=_NO_CONTROL,
                              examples=["salon-downtown"])]
StoreFilter = Annotated[str | None, Query(min_length=1, max_length=128, pattern=_NO_CONTROL,
                                          description="Only this store (store-bound keys: one "
                                          "of theirs).", examples=["salon-downtown"])]
Format = Annotated[str | None, Query(pattern="^(json|csv)$", description="csv for "
                                     "spreadsheets (or send Accept: text/csv)")]
