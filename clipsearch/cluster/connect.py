"""Joining a Ray cluster: Ray is an optional dependency (`pip install 'clipsearch[cluster]'`),
imported only here and only when a cluster is asked for."""

from __future__ import annotations

from types import ModuleType

from clipsearch.errors import ClusterError

INSTALL_HINT = "install it with `pip install 'clipsearch[cluster]'`"


def require_ray() -> ModuleType:
    """The `ray` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"Ray is not installed; {INSTALL_HINT}") from exc
    return ray


def connect(address: str) -> ModuleType:
    """Join the cluster at `address` unless this process already has: `auto` (the cluster
    started on this machine with `ray start`, or `RAY_ADDRESS`), `local` (a one-machine
    cluster started for this process), or `HOST:PORT` / `ray://HOST:PORT`."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    try:
        if address == "local":
            ray.init(include_dashboard=False, logging_level="WARNING")
        else:
            ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
    return ray


def node_resources(ray: ModuleType) -> tuple[int, float, float]:
    """(alive nodes that offer CPUs, CPUs, GPUs) of the cluster this process has joined."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes)
    gpus = sum(n.get("Resources", {}).get("GPU", 0.0) for n in nodes)
    return len(nodes), cpus, gpus
