"""OpenAI-compatible HTTP backend (OpenAI, vLLM's ``vllm serve``, llama.cpp's server, ...).

The core is async (:meth:`OpenAIBackend.agenerate`, :meth:`OpenAIBackend.ascore`): requests run
concurrently (``concurrency`` at a time) on one ``httpx.AsyncClient``; the sync verbs wrap them.
Each request has one deadline (``timeout``, default 60 s or ``$RERANK_HTTP_TIMEOUT``) that covers
connecting, every read, and the retries: connection failures, 429 and 5xx are retried ``max_retries``
times with exponential back-off, or after the ``Retry-After`` the server asks for when that fits the
deadline; other 4xx answers and malformed bodies raise :class:`~rerank.errors.BackendError` at once.
Every request carries ``max_tokens``, so no call runs unbounded. There is no default endpoint: the
base URL comes from ``base_url=`` or ``$OPENAI_BASE_URL``, and only ``http(s)://`` URLs are accepted.

Scoring:

* plain-text prompts (and chat prompts when ``tokenizer=`` is given, rendered locally with the model's
  chat template) use ``/completions`` with ``echo`` and ``logprobs``: the option is appended to the
  prompt and the log-probabilities of its tokens are summed (exact, any option length);
* other chat prompts use ``/chat/completions`` with ``top_logprobs``: each option is matched to one
  token of the first answer position (after the prompt's unfinished assistant turn, when it ends with
  one); an option outside the top ``top_logprobs`` gets the smallest listed log-probability (an upper
  bound of its true value). When none of the options is listed (an option of several tokens, or a
  model that would start its answer otherwise), the row is NaN: unknown, which the rerankers count
  as an invalid answer and repair, never a tie of every option.

Servers differ in what they return: vLLM's server gives exact echoed logprobs; llama-cpp-python's
server (0.3.36) echoes wrong prompt logprobs (abetlen/llama-cpp-python#1983), so for llama.cpp
score with :class:`~rerank.backends.llamacpp.LlamaCppBackend` in-process.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import math
import os
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from rerank.backends import _chat
from rerank.backends.base import (Backend, Generation, Prompt, check_max_new_tokens, server_url, settings_suffix,
                                  weights_suffix)
from rerank.constraints import CONSTRAINT_ARG, Constraint
from rerank.errors import BackendError, ConfigError, InputRefused, require
from rerank.naming import shown_url

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT_ENV = "RERANK_HTTP_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
DEFAULT_PROBE_TIMEOUT = 5.0
DEFAULT_TOP_LOGPROBS = 20
GUIDED = ("auto", "xargs", "regex", "grammar", "off")
_GUIDED_BY_OWNER = {"vllm": "regex", "llamacpp": "grammar", "me": "grammar"}  # "me": llama-cpp-python's server


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible HTTP API.

    Args:
        model: the served model name; None asks the server (``GET /models``, first entry).
        base_url: API root ending in ``/v1``, ``http://`` or ``https://``; default ``$OPENAI_BASE_URL``.
            There is no built-in default: for OpenAI's API pass ``https://api.openai.com/v1``.
        api_key: default ``$OPENAI_API_KEY`` or ``"EMPTY"`` (local servers ignore it).
        timeout: the deadline of one request in seconds, retries and their waits included; default
            ``$RERANK_HTTP_TIMEOUT`` or 60. A server that stops answering, or answers a byte at a time,
            is reported when it passes.
        probe_timeout: the deadline of each request that asks the server about itself (``/models``,
            the tokenize routes); each is asked once and the answer kept.
        concurrency: requests in flight at once.
        max_retries, backoff: retries of transient failures (connection errors, 429, 5xx), sleeping
            ``backoff * 2**attempt`` s, or what a 429/503's ``Retry-After`` asks when that fits the deadline.
        tokenizer: alias/path of the model's tokenizer, to render chat prompts locally and count tokens.
        max_context: longest prompt the caller should send (used by windowing rerankers).
        top_logprobs: alternatives asked for when scoring chat prompts without a tokenizer.
        extra_body: fields merged into every request (``{"top_k": 1}``, ...).
        guided: how a ``generate`` constraint is sent (see :mod:`rerank.constraints`):
            ``"xargs"``: exact, for a ``vllm serve`` started with ``--logits-processors
            rerank.backends.vllm_logits:ConstrainedDecoding`` (a server without it ignores the field, and
            the answers' repairs show in the valid-answer counts); ``"regex"``: vLLM's ``structured_outputs``;
            ``"grammar"``: llama.cpp's GBNF ``grammar``; ``"off"``: not sent; ``"auto"`` (default):
            ``regex`` for vLLM, ``grammar`` for llama.cpp (from ``/models``' ``owned_by``), else off.
    """

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None, probe_timeout: float = DEFAULT_PROBE_TIMEOUT, concurrency: int = 8,
                 max_retries: int = 3, backoff: float = 0.5, tokenizer: str | None = None, max_context: int = 8192,
                 top_logprobs: int = DEFAULT_TOP_LOGPROBS, extra_body: dict[str, Any] | None = None, guided: str = "auto"):
        self._httpx = require("httpx", "openai")
        url = server_url(base_url)
        if not url:
            raise ConfigError("OpenAIBackend needs base_url= (or $OPENAI_BASE_URL): rerank never defaults to a public "
                              "endpoint; for OpenAI's API pass base_url='https://api.openai.com/v1'")
        self.base_url = check_base_url(url, "OpenAIBackend" if base_url else "$OPENAI_BASE_URL")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.timeout = default_timeout() if timeout is None else timeout
        if not (concurrency >= 1 and max_retries >= 0 and backoff >= 0 and _positive(self.timeout)
                and _positive(probe_timeout)):
            raise ConfigError("OpenAIBackend needs concurrency >= 1, max_retries >= 0, backoff >= 0 and finite "
                              f"timeout, probe_timeout > 0; got {concurrency}, {max_retries}, {backoff}, "
                              f"{self.timeout}, {probe_timeout}")
        self.probe_timeout = min(probe_timeout, self.timeout)
        self.concurrency, self.max_retries, self.backoff = concurrency, max_retries, backoff
        self.max_context, self.top_logprobs, self.extra_body = max_context, top_logprobs, dict(extra_body or {})
        if guided not in GUIDED:
            raise ConfigError(f"unknown guided={guided!r}; choose one of {', '.join(GUIDED)}")
        self._guided = guided
        self._settings = settings_suffix({  # what changes answers besides the model (the defaults left out)
            "tokenizer": tokenizer and tokenizer + weights_suffix(tokenizer), "top_logprobs": None if top_logprobs == DEFAULT_TOP_LOGPROBS else top_logprobs,
            "extra_body": self.extra_body or None, "guided": None if guided == "auto" else guided})
        self._ssl = self._httpx.create_ssl_context()  # built once: each sync call opens a short-lived client
        self.tokenizer = _load_tokenizer(tokenizer) if tokenizer else None
        self._tokenize_route: str | None = None
        self._tokenize_overhead = 0
        self._models: dict[str, Any] | None = None
        self.model = model or self._served_model()

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.model!r}, base_url={shown_url(self.base_url)!r})"

    @property
    def cache_id(self) -> str:
        return f"openai:{self.base_url}#{self.model}{self._settings}"

    # ---- HTTP core -------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _client(self) -> Any:
        return self._httpx.AsyncClient(timeout=self._httpx.Timeout(self.timeout), headers=self._headers(),
                                       verify=self._ssl)

    async def _request(self, client: Any, url: str, body: dict[str, Any] | None, timeout: float,
                       retries: int) -> Any:
        """POST ``body`` (GET when None) to ``url``, retrying refused connections, 429 and 5xx; the response
        (a 429 or 5xx once the retries are spent), or BackendError once ``timeout`` s have passed in all
        (retries and their waits included) or no connection could be made."""
        httpx, loop = self._httpx, asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        error = BackendError(f"no request made to {url}")
        attempt, response = 0, None
        while True:
            wait, response = self.backoff * 2 ** attempt, None
            try:
                async with asyncio.timeout_at(deadline):
                    if body is None:
                        response = await client.get(url, timeout=deadline - loop.time())
                    else:
                        response = await client.post(url, json=body, timeout=deadline - loop.time())
            except (TimeoutError, httpx.TimeoutException):
                raise BackendError(f"{url} did not answer within {timeout:g} s (the whole request, after "
                                   f"{attempt + 1} attempts); check the server's load or raise timeout=") from None
            except httpx.ConnectError as e:
                error = BackendError(f"cannot connect to {url} ({e}); is the server running and is base_url right?")
            except httpx.HTTPError as e:
                error = BackendError(f"request to {url} failed: {e!r}")
            except (httpx.InvalidURL, ExceptionGroup) as e:  # a URL the socket layer refuses: not worth a retry
                leaf = e.exceptions[0] if isinstance(e, ExceptionGroup) else e
                raise BackendError(f"request to {url} failed: {type(leaf).__name__}: {leaf}") from None
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                error = BackendError(f"{url} answered {response.status_code}: {response.text[:300]}")
                asked = _retry_after(response.headers.get("Retry-After")) if response.status_code in (429, 503) else None
                if asked is not None and attempt < retries:
                    if loop.time() + asked > deadline:
                        raise BackendError(f"{error} and asked to retry after {asked:g} s, which would end past the "
                                           f"request's deadline of {timeout:g} s ({loop.time() - started:.1f} s spent; "
                                           "raise timeout= to wait)")
                    wait = asked
            attempt += 1
            if attempt > retries:
                if response is not None:
                    return response
                break
            if loop.time() + wait > deadline:
                raise BackendError(f"{error} (after {attempt} attempts; no time left for another within the "
                                   f"deadline of {timeout:g} s)")
            await asyncio.sleep(wait)
        raise BackendError(f"{error} (after {retries + 1} attempts)")

    async def _post(self, client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        response = await self._request(client, url, {**body, **self.extra_body}, self.timeout, self.max_retries)
        if response.status_code == 429 or response.status_code >= 500:
            raise BackendError(f"{url} answered {response.status_code}: {response.text[:300]} "
                               f"(after {self.max_retries + 1} attempts)")
        if response.status_code >= 400:
            raise InputRefused(f"{url} answered {response.status_code} (not retried; check model name "
                               f"{self.model!r} and request settings): {response.text[:300]}")
        if response.is_redirect:  # not followed: a request must go only where base_url says
            location = str(response.url.join(response.headers.get("location", "")))  # a relative one against the URL asked
            base = location.removesuffix(path) if location.endswith(path) else location
            raise BackendError(f"{url} answered {response.status_code}, a redirect to {location!r}; give base_url={base!r} "
                               "if you trust it (redirects are not followed)")
        try:
            data = response.json()
        except ValueError:
            raise BackendError(f"{url} answered with something that is not JSON: {response.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise BackendError(f"{url} answered with unexpected JSON: {str(data)[:200]}")
        return data

    async def _post_all(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
            async def one(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with limit:
                    return await self._post(client, path, body)

            return await asyncio.gather(*(one(p, b) for p, b in requests))

    def _ask(self, url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any] | None:
        """One request about the server itself: its JSON answer, or None when the server answers with an
        error status or something that is not a JSON object. Connection failures and timeouts raise."""
        async def ask() -> Any:
            async with self._client() as client:
                return await self._request(client, url, body, timeout, retries=0)

        response = _run_sync(ask())
        if response.status_code != 200:
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _models_listing(self) -> dict[str, Any]:
        """``GET /models``, asked once (with the short probe deadline) and kept."""
        if self._models is None:
            self._models = self._ask(self.base_url + "/models", None, self.probe_timeout) or {}
        return self._models

    def _served_model(self) -> str:
        try:
            return self._models_listing()["data"][0]["id"]
        except (TypeError, KeyError, IndexError):
            raise BackendError(f"{self.base_url}/models lists no model; pass model=") from None

    @property
    def guided(self) -> str:
        """The resolved way constraints are sent (``"auto"`` asks the server who it is, once)."""
        if self._guided == "auto":
            listed = self._models_listing().get("data")
            owners = [m.get("owned_by") for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
            self._guided = next((_GUIDED_BY_OWNER[o] for o in owners if o in _GUIDED_BY_OWNER), "off")
            if self._guided == "off":
                log.warning("%s: unknown server (owned_by %s), so constraints are not sent; pass guided=",
                            self.base_url, owners)
        return self._guided

    @property
    def constrains(self) -> str:  # type: ignore[override]
        return {"xargs": "exact", "regex": "shape", "grammar": "shape"}.get(self.guided, "no")

    def _constraint_fields(self, constraint: Constraint) -> dict[str, Any]:
        mode = self.guided
        if mode == "xargs":
            return {"vllm_xargs": {CONSTRAINT_ARG: constraint.key()}}
        if mode == "regex":
            return {"structured_outputs": {"regex": constraint.regex()}}
        if mode == "grammar":
            return {"grammar": constraint.gbnf()}
        return {}

    # ---- generate --------------------------------------------------------------------------------
    def _generation_request(self, prompt: Prompt, max_new_tokens: int, temperature: float,
                            stop: Sequence[str], constraint: Constraint | None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature}
        if stop:
            body["stop"] = list(stop)
        if constraint is not None:
            body.update(self._constraint_fields(constraint))
        if _chat.is_chat(prompt) and self.tokenizer is None:
            body["messages"] = list(prompt)
            if _chat.continues(prompt):  # vLLM's extension; other servers answer a fresh turn
                body.update(continue_final_message=True, add_generation_prompt=False)
            return "/chat/completions", body
        body["prompt"] = self._text(prompt)
        return "/completions", body

    async def agenerate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                        stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        check_max_new_tokens(self, max_new_tokens)
        requests = [self._generation_request(p, max_new_tokens, temperature, stop, constraint) for p in prompts]
        made = [self._parse_generation(d) for d in await self._post_all(requests)]
        longest = max((len(g.text) + len(g.reasoning or "") for g in made), default=0)
        if longest > max_new_tokens * MAX_CHARS_PER_TOKEN:  # kept in answers, logs and caches: refuse it
            raise BackendError(f"{self.base_url} answered {longest:,} characters for max_tokens={max_new_tokens}; "
                               "the server ignores max_tokens")
        return made

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: Sequence[str] = (), constraint: Constraint | None = None) -> list[Generation]:
        return _run_sync(self.agenerate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                        constraint=constraint))

    def _parse_generation(self, data: dict[str, Any]) -> Generation:
        try:
            choice = data["choices"][0]
            message = choice.get("message")
            text = message["content"] if message is not None else choice["text"]
            reasoning = (message or {}).get("reasoning_content") or (message or {}).get("reasoning")
            usage = data.get("usage") or {}
            if not isinstance(text, str | None) or not isinstance(reasoning, str | None):
                raise TypeError
            tokens = [_count(usage.get(k)) for k in ("prompt_tokens", "completion_tokens")]
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise BackendError(f"{self.base_url} answered without a completion of the OpenAI shape (text, reasoning "
                               f"and usage): {str(data)[:300]}") from None
        if choice.get("finish_reason") in CUT_OFF:  # no answer, and none to keep in a cache
            raise BackendError(f"{self.base_url} answered without the model's answer: it stopped it (finish_reason "
                               f"{choice['finish_reason']!r})")
        answer, inline = _chat.split_reasoning(text or "")
        return Generation(answer, reasoning or inline, *tokens, "length" if choice.get("finish_reason") == "length" else "stop")

    # ---- score -----------------------------------------------------------------------------------
    async def ascore(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        if not options:
            return np.zeros((len(prompts), 0))
        if any(not o for o in options):
            raise ConfigError("options must be non-empty strings")
        by_chat = [_chat.is_chat(p) and self.tokenizer is None for p in prompts]
        requests: list[tuple[str, dict[str, Any]]] = []
        for prompt, chat in zip(prompts, by_chat):
            if chat:
                body = {"model": self.model, "messages": list(prompt), "max_tokens": 1, "temperature": 0.0,
                        "logprobs": True, "top_logprobs": self.top_logprobs}
                if _chat.continues(prompt):  # score the options where the unfinished answer goes on
                    body.update(continue_final_message=True, add_generation_prompt=False)
                requests.append(("/chat/completions", body))
            else:
                text = self._text(prompt)
                requests += [("/completions", {"model": self.model, "prompt": text + option, "max_tokens": 1,
                                               "temperature": 0.0, "echo": True, "logprobs": 1}) for option in options]
        answers = iter(await self._post_all(requests))
        rows = []
        for prompt, chat in zip(prompts, by_chat):
            if chat:
                rows.append(self._first_token_scores(next(answers), options))
            else:
                text = self._text(prompt)
                scored = [self._echo_score(next(answers), len(text), option) for option in options]
                rows.append(_chat.exclusive(np.array([[s for s, _ in scored]]), [t for _, t in scored])[0].tolist())
        return np.array(rows, dtype=np.float64)

    def score(self, prompts: Sequence[Prompt], options: Sequence[str]) -> np.ndarray:
        return _run_sync(self.ascore(prompts, options))

    def _no_logprobs(self, data: dict[str, Any]) -> BackendError:
        return BackendError(f"{self.base_url} (model {self.model!r}) returned no logprobs, so score() cannot work "
                            f"with it; use a backend that gives them: {_chat.LOGPROB_BACKENDS}. "
                            f"Answer: {str(data)[:200]}")

    def _echo_score(self, data: dict[str, Any], prompt_chars: int, option: str) -> tuple[float, tuple[str, ...]]:
        """Sum of the logprobs of the tokens that start at or after the prompt's end (or straddle it),
        and those tokens."""
        try:
            lp = data["choices"][0]["logprobs"]
        except (KeyError, IndexError, TypeError):
            raise self._no_logprobs(data) from None
        if not isinstance(lp, dict) or not lp.get("token_logprobs") or not lp.get("text_offset"):
            raise self._no_logprobs(data)
        tokens, values, offsets = lp.get("tokens"), lp["token_logprobs"], lp["text_offset"]
        if not (isinstance(tokens, list) and isinstance(values, list) and isinstance(offsets, list)
                and all(isinstance(t, str) for t in tokens) and all(isinstance(o, int) for o in offsets)
                and all(v is None or _is_logprob(v) for v in values)):
            raise BackendError(f"{self.base_url} answered echoed logprobs of an unexpected shape (lists of tokens, "
                               f"token_logprobs of numbers up to 0, not NaN, and text_offset): {str(lp)[:200]}")
        end = prompt_chars + len(option)
        picked = [(t, v) for t, v, o in zip(tokens, values, offsets) if o < end and o + max(len(t), 1) > prompt_chars]
        if not picked or any(v is None for _, v in picked):
            raise BackendError(f"{self.base_url} did not echo the prompt's logprobs (needs echo=True support); "
                               f"use a backend that gives them: {_chat.LOGPROB_BACKENDS}")
        return float(sum(v for _, v in picked)), tuple(t for t, _ in picked)

    def _first_token_scores(self, data: dict[str, Any], options: Sequence[str]) -> list[float]:
        """Each option's log-probability at the first answer token; NaN for all when none is listed."""
        try:
            top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise self._no_logprobs(data) from None
        table: dict[str, float] = {}
        try:
            for entry in top:
                value = entry["logprob"]
                if not isinstance(entry["token"], str) or not _is_logprob(value):
                    raise TypeError
                table[entry["token"].strip()] = max(table.get(entry["token"].strip(), -math.inf), float(value))
        except (KeyError, TypeError):
            raise BackendError(f"{self.base_url} answered top_logprobs of an unexpected shape (token text and a logprob, "
                               f"a number up to 0 and not NaN, per entry): {str(top)[:200]}") from None
        if not table:
            raise self._no_logprobs(data)
        if not any(o.strip() in table for o in options):
            return [math.nan] * len(options)
        floor = min(table.values())
        return [table.get(o.strip(), floor) for o in options]

    # ---- tokens ----------------------------------------------------------------------------------
    def _text(self, prompt: Prompt) -> str:
        if not _chat.is_chat(prompt):
            return prompt
        return _chat.render_hf(self.tokenizer, prompt)

    def count_tokens(self, text: str) -> int:
        """Local tokenizer if given, else the server's tokenize route (vLLM, llama.cpp), else chars / 4."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self._tokenize_route is None:
            self._tokenize_route, self._tokenize_overhead = self._find_tokenize_route()
        if self._tokenize_route == "estimate":
            return math.ceil(len(text) / 4)
        tokens = self._server_tokens(self._tokenize_route, text, self.timeout)
        if tokens is None:
            raise BackendError(f"{self.base_url}: tokenize route {self._tokenize_route} stopped answering")
        return tokens - self._tokenize_overhead

    def _server_tokens(self, route: str, text: str, timeout: float) -> int | None:
        root = self.base_url.removesuffix("/v1")  # both routes live beside /v1, not under it
        body = {"model": self.model, "prompt": text, "add_special_tokens": False, "input": text}
        tokens = (self._ask(root + route, body, timeout) or {}).get("tokens")
        return len(tokens) if isinstance(tokens, list) else None

    def _find_tokenize_route(self) -> tuple[str, int]:
        """The first tokenize route that answers, and the special tokens it adds to any text (e.g. BOS).
        Each route is probed once with the short probe deadline; a server that does not answer raises."""
        for route in ("/tokenize", "/extras/tokenize"):
            one = self._server_tokens(route, "hello", self.probe_timeout)
            if one is None:
                continue
            two = self._server_tokens(route, "hello hello", self.probe_timeout)
            if two is not None:
                return route, 2 * one - two  # "hello" and " hello" are one token each in common vocabularies
        log.warning("%s has no tokenize route; counting tokens as characters / 4 (pass tokenizer=)", self.base_url)
        return "estimate", 0


def default_timeout() -> float:
    """The request deadline when none is given: ``$RERANK_HTTP_TIMEOUT`` (set by ``rerank --http-timeout``) or 60 s."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not _positive(value):
        raise ConfigError(f"${TIMEOUT_ENV}={text!r} is not a positive number of seconds")
    return value


def check_base_url(url: str, what: str) -> str:
    """``url`` without its trailing ``/`` if it is an ``http(s)://`` URL with a host and a valid port."""
    if not isinstance(url, str) or not url.strip() or not url.isprintable() or any(c.isspace() for c in url):
        raise ConfigError(f"{what}: base URL {url!r} is empty or contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ConfigError(f"{what}: {url!r} is not a valid URL ({e})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{what}: URL scheme {parts.scheme or 'missing'!r} is not supported; "
                          "use http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0:
        raise ConfigError(f"{what}: {url!r} is not a valid URL (a host, and a port between 1 and 65535)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{what}: base URL {url!r} must not have a query (?) or a fragment (#)")
    return url.rstrip("/")


MAX_CHARS_PER_TOKEN = 64
"""More characters per asked token than any tokenizer makes: an answer longer than that ignored ``max_tokens``."""


CUT_OFF = ("content_filter", "abort")
"""Finish reasons of an answer the server stopped (a content filter, vLLM's abort): not the model's answer."""

LOGPROB_SLACK = 1e-4
"""How far above 0 a server's log-probability may be, as rounding (llama.cpp gives 0.0 and tiny positives)."""


def _is_logprob(value: Any) -> bool:
    """A log-probability as a server gives one: a number up to 0 (-inf included: probability 0), not NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value) and value <= LOGPROB_SLACK


def _count(value: Any) -> int:
    """A token count of a ``usage`` answer: a whole number >= 0, 0 when absent (TypeError otherwise)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(value)
    return value


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _retry_after(header: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date); None if absent or unreadable."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _load_tokenizer(name: str) -> Any:
    transformers = require("transformers", "hf")
    from rerank.models import hf_location

    source, kwargs = hf_location(name)
    return transformers.AutoTokenizer.from_pretrained(source, **kwargs)


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from code that already runs an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
