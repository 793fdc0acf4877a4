"""The one error type of the HTTP layer and the JSON body every error answer carries.

Body: ``{"message": "...", "type": "...", "limit": "max_documents"}`` (``limit`` only when a
configured limit was broken). ``message`` is what Cohere's clients show.
"""

from __future__ import annotations

from typing import Any

from rerank.naming import redact_urls


class ApiError(Exception):
    """An answer with a 4xx/5xx status: ``type`` is a stable word, ``message`` says what to do (server
    URLs in it without user, password or query, as :func:`~rerank.naming.shown_url` shows them)."""

    def __init__(self, status: int, type: str, message: str, *, limit: str | None = None,
                 headers: dict[str, str] | None = None):
        message = redact_urls(message)
        super().__init__(message)
        self.status, self.type, self.message, self.limit = status, type, message, limit
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.limit:
            out["limit"] = self.limit
        return out


def limit_error(limit: str, value: int, message: str, status: int = 422) -> ApiError:
    """A broken limit: the message ends with the limit's name and value."""
    return ApiError(status, "limit_exceeded", f"{message} (limit {limit}={value})", limit=limit)
