"""Optional bearer-key auth, the rule that a public bind needs it, and the bind checked before any
model loads.

The key comes from a file (``api_key_file``, first line) or an environment variable (``api_key_env``,
default ``RERANK_API_KEY``). Every path except ``GET /health`` then needs
``Authorization: Bearer <key>``; keys are compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
import socket
from pathlib import Path

from rerank.errors import ConfigError
from rerank.serve.asgi import send_error
from rerank.serve.config import ServeConfig
from rerank.serve.errors import ApiError

OPEN_PATHS = frozenset({"/health"})


def load_api_key(config: ServeConfig) -> str | None:
    """The configured key, or None when none is set; an empty key file is an error."""
    if config.api_key_file:
        path = Path(config.api_key_file)
        if not path.is_file():
            raise ConfigError(f"api_key_file {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise ConfigError(f"api_key_file {path} is empty")
        return key
    return os.environ.get(config.api_key_env, "").strip() or None


def check_bind(config: ServeConfig, api_key: str | None) -> None:
    """Refuse an address that cannot be bound now (a port in use, an address of no interface here),
    and a non-loopback bind without a key unless ``allow_public`` is set."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as e:  # socket.gaierror included
        raise ConfigError(f"cannot serve on {config.host}:{config.port}: {e.strerror or e}") from None
    if not config.is_loopback and api_key is None and not config.allow_public:
        raise ConfigError(f"refusing to serve on {config.host} without an API key: set {config.api_key_env} or "
                          f"--api-key-file, bind to 127.0.0.1, or pass --allow-public to serve without auth")


class BearerAuth:
    """ASGI middleware: 401 unless the request carries the bearer key."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        sent = [value for name, value in scope["headers"] if name == b"authorization"]
        scheme, _, token = (sent[0] if len(sent) == 1 else b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        reason = "missing" if not sent else "wrong" if len(sent) == 1 else f"sent {len(sent)} times"
        await send_error(scope, send, ApiError(401, "unauthorized", f"the API key is {reason}: send 'Authorization: Bearer <key>'",
                                        headers={"WWW-Authenticate": "Bearer"}))
