"""How a server runs: which index, where it listens, who may ask, and its limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from clipsearch.errors import ConfigError

#: Uploaded query images larger than this are refused with 413 before they are decoded.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20


@dataclass(frozen=True)
class ServerSettings:
    db: str | Path  # a folder (SQLite) or a PostgreSQL URL
    cache_dir: Path | None = None  # local caches of a server database (default: user cache)
    model: str | None = None  # default: the model the index was built with
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # required when `host` is not a loopback address
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are named
    read_only: bool = False  # refuse indexing jobs
    #: Make a new, empty index at `db` when none is there (filled by indexing jobs); without
    #: it, a `db` that holds no index is refused, so a typo does not serve an empty one.
    create: bool = False
    #: Other indexes of the same photos (other models) a request may fuse with
    #: (`ensemble`), opened at start and held open.
    ensemble: tuple[str, ...] = ()
    batch_queries: bool = True  # encode text queries of concurrent requests together
    device: str | None = None
    runtime: str | None = None  # torch, onnx, openvino, auto; default: as the index was built
    precision: str | None = None  # fp32, int8; default: as the index was built
    workers: int = 2  # decoding processes of indexing jobs
    #: Worker threads for searches and file requests. Few: they are CPU-bound, Python runs
    #: one at a time, and more threads only queue behind each other (requests waiting for
    #: their query to be encoded hold none). Measured in benchmarks/results/serve.md.
    threads: int = 4
    #: Search image vectors in this many shards held by Ray actors (0: in this process);
    #: `ray`: the cluster's address (`auto`, HOST:PORT, `local`).
    shards: int = 0
    ray: str | None = None
    #: Searches answered at once; one more is refused with 429 (`server.admission`).
    max_inflight: int = 64
    #: Seconds a search may wait (for its batch, for a thread) before it is answered 503.
    deadline: float = 5.0

    def check(self) -> None:
        """Refuse settings that would expose the collection by accident."""
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                f"serving on {self.host} makes your photos reachable from other machines; "
                "set an API key with --api-key or CLIPSEARCH_API_KEY (clients then send it as "
                "the X-API-Key header), or bind to 127.0.0.1"
            )
        if self.shards < 0:
            raise ConfigError(f"--shards must be at least 1, got {self.shards}")
        if self.shards and self.ray is None:
            raise ConfigError("--shards needs a Ray cluster: add --ray auto|HOST:PORT|local")
        if self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.max_inflight < 1:
            raise ConfigError(f"--max-inflight must be at least 1, got {self.max_inflight}")
        if not self.deadline > 0:
            raise ConfigError(
                f"--deadline must be a positive number of seconds, got {self.deadline}"
            )
        if self.max_upload_bytes < 1:
            raise ConfigError(f"the upload limit must be positive, got {self.max_upload_bytes}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
