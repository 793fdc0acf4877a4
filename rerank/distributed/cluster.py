"""Start or join a Ray cluster with rerank's network rules.

A cluster started here binds every server to 127.0.0.1, runs no dashboard and sends no usage statistics
(``RAY_USAGE_STATS_ENABLED=0`` is set before Ray is imported). Ray replaces a loopback node address by
the machine's public one unless it runs as a single-machine cluster, the mode it uses on macOS and
Windows (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which this module turns on for local clusters. Joining an existing cluster
(``address="HOST:PORT"``, ``"auto"`` or ``"ray://HOST:10001"``) uses that cluster's own settings;
the rerank variables of this process (cache folder, offline flags) are passed to its workers. An
address of another form, a ``HOST:PORT`` where nothing answers within a few seconds, or one where
something answers but not as Ray does, is a :class:`ConfigError` before Ray is asked (Ray itself would
retry for minutes, or for 20 s with a warning a second). "As Ray does": one gRPC call (grpcio) of a
method that every Ray GCS (for ``ray://``, every Ray client server) serves gets a reply or a refusal
other than "unimplemented"; a plain socket or an HTTP/1 server gives no gRPC answer, another gRPC
server "unimplemented". The method names are Ray's wire protocol, not a Python API (checked against
the pinned Ray 2.60 by the tests). With ``RAY_USE_TLS=1`` only the TCP answer is checked.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import threading
import time
from typing import Any

from rerank.errors import ConfigError, RerankError, one_line, require

PROBE_TIMEOUT = 3.0
"""Seconds to wait for a TCP answer at a cluster's ``HOST:PORT``, and for its answer to a gRPC call, before giving up."""

GCS_METHOD, CLIENT_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId", "/ray.rpc.RayletDriver/ClusterInfo"
"""gRPC methods that every Ray GCS, and every Ray client server, serves: the probe calls one of them."""

PASSED_ENV = ("RERANK_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "PYTHONPATH",
              "RERANK_PLUGINS")
"""Variables of the driver that every worker gets, so workers read the same caches and models."""


def import_ray() -> Any:
    """Ray, imported with usage statistics off (or an install hint)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    return require("ray", "ray")


def parse_address(address: Any) -> tuple[str, int] | None:
    """The ``(host, port)`` of a Ray address ``"HOST:PORT"`` or ``"ray://HOST:PORT"``; None for ``"auto"``.

    >>> parse_address("ray://10.0.0.5:10001")
    ('10.0.0.5', 10001)
    >>> parse_address("garbage:abc")
    Traceback (most recent call last):
    ...
    rerank.errors.ConfigError: bad Ray address 'garbage:abc'; use HOST:PORT, ray://HOST:PORT or auto
    """
    if address == "auto":
        return None
    scheme, sep, rest = str(address).partition("://")
    if sep and scheme != "ray":  # http://HOST:8265 is the dashboard's, for job submission, not a cluster's
        raise ConfigError(f"bad Ray address {address!r}: a cluster is joined at HOST:PORT (its GCS, port 6379 by "
                          f"default) or ray://HOST:PORT (its client server, 10001), not {scheme}://")
    host, _, port = str(address).removeprefix("ray://").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad Ray address {address!r}; use HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            object_store_memory: int | None = None) -> bool:
    """Join the cluster at ``address``, or start a local one on loopback when ``address`` is None.

    Does nothing when Ray is already initialized in this process, but refuses (ConfigError) an
    ``address`` other than the cluster it is connected to. Returns True when this call initialized
    Ray, so the caller knows to :func:`shutdown` it.
    """
    if address is not None:
        parse_address(address)  # a bad form fails here, before Ray is asked
    else:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when Ray is imported
    ray = import_ray()
    if ray.is_initialized():
        _check_joined(ray, address)
        return False
    if address is None:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    common: dict[str, Any] = {"runtime_env": {"env_vars": env} if env else None, "log_to_driver": False,
                              "configure_logging": False}
    if address is not None:
        _probe(address, *_target(address))
        try:
            _init(ray, address=address, **common)
        except (ConnectionError, ValueError) as e:
            shutdown()
            raise ConfigError(f"cannot join the Ray cluster at {address!r}: {e}") from None
    else:
        # "local" starts a new cluster: with no address Ray would join $RAY_ADDRESS or the last `ray start`
        _init(ray, address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory,
              include_dashboard=False, _node_ip_address="127.0.0.1", **common)
        exposed = [n["NodeManagerAddress"] for n in ray.nodes() if n["NodeManagerAddress"] != "127.0.0.1"]
        if exposed:
            ray.shutdown()
            raise ConfigError(f"the local Ray cluster came up on {exposed}, not 127.0.0.1; stopped it")
    return True


def _init(ray: Any, **options: Any) -> None:
    """``ray.init``, keeping this process's own SIGTERM handling: Ray's sets ``sys.exit`` and its core
    worker a C++ handler that prints a stack dump, so a terminated command died without its clean-ups."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(**options)
    if before is not None:
        signal.signal(signal.SIGTERM, before)


def _check_joined(ray: Any, address: str | None) -> None:
    """ConfigError when ``address`` names another cluster than the one this process is connected to (Ray
    joins one cluster per process; the work would otherwise run on the first, whatever was asked)."""
    if address in (None, "auto") or address.startswith("ray://"):
        return
    try:
        joined = ray.get_runtime_context().gcs_address
    except Exception:  # a client connection has no GCS address here
        return
    asked, (host, port) = parse_address(address), parse_address(joined)
    same_host = asked[0] == host or {asked[0], host} <= {"127.0.0.1", "localhost", _this_ip()}
    if asked[1] != port or not same_host:
        raise ConfigError(f"this process is already connected to the Ray cluster at {joined}; it cannot also use "
                          f"{address!r} (one cluster per process): use that one, or run in a new process")


def _this_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _target(address: str) -> tuple[str, int]:
    """The host and port Ray connects to for ``address``: a client's as given; a cluster's as Ray
    resolves it (``"auto"``: ``$RAY_ADDRESS`` or the running cluster; a loopback host: this machine's IP)."""
    if address.startswith("ray://"):
        return parse_address(address)  # type: ignore[return-value]
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        found = canonicalize_bootstrap_address_or_die(address)
    except (ConnectionError, ValueError) as e:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {e}") from None
    return parse_address(found)  # type: ignore[return-value]  # HOST:PORT


def _probe(address: str, host: str, port: int) -> None:
    """Raise :class:`ConfigError` unless a Ray GCS (a Ray client server for ``ray://``) answers at ``host:port``."""
    via = "" if address.removeprefix("ray://") == f"{host}:{port}" else f" (Ray connects to {host}:{port})"
    try:
        conn = socket.create_connection((host, port), timeout=PROBE_TIMEOUT)
    except OSError as e:
        rewritten = (" (Ray rewrites a loopback address to this machine's: a cluster that listens on 127.0.0.1 only, as "
                     "the one rerank starts, is joined through a Ray client server started beside it, python -m "
                     "ray.util.client.server --host 127.0.0.1 --port P --address GCS, as ray://127.0.0.1:P)") if via and \
                    (parse_address(address) or ("",))[0] in ("127.0.0.1", "localhost") else ""
        raise ConfigError(f"no Ray cluster answers at {address!r}{via}: {e or type(e).__name__}; "
                          f"start one (ray start --head) or check the address{rewritten}") from None
    conn.close()
    client = address.startswith("ray://")
    if _tls() or _serves(host, port, CLIENT_METHOD if client else GCS_METHOD):
        return
    raise ConfigError(f"{address!r}{via} is not a Ray cluster: it accepts connections but does not answer as a "
                      f"{'Ray client server' if client else 'Ray GCS'} does within {PROBE_TIMEOUT:g} s; check the address "
                      "and port (HOST:PORT takes the GCS port, default 6379; ray://HOST:PORT the Ray client port, default 10001)")


def _serves(host: str, port: int, method: str) -> bool:
    """Whether the server at ``host:port`` serves the gRPC ``method``: a call of it with an empty request
    gets a reply, or any status but UNIMPLEMENTED (a cluster with token authentication refuses the call,
    but knows the method); a server that is not gRPC, or does not answer in time, is UNAVAILABLE or
    DEADLINE_EXCEEDED."""
    grpc = require("grpc", "ray")
    options = [("grpc.enable_http_proxy", 0)]  # the probe goes where Ray will go, never through a proxy
    with grpc.insecure_channel(f"{host}:{port}", options=options) as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        try:
            call(b"", timeout=PROBE_TIMEOUT)
        except grpc.RpcError as e:
            return e.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return True


def _tls() -> bool:
    """Whether Ray talks TLS (``RAY_USE_TLS``): the GCS then answers only after a TLS handshake."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


ROOM_WAIT = 5.0
"""Seconds :func:`fitting` waits on a local cluster for resources that actors being stopped still hold."""


RAY_STEP = 1e-4
"""Ray counts a fractional resource in steps of this (0.00005 CPU is refused with a raw ValueError)."""


def ray_share(amount: float) -> float:
    """``amount`` of a resource rounded down to a step Ray takes (a computed share such as 1/3 of what is free)."""
    return amount if amount >= 1 else round(math.floor(amount / RAY_STEP + 1e-9) * RAY_STEP, 4)


def check_ray_amount(value: float, name: str, what: str) -> None:
    """ConfigError for an amount below 1 that is not a multiple of :data:`RAY_STEP` (Ray's own error is a traceback)."""
    if 0 < value < 1 and abs(value / RAY_STEP - round(value / RAY_STEP)) > 1e-6:
        raise ConfigError(f"{what}: {name}={value:g} is finer than Ray counts resources (steps of {RAY_STEP:g}); round it")


def fitting(count: int | None, num_cpus: float, num_gpus: float, what: str, resources: dict[str, float] | None = None) -> int:
    """How many actors of ``num_cpus``, ``num_gpus`` and custom ``resources`` each to start: ``count``, or
    (None) as many as the cluster has free. A cluster on loopback only (a local one) never grows, so there
    actors that could never all start, or that ask for a resource it lacks, are a :class:`ConfigError`
    rather than a wait without end (resources other actors of this process are releasing get a few
    seconds). Elsewhere a warning says the others wait."""
    ray = import_ray()
    local = all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes() if n.get("Alive", True))
    total = ray.cluster_resources()
    lacking = {k: v for k, v in (resources or {}).items() if total.get(k, 0) < v}
    if lacking and local:
        raise ConfigError(f"{what}: resources {lacking} per actor, but the local Ray cluster has "
                          f"{ {k: total.get(k, 0) for k in lacking} } (start it with those resources, or leave them out)")
    if num_gpus and total.get("GPU", 0) < num_gpus and local:
        raise ConfigError(f"{what}: num_gpus={num_gpus:g} per actor, but the local Ray cluster has "
                          f"{total.get('GPU', 0):g} GPUs")
    deadline = time.monotonic() + ROOM_WAIT
    while True:
        free = ray.available_resources()
        fits = [int(free.get("CPU", 0) // num_cpus + 1e-9)] if num_cpus else []
        fits += [int(free.get("GPU", 0) // num_gpus + 1e-9)] if num_gpus else []
        room = min(fits) if fits else (count or 1)
        wanted = count or max(room, 1)
        if room >= wanted or not local or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if room < wanted and local:
        raise ConfigError(f"{what}: {wanted} actor(s) of {num_cpus:g} CPU and {num_gpus:g} GPU each do not fit the "
                          f"local Ray cluster ({free.get('CPU', 0):g} of {total.get('CPU', 0):g} CPUs free; other actors "
                          "of this process hold the rest): ask for fewer or smaller actors, or close the others first")
    if room < wanted:
        logging.getLogger("rerank").warning("%s: %d actors of %g CPU and %g GPU each do not fit the cluster now (%d do): "
                                            "work goes to those that start", what, wanted, num_cpus, num_gpus, room)
    return wanted


def ray_reason(error: BaseException) -> str:
    """One line for what went wrong in a Ray task or actor: the exception it raised (a rerank error's own
    message), else the last line of Ray's report, without its colour codes."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return one_line(cause if isinstance(cause, RerankError) else f"{type(cause).__name__}: {cause}")
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else type(error).__name__)


def shutdown() -> None:
    """Disconnect from Ray (and stop the local cluster if this process started it)."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
