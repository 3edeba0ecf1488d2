"""Errors of the records layer; the app maps them to HTTP answers
(``services/web/middleware.py``: ``install_error_handlers``)."""

from __future__ import annotations


class QueryError(Exception):
    """Base: the message says what to fix."""

    status = 400


class Invalid(QueryError):
    status = 422


class NotFound(QueryError):
    status = 404


class Forbidden(QueryError):
    status = 403
