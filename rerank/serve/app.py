"""The FastAPI application: routes, response shapes, and how failures become status codes.

=================  ===========================================================================
``POST /v1/rerank``  Cohere v1 rerank (``return_documents`` adds each document as it was sent)
``POST /v2/rerank``  Cohere v2 rerank (``max_tokens_per_doc`` cuts documents to that many words)
``POST /rerank``     Jina / vLLM rerank (documents come back by default, ``top_n: 0`` is all; ``usage`` counts words)
``POST /v1/search``  query -> top ``top_n`` of the whole pipeline over its corpus
``GET /health``      status, pipeline, endpoints and limits (never needs the API key)
``GET /v1/models``   the served model, in OpenAI's (``data``) and Cohere's (``models``) list shapes
``GET /metrics``     Prometheus text (see :mod:`rerank.serve.metrics`)
=================  ===========================================================================

Model failures: the request's own problem found by the model (e.g. a query longer than the
cross-encoder's window) is 422; a backend that failed (server down, timeout) is 502; anything else
500 with the exception's type and message (a NaN or infinite score too). A full queue is 429 with
``Retry-After``. Every request has ``request_timeout`` in all: a body that has not arrived by then is 408,
an answer that has not is 504; a request that times out waiting for the model leaves the queue then.
A client that hangs up before its answer is ready is counted as 499 (``client_closed``), as nginx
does, and its request leaves the queue too.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from rerank.errors import BackendError, ConfigError, ContractError, DataError
from rerank.naming import redact_urls
from rerank.serve.asgi import ERROR_TYPE, TrailingSlash
from rerank.serve.auth import BearerAuth
from rerank.serve.batching import Batcher, QueueFull
from rerank.serve.config import ServeConfig
from rerank.serve.engine import Engine, RerankJob, SearchJob
from rerank.serve.errors import ApiError
from rerank.serve.limits import BodyLimit
from rerank.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from rerank.serve.schemas import (CohereV1Request, CohereV2Request, JinaRequest, RerankRequest, SearchRequest,
                                  check_rerank, check_search, parse)
from rerank.stage import Stage
from rerank.text import truncate_words
from rerank.types import Candidates, is_blank

logger = logging.getLogger("rerank")
RERANK_PATHS = ("/v1/rerank", "/v2/rerank", "/rerank")
COUNTED_REPAIRS = {"long_documents": "document(s) were longer than the model's input",
                   "truncated": "document(s) were truncated to fit the model",
                   "query_tokens_cut": "tokens of the query were cut to fit the model"}
ENDPOINTS = {*RERANK_PATHS, "/v1/search", "/health", "/v1/models", "/metrics"}


def create_app(pipeline: Stage, config: ServeConfig = ServeConfig(), *, searchable: bool = False,
               api_key: str | None = None, warmup: bool = True) -> FastAPI:
    """The ASGI app serving ``pipeline``.

    Args:
        pipeline: any stage; rerank endpoints use its reranking part (see :mod:`rerank.serve.engine`).
        config: limits, batching and timeouts (host and port are the runner's business).
        searchable: the pipeline's retrievers are indexed on a corpus, so ``/v1/search`` may run it.
        api_key: when given, every path but ``/health`` needs it as a bearer token.
        warmup: run one tiny request through each served part before accepting traffic (or call
            ``app.state.warm_up()`` before starting the server, so that a model that cannot load fails there).
    """
    engine = Engine(pipeline, searchable)
    unscored = (f"{engine.shows_scores!r} shows the model first-stage scores, which a rerank request does not carry"
                if engine.shows_scores is not None else "")
    if engine.reranker is None and engine.searcher is None:
        raise ConfigError(f"{pipeline!r} has neither a reranking part nor a searchable first stage: end it with a reranker, "
                          "or start it with a retriever and give --dataset or --index" + (f" ({unscored})" if unscored else ""))
    # as the user wrote it, else the stage's form; a backend URL's user, password and query never shown to clients
    name, shown = redact_urls(config.model_name or config.pipeline or repr(pipeline)), redact_urls(repr(pipeline))
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank-model")  # one model call at a time
    batching = dict(max_requests=config.max_batch_requests, max_documents=config.max_batch_documents,
                    wait_s=config.batch_wait_ms / 1000, max_queue=config.max_queue)
    rerank_batcher = Batcher(engine.rerank, lambda j: len(j.texts), executor, stats=metrics.batch_stats("rerank"), **batching)
    search_batcher = Batcher(engine.search, lambda j: 1, executor, stats=metrics.batch_stats("search"), **batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warmup:
            await asyncio.get_running_loop().run_in_executor(executor, _warm_up, engine)
        rerank_batcher.start()
        search_batcher.start()
        logger.info("serving %s (rerank: %s, search: %s)", name, engine.reranker is not None, engine.searcher is not None)
        yield
        await rerank_batcher.stop()  # uvicorn has waited for open requests; finish what is queued
        await search_batcher.stop()
        executor.shutdown(wait=True)

    # no redirect to the Host header's address for a path with a trailing slash: see TrailingSlash
    app = FastAPI(title="rerank serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, redirect_slashes=False)

    def warm_up() -> None:
        """The lifespan's warm-up, called before a server starts (as :func:`rerank.serve.serve` does)."""
        executor.submit(_warm_up, engine).result()

    app.state.warm_up = warm_up

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        request.scope[ERROR_TYPE] = e.type  # counted by the metrics middleware, as the middlewares' own errors are
        if e.status >= 500:
            logger.warning("%s %s -> %d %s", request.method, request.url.path, e.status, e.message)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        """A bug anywhere but the model call (which :func:`_run` turns into 500 model_error) answers JSON too."""
        return await api_error(request, ApiError(500, "internal_error", f"the server failed: {type(e).__name__}: {e}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        """Unknown paths and methods answer in the same {message, type} shape as every other error."""
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {e.detail}"
        if e.status_code == 404:
            message += f"; endpoints: {', '.join(sorted(ENDPOINTS))}"
        return await api_error(request, ApiError(e.status_code, kind, message, headers=dict(e.headers or {})))

    async def rerank(request: Request, shape: type[RerankRequest]) -> tuple[RerankRequest, list[str], Candidates, list[str], int]:
        """The request, its document texts, the reranked candidates, warnings, and the words the model was sent."""
        if engine.reranker is None:
            raise ApiError(501, "not_supported", f"{pipeline!r} {unscored or 'has no reranking part'}; use /v1/search")
        started = time.monotonic()
        req = parse(await _body(request, config), shape)
        texts = check_rerank(req, config)
        warnings = _model_warnings(req.model, name) + (req.ignored() if isinstance(req, JinaRequest) else [])
        query = req.query
        if getattr(req, "max_tokens_per_query", None):
            query = _cut(query, req.max_tokens_per_query, "the query", "max_tokens_per_query")
            if query != req.query:
                warnings.append(f"the query was cut to max_tokens_per_query={req.max_tokens_per_query} words")
        job_texts = texts
        if getattr(req, "max_tokens_per_doc", None):
            job_texts = [_cut(t, req.max_tokens_per_doc, f"documents[{i}]", "max_tokens_per_doc") for i, t in enumerate(texts)]
            cut = sum(a != b for a, b in zip(texts, job_texts))
            if cut:
                warnings.append(f"{cut} of {len(texts)} documents were cut to max_tokens_per_doc={req.max_tokens_per_doc} words")
        if getattr(req, "max_chunks_per_doc", None) is not None:
            warnings.append("max_chunks_per_doc is ignored: the model handles long documents its own way")
        ranked = await _run(rerank_batcher, RerankJob(query, job_texts), config, started, request)
        words = len(query.split()) * len(job_texts) + sum(len(t.split()) for t in job_texts)  # what the model was sent
        return req, texts, ranked, warnings + _info_warnings(ranked.info), words

    @app.post("/v1/rerank")
    async def cohere_v1(request: Request) -> dict[str, Any]:
        req, texts, ranked, warnings, _ = await rerank(request, CohereV1Request)
        shown = req.documents if req.return_documents else None  # Cohere v1 returns each document as sent
        return {"id": str(uuid.uuid4()), "results": _results(ranked, texts, req.top_n, shown), "meta": _meta("1", warnings)}

    @app.post("/v2/rerank")
    async def cohere_v2(request: Request) -> dict[str, Any]:
        req, texts, ranked, warnings, _ = await rerank(request, CohereV2Request)
        return {"id": str(uuid.uuid4()), "results": _results(ranked, texts, req.top_n, None), "meta": _meta("2", warnings)}

    @app.post("/rerank")
    async def jina(request: Request) -> dict[str, Any]:
        req, texts, ranked, warnings, sent = await rerank(request, JinaRequest)
        answer_id = str(uuid.uuid4()) if req.request_id is None else req.request_id
        return {"id": answer_id, "model": name, "usage": {"prompt_tokens": sent, "total_tokens": sent},
                "results": _results(ranked, texts, req.top_n, texts if req.return_documents else None),
                **({"warnings": warnings} if warnings else {})}

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        if engine.searcher is None:
            why = "its first stage is not a retriever" if searchable else "it was started without --dataset or --index"
            raise ApiError(501, "not_supported", f"/v1/search is off for {pipeline!r}: {why}")
        started = time.monotonic()
        req = parse(await _body(request, config), SearchRequest)
        check_search(req, config)
        found = await _run(search_batcher, SearchJob(req.query, req.top_n), config, started, request)
        results = [{"docid": r.docid, "score": r.score, "rank": r.rank,
                    **({"text": r.text, "title": r.title} if req.return_documents else {})} for r in found]
        warnings = _model_warnings(req.model, name) + _info_warnings(found.info)
        return {"id": str(uuid.uuid4()), "results": results, "meta": {"warnings": warnings}}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "pipeline": shown,
                "endpoints": {"rerank": engine.reranker is not None, "search": engine.searcher is not None},
                "limits": config.limits(), "queue_depth": rerank_batcher.depth + search_batcher.depth}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        endpoints = (["rerank"] if engine.reranker is not None else []) + (["search"] if engine.searcher is not None else [])
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rerank"}],
                "models": [{"name": name, "endpoints": endpoints, "finetuned": False}]}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    # the last added runs first: a path loses its trailing slash, metrics see every answer, auth runs before the body is read
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if api_key:
        app.add_middleware(BearerAuth, key=api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS)
    app.add_middleware(TrailingSlash, paths=ENDPOINTS)
    app.state.metrics, app.state.engine = metrics, engine
    return app


async def _body(request: Request, config: ServeConfig) -> bytes:
    """The request body without a UTF-8 byte-order mark, read within ``request_timeout`` (a client that
    trickles its body gets 408, one that hangs up before sending it all 499); a compressed one is 415."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(415, "unsupported_media_type", f"the body is compressed (Content-Encoding: {encoding}), which is "
                       "not supported; send it uncompressed", headers={"Accept-Encoding": "identity"})
    try:
        return (await asyncio.wait_for(request.body(), config.request_timeout)).removeprefix(codecs.BOM_UTF8)
    except TimeoutError:
        raise ApiError(408, "timeout", f"the request body did not arrive within request_timeout={config.request_timeout} s",
                       limit="request_timeout", headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(499, "client_closed", "the client closed the connection before its body was complete") from None


async def _run(batcher: Batcher, job: Any, config: ServeConfig, started: float, request: Request) -> Any:
    """Submit a job (in what is left of the request's deadline since ``started``, a ``time.monotonic()``)
    and turn every way it can fail into an :class:`ApiError`. A client that hangs up while its job waits
    takes the job out of the queue (499)."""
    submitted = asyncio.ensure_future(batcher.submit(job, max(0.0, config.request_timeout - (time.monotonic() - started))))
    gone = asyncio.ensure_future(_hung_up(request))
    try:
        done, _ = await asyncio.wait({submitted, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        submitted.cancel()  # nothing when it is done; else its request leaves the queue
    if submitted not in done:
        raise ApiError(499, "client_closed", "the client closed the connection before its answer was ready")
    try:
        return submitted.result()
    except QueueFull as e:
        raise ApiError(429, "overloaded", f"{e}; the server holds at most max_queue={config.max_queue} waiting requests",
                       limit="max_queue", headers={"Retry-After": str(e.retry_after)}) from None
    except TimeoutError:
        raise ApiError(504, "timeout", f"the request did not finish within request_timeout={config.request_timeout} s",
                       limit="request_timeout") from None
    except ContractError as e:
        raise ApiError(500, "model_error", f"the model failed: {e}") from None
    except (ConfigError, DataError) as e:
        raise ApiError(422, "invalid_request", f"the model cannot score this request: {e}") from None
    except BackendError as e:
        raise ApiError(502, "backend_error", f"the model backend failed: {e}") from None
    except Exception as e:
        raise ApiError(500, "model_error", f"the model failed: {type(e).__name__}: {e}") from None


async def _hung_up(request: Request) -> None:
    """Return when the client has closed the connection (its body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _cut(text: str, words: int, what: str, cap: str) -> str:
    """``text`` cut to its first ``words`` words; 422 when nothing visible is left (``"\\u200b fleas"`` at 1)."""
    kept = truncate_words(text, words)
    if is_blank(kept):
        raise ApiError(422, "invalid_request", f"{what} has no visible character in its first {words} word(s) ({cap}={words})")
    return kept


def _results(ranked: Candidates, texts: list[str], top_n: int | None, documents: list[Any] | None) -> list[dict[str, Any]]:
    """The ``top_n`` results; with ``documents``, each carries its document: an object as is, a string as ``{text}``."""
    out = []
    for docid, score in zip(ranked.docids[:top_n], ranked.scores[:top_n]):
        item: dict[str, Any] = {"index": int(docid), "relevance_score": float(score)}
        if documents is not None:
            sent = documents[int(docid)]
            item["document"] = sent if isinstance(sent, dict) else {"text": sent}
        out.append(item)
    return out


def _meta(version: str, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"api_version": {"version": version}, "billed_units": {"search_units": 1}}
    if warnings:
        out["warnings"] = warnings
    return out


def _model_warnings(asked: str | None, served: str) -> list[str]:
    if asked and asked != served:
        return [f"model {asked!r} is not served here; answered with {served!r}"]
    return []


def _info_warnings(info: Mapping[str, Any]) -> list[str]:
    """The reranker's counted repairs (``info["truncated"]``, ``info["parse"]`` ...) as readable lines."""
    out = [f"{info[key]} {text}" for key, text in COUNTED_REPAIRS.items() if info.get(key)]
    parse = info.get("parse")
    if isinstance(parse, Mapping) and (parse.get("repaired") or parse.get("forced")):
        out.append("answer parse repairs: " + ", ".join(f"{k}={v}" for k, v in parse.items() if v))
    return out


def _warm_up(engine: Engine) -> None:
    started = time.monotonic()
    if engine.reranker is not None:
        engine.rerank([RerankJob("warm up", ["warm up"])])
    if engine.searcher is not None:
        engine.search([SearchJob("warm up", 1)])
    logger.info("model ready in %.1f s", time.monotonic() - started)
