"""The body-size limit, enforced before the body is read (413 naming ``max_body_bytes``).

The other limits (documents, characters, ``top_n``) need the parsed request; see
:mod:`rerank.serve.schemas`.
"""

from __future__ import annotations

from rerank.serve.asgi import send_error
from rerank.serve.errors import ApiError, limit_error


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` by Content-Length, or while they stream in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def error(self, size: int | None) -> ApiError:
        said = f"{size} bytes" if size is not None else f"more than {self.max_bytes} bytes"
        return limit_error("max_body_bytes", self.max_bytes, f"the request body has {said}", status=413)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(scope, send, self.error(int(length)))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self.error(None)
            return message

        await self.app(scope, counted, send)
