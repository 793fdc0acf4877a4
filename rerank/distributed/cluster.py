"""Start or join a Ray cluster with rerank's network rules.

A cluster started here binds every server to 127.0.0.1, runs no dashboard and sends no usage statistics
(``RAY_USAGE_STATS_ENABLED=0`` is set before Ray is imported). Ray replaces a loopback node address by
the machine's public one unless it runs as a single-machine cluster, the mode it uses on macOS and
Windows (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which this module turns on for local clusters. Joining an existing cluster
(``address="HOST:PORT"``, ``"auto"`` or ``"ray://HOST:10001"``) uses that cluster's own settings;
the rerank variables of this process (cache folder, offline flags) are passed to its workers.
"""

from __future__ import annotations

import os
from typing import Any

from rerank.errors import ConfigError, require

PASSED_ENV = ("RERANK_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "PYTHONPATH")
"""Variables of the driver that every worker gets, so workers read the same caches and models."""


def import_ray() -> Any:
    """Ray, imported with usage statistics off (or an install hint)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    return require("ray", "ray")


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            object_store_memory: int | None = None) -> bool:
    """Join the cluster at ``address``, or start a local one on loopback when ``address`` is None.

    Does nothing when Ray is already initialized in this process. Returns True when this call
    initialized Ray, so the caller knows to :func:`shutdown` it.
    """
    if address is None:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when Ray is imported
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    common: dict[str, Any] = {"runtime_env": {"env_vars": env} if env else None, "log_to_driver": False,
                              "configure_logging": False}
    if address:
        ray.init(address=address, **common)
    else:
        # "local" starts a new cluster: with no address Ray would join $RAY_ADDRESS or the last `ray start`
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory,
                 include_dashboard=False, _node_ip_address="127.0.0.1", **common)
        exposed = [n["NodeManagerAddress"] for n in ray.nodes() if n["NodeManagerAddress"] != "127.0.0.1"]
        if exposed:
            ray.shutdown()
            raise ConfigError(f"the local Ray cluster came up on {exposed}, not 127.0.0.1; stopped it")
    return True


def shutdown() -> None:
    """Disconnect from Ray (and stop the local cluster if this process started it)."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
