"""The executor seam: specs, the local executor's order, the hint when Ray is missing, and Ray's bad
addresses and settings (refused without a running cluster)."""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from conftest import optional

from rerank.errors import ConfigError, MissingDependency
from rerank.executors import Executor, LocalExecutor, executor_from_spec


def _square(x: int) -> int:
    return x * x


def test_local_executor_yields_results_in_item_order_lazily():
    seen = []

    def record(x):
        seen.append(x)
        return _square(x)

    results = LocalExecutor().map(record, [3, 1, 2])
    assert seen == []                                   # nothing runs before the caller asks
    assert next(results) == 9 and seen == [3]
    assert list(results) == [1, 4]


@pytest.mark.parametrize("spec", [None, "local", " local "])
def test_local_specs(spec):
    assert isinstance(executor_from_spec(spec), LocalExecutor)


def test_an_executor_object_is_used_as_is():
    mine = LocalExecutor()
    assert executor_from_spec(mine) is mine and isinstance(mine, Executor)


@pytest.mark.parametrize("spec", ["nope", "local:x", "ray:", "", 3])
def test_bad_specs_are_refused_in_one_line(spec):
    with pytest.raises(ConfigError) as e:
        executor_from_spec(spec)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed here")
def test_ray_without_ray_names_the_extra():
    with pytest.raises(MissingDependency, match=r"rerank\[ray\]"):
        executor_from_spec("ray")


# -- Ray: bad addresses and settings fail fast, in one line, and leave no cluster running ------------
@pytest.mark.parametrize(("spec", "message"), [
    ("ray:127.0.0.1:1", "no Ray cluster answers at '127.0.0.1:1'"),              # a closed port
    ("ray:ray://127.0.0.1:1", "no Ray cluster answers at 'ray://127.0.0.1:1'"),  # a Ray client address
    ("ray:garbage:abc", "bad Ray address 'garbage:abc'"),
    ("ray:127.0.0.1:99999", "bad Ray address"),
    ("ray:127.0.0.1", "bad Ray address"),
    ("ray:local", "bad Ray address 'local'"),
    ("ray:http://127.0.0.1:8265", "not http://"),                               # the dashboard's address
])
def test_bad_ray_addresses_fail_fast_in_one_line(spec, message):
    ray = optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        executor_from_spec(spec)
    assert time.monotonic() - started < 30 and "\n" not in str(e.value)
    assert not ray.is_initialized()


def test_ray_auto_without_a_cluster_is_a_config_error(monkeypatch):
    ray = optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    from ray._private.services import find_bootstrap_address, find_gcs_addresses

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # where "auto" points first: nothing listens there
    with pytest.raises(ConfigError, match="no Ray cluster answers at 'auto'"):
        executor_from_spec("ray:auto")
    monkeypatch.delenv("RAY_ADDRESS")
    if find_gcs_addresses() or find_bootstrap_address(None):
        pytest.skip("a Ray cluster runs on this machine, so 'auto' finds one")
    with pytest.raises(ConfigError, match="cannot join the Ray cluster at 'auto': Could not find any running Ray"):
        executor_from_spec("ray:auto")
    assert not ray.is_initialized()


def test_cli_with_a_closed_ray_port_exits_2_in_one_line():
    optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    args = ["--quiet", "eval", "--dataset", "cranfield", "--pipeline", "bm25", "--limit", "2",
            "--executor", "ray:127.0.0.1:1"]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rerank.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "no Ray cluster answers at '127.0.0.1:1'" in proc.stderr


class QuietHandler(BaseHTTPRequestHandler):
    """Answers HTTP/1 requests (an HTTP/2 preface gets 505) and logs nothing."""

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=["socket", "http"])
def not_ray_port(request) -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections but is no Ray cluster: a listening socket that never
    answers, or an HTTP/1 server."""
    if request.param == "socket":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            yield s.getsockname()[1]
        return
    server = HTTPServer(("127.0.0.1", 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_port_that_is_no_ray_cluster_fails_fast_in_one_line(not_ray_port):
    ray = optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    address = f"ray://127.0.0.1:{not_ray_port}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=re.escape(f"{address!r} is not a Ray cluster")) as e:
        executor_from_spec(f"ray:{address}")
    assert time.monotonic() - started < 10 and "\n" not in str(e.value)
    assert not ray.is_initialized()


def test_cli_with_a_port_that_is_no_ray_cluster_exits_2_in_one_line(not_ray_port):
    optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    args = ["--quiet", "eval", "--dataset", "cranfield", "--pipeline", "bm25", "--limit", "2",
            "--executor", f"ray:127.0.0.1:{not_ray_port}"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray keeps 127.0.0.1
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rerank.cli", *args], capture_output=True, text=True, timeout=120, env=env)
    assert time.monotonic() - started < 30  # Ray itself retries for minutes, printing a warning every few seconds
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and f"'127.0.0.1:{not_ray_port}' is not a Ray cluster" in proc.stderr


@pytest.mark.parametrize("settings", [
    {"workers": 2.5}, {"workers": True}, {"workers": 0}, {"workers": -1}, {"workers": "2"},
    {"num_cpus": float("nan")}, {"num_cpus": float("inf")}, {"num_cpus": -1}, {"num_cpus": "1"}, {"num_cpus": None},
    {"num_gpus": float("nan")}, {"num_gpus": True}, {"max_retries": 1.5}, {"max_retries": -1},
    {"max_retries": None}, {"threads": 0}, {"threads": 2.0}, {"resources": {"big": float("nan")}},
    {"resources": ["big"]}, {"resources": {"CPU": 1}}, {"address": 3}, {"address": ""},
])
def test_bad_ray_executor_settings_are_refused_before_ray_starts(settings):
    ray = optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    from rerank.distributed.ray import RayExecutor

    with pytest.raises(ConfigError) as e:
        RayExecutor(**settings)
    assert "\n" not in str(e.value)
    assert not ray.is_initialized()


def test_a_setting_ray_refuses_after_starting_a_cluster_stops_that_cluster():
    ray = optional("ray", "needs the ray extra (pip install 'rerank[ray]')")
    from rerank.distributed.ray import RayExecutor

    with pytest.raises(ConfigError, match="whole numbers|num_gpus=1.5 per actor, but the local Ray cluster has 0 GPUs") as e:
        RayExecutor(num_gpus=1.5)  # Ray checks whole numbers when a worker starts; rerank, GPUs a local cluster lacks
    assert not ray.is_initialized() and str(e.value).count("RayExecutor:") == 1
