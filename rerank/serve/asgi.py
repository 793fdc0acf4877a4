"""Sending a JSON error from ASGI middleware (before the application sees the request), and the mark
every error answer leaves in its scope for the metrics (:data:`ERROR_TYPE`)."""

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
