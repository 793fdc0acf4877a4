"""Sending a JSON error from ASGI middleware (before the application sees the request), the mark
every error answer leaves in its scope for the metrics (:data:`ERROR_TYPE`), and :class:`TrailingSlash`."""

from __future__ import annotations

import json

from rerank.serve.errors import ApiError


ERROR_TYPE = "rerank.error_type"
"""The scope key holding an error answer's JSON ``type`` (read by the metrics middleware)."""


async def send_error(scope, send, error: ApiError) -> None:
    scope[ERROR_TYPE] = error.type
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TrailingSlash:
    """ASGI middleware: a known path with a trailing slash (``POST /rerank/``) is served as the path
    itself. Starlette would answer a 307 redirect to ``http://`` and the Host header's address, which a
    client behind a TLS proxy cannot reach, and which httpx does not follow unless told to."""

    def __init__(self, app, paths: set[str]):
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.endswith("/") and path[:-1] in self.paths:
            raw = scope.get("raw_path")
            scope = {**scope, "path": path[:-1], "raw_path": raw[:-1] if raw and raw.endswith(b"/") else raw}
        await self.app(scope, receive, send)
