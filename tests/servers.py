"""Real servers on loopback for tests: ``vllm serve``, llama-cpp-python's server, and a misbehaving one.

Each server runs in its own process group and is stopped by its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server process started by a test session; ``base_url`` ends in ``/v1``."""

    proc: subprocess.Popen
    base_url: str
    log: Path
    started_in: float = 0.0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own group: workers it spawned go too
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_server(cmd: list[str], port: int, *, name: str, env: dict[str, str] | None = None,
                 timeout: float = 300.0) -> Server:
    """Start ``cmd`` and wait until ``GET /v1/models`` answers 200; raise with the log tail if it dies."""
    log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}/v1", log)
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.base_url + "/models", timeout=2).status_code == 200:
                server.started_in = time.monotonic() - started
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{name} was not ready after {timeout} s:\n{server.log_tail()}")


def start_vllm(model_dir: str, served_name: str = "smollm2") -> Server:
    """``vllm serve`` through its module entry point (works with or without the dist-info shim), with
    rerank's constrained-decoding logits processor installed, in the dtype of the in-process engine."""
    from rerank.backends.vllm import cpu_dtype

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name,
           "--dtype", cpu_dtype(), "--max-model-len", "2048", "--enforce-eager", "--seed", "0",
           "--logits-processors", "rerank.backends.vllm_logits:ConstrainedDecoding"]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}  # the server keeps its engine in a worker, whatever this process uses
    return start_server(cmd, port, name="vllm-server", env=env)


def start_llamacpp(gguf: str, served_name: str = "smollm2") -> Server:
    """llama-cpp-python's OpenAI-compatible server, keeping all logits so echo+logprobs work."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", served_name,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--logits_all", "true", "--seed", "0"]
    return start_server(cmd, port, name="llamacpp-server", timeout=120)


@dataclass
class Misbehaving:
    """A real HTTP server whose first path segment picks a failure: ``/<mode>/v1/...``.

    Modes: ``garbage`` (200, not JSON), ``shapeless`` (200, JSON without choices), ``notfound`` (404),
    ``slow`` (answers after ``delay`` s), ``flaky`` (503 twice, then a valid completion),
    ``nologprobs`` (a valid completion without logprobs), ``silent`` (reads the request, never answers,
    also to GET), ``trickle`` (a 200 whose body comes one byte every 0.5 s), ``busy`` (429 with
    ``Retry-After: 1`` once, then a valid completion), ``busylong`` (429 with ``Retry-After: 3600``),
    ``toolong`` (400 to a prompt holding ``POISON``, as vLLM refuses one over its context; else a valid
    completion), and each name of :data:`CANNED` (that malformed or odd answer, 200).
    ``paths`` counts requests by path (``/<mode>/tokenize``, ...), ``times`` keeps when each came and
    ``bodies`` the JSON each POST sent.
    """

    port: int
    delay: float = 3.0
    hits: dict[str, int] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    bodies: list[dict] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)
    _httpd: ThreadingHTTPServer | None = None

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def stop(self) -> None:
        self.closing.set()  # releases silent and trickling handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


VALID = {"choices": [{"text": "ok", "index": 0, "finish_reason": "stop", "logprobs": None}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def _chat(message: dict, **extra) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop", **extra}]}


def _top(entries: list) -> dict:
    return _chat({"content": "x"}, logprobs={"content": [{"token": "x", "logprob": -0.1, "top_logprobs": entries}]})


CANNED = {
    "usagelist": {**VALID, "usage": [1, 2]},
    "usagestr": {**VALID, "usage": {"prompt_tokens": "many"}},
    "reasoningdict": _chat({"content": "[1] > [2]", "reasoning_content": {"steps": 3}}),
    "toptokenint": _top([{"token": 7, "logprob": -0.5}]),
    "toplogprobstr": _top([{"token": "Yes", "logprob": "abc"}]),
    "unlisted": _top([{"token": "The", "logprob": -0.2}, {"token": "A", "logprob": -1.9}]),
    "listed": _top([{"token": " Yes", "logprob": -0.2}, {"token": "The", "logprob": -1.0}]),
    "echonotokens": {"choices": [{"text": "x", "logprobs": {"token_logprobs": [-1.0], "text_offset": [0]}}]},
    "verbose": _chat({"content": "[1] > [2] " * 2000}),  # ignores max_tokens
    "echostrings": {"choices": [{"text": "x", "logprobs": {"tokens": ["a"], "token_logprobs": ["-1"], "text_offset": [0]}}]},
    "topnan": _top([{"token": "Yes", "logprob": -3.0}, {"token": "No", "logprob": float("nan")}]),
    "topinf": _top([{"token": "Yes", "logprob": float("inf")}]),
    "toppositive": _top([{"token": "Yes", "logprob": 5.0}]),
    "echonan": {"choices": [{"text": "x", "logprobs": {"tokens": ["a", "b"], "token_logprobs": [None, float("nan")],
                                                       "text_offset": [0, 1]}}]},
    "filtered": {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}]},
}
"""Answers of the OpenAI shape gone wrong (or odd), by mode name."""


def start_misbehaving(delay: float = 3.0) -> Misbehaving:
    state = Misbehaving(0, delay)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
                pass

        def _count(self) -> str:
            mode = self.path.strip("/").split("/")[0]
            state.hits[mode] = state.hits.get(mode, 0) + 1
            state.paths[self.path] = state.paths.get(self.path, 0) + 1
            state.times.setdefault(mode, []).append(time.monotonic())
            return mode

        def _trickle(self, body: bytes) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if state.closing.wait(0.5):
                        return
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:
            if self._count() == "silent":
                state.closing.wait(60)
                return
            self._send(200, json.dumps({"data": [{"id": "misbehaving"}]}).encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            mode = self._count()
            state.bodies.append(json.loads(body or b"{}"))
            if mode == "silent":
                state.closing.wait(60)
            elif mode == "trickle":
                self._trickle(json.dumps(VALID).encode())
            elif mode == "busy" and state.hits[mode] == 1 or mode == "busylong":
                self.send_response(429)
                self.send_header("Retry-After", "1" if mode == "busy" else "3600")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            elif mode in CANNED:
                self._send(200, json.dumps(CANNED[mode]).encode())
            elif mode == "garbage":
                self._send(200, b"<html>definitely not json</html>", "text/html")
            elif mode == "shapeless":
                self._send(200, b'{"result": 42}')
            elif mode == "notfound":
                self._send(404, b'{"error": {"message": "The model does not exist."}}')
            elif mode == "toolong" and b"POISON" in body:  # as vLLM refuses a prompt over its context
                self._send(400, b'{"error": {"message": "This model\'s maximum context length is 2048 tokens."}}')
            elif mode == "moved":
                self.send_response(301)
                self.send_header("Location", "https://api.example.com/v1/completions")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif mode == "slow":
                time.sleep(state.delay)
                self._send(200, json.dumps(VALID).encode())
            elif mode == "flaky" and state.hits[mode] <= 2:
                self._send(503, b'{"error": "overloaded"}')
            else:  # flaky after two failures, nologprobs
                self._send(200, json.dumps(VALID).encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port, state._httpd = httpd.server_address[1], httpd
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state
