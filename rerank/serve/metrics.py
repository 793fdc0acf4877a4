"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

=================================== ===========================================================
``rerank_requests_total``           requests by ``endpoint`` and ``status`` (499: the client hung up mid-body)
``rerank_errors_total``             error answers by ``endpoint`` and ``type`` (the JSON ``type``)
``rerank_request_duration_seconds`` latency histogram by ``endpoint`` (receipt to answer)
``rerank_batch_requests``           requests merged into each model call, by ``kind``
``rerank_batch_documents``          documents in each model call, by ``kind``
``rerank_model_duration_seconds``   seconds of each model call, by ``kind``
``rerank_queue_depth``              requests waiting for the model, by ``kind``
``rerank_requests_in_progress``     requests being handled
=================================== ===========================================================
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from rerank.serve.asgi import ERROR_TYPE
from rerank.serve.batching import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DOC_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rerank_requests", "Requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("rerank_errors", "Error answers", ["endpoint", "type"], registry=r)
        self.latency = Histogram("rerank_request_duration_seconds", "Time from receipt to answer", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("rerank_batch_requests", "Requests per model call", ["kind"],
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_documents = Histogram("rerank_batch_documents", "Documents per model call", ["kind"],
                                         buckets=DOC_BUCKETS, registry=r)
        self.model_seconds = Histogram("rerank_model_duration_seconds", "Seconds per model call", ["kind"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("rerank_queue_depth", "Requests waiting for the model", ["kind"], registry=r)
        self.in_progress = Gauge("rerank_requests_in_progress", "Requests being handled", registry=r)

    def batch_stats(self, kind: str) -> BatchStats:
        def on_batch(requests: int, documents: int, seconds: float) -> None:
            self.batch_requests.labels(kind).observe(requests)
            self.batch_documents.labels(kind).observe(documents)
            self.model_seconds.labels(kind).observe(seconds)

        return BatchStats(on_batch=on_batch, on_depth=self.queue_depth.labels(kind).set)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: count every HTTP request by route and status and time it."""

    def __init__(self, app, metrics: Metrics, endpoints: set[str]):
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = {"code": 500}
        started = time.perf_counter()

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            if status["code"] >= 400:
                self.metrics.errors.labels(endpoint, scope.get(ERROR_TYPE, "internal_error")).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
