"""Settings of ``rerank serve``: one frozen dataclass, read from a TOML file and overridden by flags.

A config file holds a ``[serve]`` table whose keys are the field names below::

    [serve]
    pipeline = "cross-encoder(model='models/my-ce')"
    port = 8000
    max_documents = 500
    max_batch_requests = 16

Unknown keys are an error that lists the valid ones.

>>> ServeConfig().replace(max_documents=10).limits()["max_documents"]
10
>>> ServeConfig(host="0.0.0.0").is_loopback, ServeConfig(host="::1").is_loopback
(False, True)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rerank.errors import ConfigError
from rerank.io import read_toml


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs besides the pipeline object.

    Limits (a request that breaks one gets 413 or 422 naming the limit):
        max_body_bytes: request body size (413).
        max_documents: documents per rerank request (422).
        max_query_chars: characters of the query (422).
        max_doc_chars: characters of one document (422).
        max_top_n: largest ``top_n`` of a search request (422).
    Batching and back-pressure:
        max_batch_requests: requests merged into one ``rerank_many`` call (1 turns batching off).
        max_batch_documents: documents per merged rerank call (a larger single request runs alone);
            search requests count one each.
        batch_wait_ms: how long the first request of a batch waits for others to join.
        max_queue: requests waiting for the model; one more gets 429 with ``Retry-After``.
        request_timeout: seconds a request may take in all: 408 when its body has not arrived by then, 504 when its answer has not.
    Access:
        api_key_env / api_key_file: where the bearer key comes from (the file wins when both are set).
        allow_public: bind to a non-loopback address without an API key.
    """

    pipeline: str = ""
    dataset: str | None = None
    index: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_documents: int = 1000
    max_query_chars: int = 4096
    max_doc_chars: int = 32768
    max_top_n: int = 1000
    max_batch_requests: int = 32
    max_batch_documents: int = 1024
    batch_wait_ms: float = 2.0
    max_queue: int = 256
    request_timeout: float = 120.0
    api_key_env: str = "RERANK_API_KEY"
    api_key_file: str | None = None
    allow_public: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, f.type):
                raise ConfigError(f"serve setting {f.name} must be {_TYPE_NAMES[f.type]}, got {value!r}")
        positive = ("max_body_bytes", "max_documents", "max_query_chars", "max_doc_chars", "max_top_n",
                    "max_batch_requests", "max_batch_documents", "max_queue")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"serve setting {name} must be a positive integer, got {value!r}")
        if not math.isfinite(self.request_timeout):
            raise ConfigError(f"serve setting request_timeout must be a finite number of seconds, got {self.request_timeout!r}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ConfigError(f"serve setting batch_wait_ms must be within 0..1000, got {self.batch_wait_ms!r}")
        if not self.request_timeout > 0:
            raise ConfigError(f"serve setting request_timeout must be positive, got {self.request_timeout!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve setting port must be within 0..65535, got {self.port!r}")
        if self.dataset and self.index:
            raise ConfigError("give --dataset or --index, not both")

    @classmethod
    def from_toml(cls, path: str | Path) -> ServeConfig:
        """Read the ``[serve]`` table of a TOML file."""
        table = read_toml(Path(path)).get("serve")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: expected a [serve] table")
        return cls().replace(**table)

    def replace(self, **changes: Any) -> ServeConfig:
        """A copy with ``changes``; unknown names are an error listing the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown serve setting(s) {unknown}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def limits(self) -> dict[str, int]:
        """The request limits by name, as shown by ``GET /health`` and the docs."""
        names = ("max_body_bytes", "max_documents", "max_query_chars", "max_doc_chars", "max_top_n")
        return {n: getattr(self, n) for n in names}


_TYPE_NAMES = {"str": "a string", "str | None": "a string", "int": "an integer", "float": "a number",
               "bool": "true or false"}


def _has_type(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a field annotated ``annotation`` (a bool is not a number, a word is not a bool)."""
    if annotation == "str | None":
        return value is None or isinstance(value, str)
    if annotation == "bool":
        return isinstance(value, bool)
    numeric = (int,) if annotation == "int" else (int, float) if annotation == "float" else None
    if numeric is not None:
        return isinstance(value, numeric) and not isinstance(value, bool)
    return isinstance(value, str)
