"""Vector shards in Ray actors, for collections beyond one machine's memory.

`ShardedVectors` is a `VectorIndex`: a query fans out to N `ShardWorker` actors, each
holding a FAISS index of the image vectors whose id is its number modulo N, built from the
store (PostgreSQL, or an SQLite file every node can read); each returns its best
candidates, and the merge goes on to the searcher's exact rescoring on the stored vectors,
so the hits equal a single-process search over the same data. A filter's ids are split
among the shards the same way.

A shard actor that dies is restarted by Ray and builds its index again from the store. Until
it is back, and while any shard is building, a search raises `ShardUnavailableError` (the
server answers 503): never a result with a shard missing. A shard notices writes to the
store (the generation moves; looked up at most every `refresh_s`) and rebuilds in the
background, answering from its previous index until the new one is ready (rows deleted
meanwhile never show: the exact rescoring reads only rows that exist).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipsearch.arrays import IdArray, Matrix
from clipsearch.cluster.connect import connect
from clipsearch.errors import ClipsearchError, ClusterError, ShardUnavailableError

#: How long a search waits for every shard before answering 503.
SEARCH_TIMEOUT_S = 30.0


class ShardWorker:
    """A Ray actor holding one shard's FAISS index, built in a background thread."""

    def __init__(self, db: str, shard: int, shards: int, refresh_s: float = 1.0) -> None:
        self.where, self.shard, self.shards, self.refresh_s = db, shard, shards, refresh_s
        self.index: Any = None
        self.identity = ""
        self.error: str | None = None
        self._db: Any = None
        self._building = False
        self._checked = 0.0
        self._lock = threading.Lock()
        self._start_build()

    def _store(self) -> Any:
        from clipsearch.storage.db import Database
        from clipsearch.storage.location import locate

        if self._db is None:
            self._db = Database.open(locate(self.where), create=False)
        return self._db

    def _start_build(self) -> None:
        with self._lock:
            if self._building:
                return
            self._building = True
        threading.Thread(target=self._build, daemon=True).start()

    def _build(self) -> None:
        from clipsearch.adapters.space import stored_space
        from clipsearch.storage.frames import ImageVectors
        from clipsearch.storage.vector_index import build_from_db, choose_index

        try:
            db = self._store()
            space = stored_space(db)
            if space is None:
                raise ClusterError(f"the index at {db.location.label} is empty")
            table = space.image_store(ImageVectors(db, (self.shard, self.shards)))
            index = build_from_db(table, space.dim, choose_index("auto", table.count()))
            self.index, self.identity, self.error = index, space.identity, None
        except Exception as exc:  # reported by every search until a rebuild succeeds
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._building = False
            self._checked = time.monotonic()

    def status(self) -> dict[str, Any]:
        index = self.index
        return {
            "shard": self.shard, "ready": index is not None, "building": self._building,
            "vectors": index.ntotal if index is not None else 0,
            "kind": index.kind if index is not None else None,
            "generation": index.generation if index is not None else None,
            "error": self.error,
        }  # fmt: skip

    def search(
        self, queries: Matrix, k: int, allowed: IdArray | None, identity: str
    ) -> tuple[Matrix, IdArray]:
        """This shard's best k for each query, in the search space `identity` (the one the
        caller rescores in)."""
        index = self.index
        if index is None or self.identity != identity:
            if index is not None and not self._building:
                self._start_build()  # another adapter became active
            reason = f" ({self.error})" if self.error else ""
            raise ShardUnavailableError(
                f"vector shard {self.shard + 1} of {self.shards} is being built{reason}; "
                "retry shortly"
            )
        if not self._building and time.monotonic() - self._checked > self.refresh_s:
            self._checked = time.monotonic()
            if index.generation != self._store().generation():
                self._start_build()  # catch up in the background; answer from this meanwhile
        if allowed is not None and len(allowed) == 0:
            return _empty(len(queries), k)
        scores, ids = index.search(queries, k, allowed)
        return scores, ids


def _empty(rows: int, k: int) -> tuple[Matrix, IdArray]:
    return np.full((rows, k), -np.inf, dtype=np.float32), np.full((rows, k), -1, dtype=np.int64)


class ShardedVectors:
    """A `VectorIndex` over `shards` ShardWorker actors spread across the cluster at
    `address`, for the index stored at `db` (a PostgreSQL URL, or a folder every node sees).
    `identity`: the search space queries are in (`at`)."""

    exact = False  # candidates are merged, then rescored exactly by the searcher

    def __init__(self, db: str, shards: int, address: str = "auto", retries: int = -1) -> None:
        if shards < 1:
            raise ClusterError(f"shards must be at least 1, got {shards}")
        self.ray = connect(address)
        actor = self.ray.remote(ShardWorker)
        token = uuid.uuid4().hex[:8]  # named, so an operator (or a test) can find them
        self.shards = [
            actor.options(
                name=f"clipsearch-shard-{i + 1}-of-{shards}-{token}", num_cpus=0,
                scheduling_strategy="SPREAD", max_restarts=retries, max_task_retries=0,
            ).remote(db, i, shards)
            for i in range(shards)
        ]  # fmt: skip
        self.identity = ""

    def at(self, identity: str) -> ShardedVectors:
        """Searches from now on are in this search space (a model, or model + adapter)."""
        self.identity = identity
        return self

    def status(self) -> list[dict[str, Any]]:
        return list(self.ray.get([s.status.remote() for s in self.shards]))

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Block until every shard holds an index (or raise ClusterError saying why not)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.status()
            if all(s["ready"] for s in states):
                return
            failed = [s for s in states if s["error"] and not s["building"]]
            if failed or time.monotonic() > deadline:
                why = failed[0]["error"] if failed else f"not ready after {timeout:.0f} s"
                raise ClusterError(f"vector shards could not be built: {why}")
            time.sleep(0.1)

    def search(
        self, queries: Matrix, k: int, allowed: IdArray | None = None
    ) -> tuple[Matrix, IdArray]:
        n = len(self.shards)
        x = np.ascontiguousarray(queries, dtype=np.float32)
        subsets: list[IdArray | None] = [None] * n
        if allowed is not None:
            owner = np.asarray(allowed) % n  # the shard of each allowed id
            subsets = [allowed[owner == i] for i in range(n)]
        refs = [
            shard.search.remote(x, k, mine, self.identity)
            for shard, mine in zip(self.shards, subsets, strict=True)
        ]
        exceptions = self.ray.exceptions
        try:
            parts = self.ray.get(refs, timeout=SEARCH_TIMEOUT_S)
        except exceptions.RayTaskError as exc:  # raised in a shard: say it plainly
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ClipsearchError):
                raise type(cause)(str(cause)) from None
            raise ClusterError(f"a vector shard failed: {cause or exc}") from exc
        except exceptions.GetTimeoutError as exc:
            raise ShardUnavailableError(
                f"a vector shard did not answer within {SEARCH_TIMEOUT_S:.0f} s; retry shortly"
            ) from exc
        except (exceptions.RayActorError, exceptions.ActorUnavailableError) as exc:
            raise ShardUnavailableError(
                "a vector shard is restarting (its actor or node was lost); retry shortly"
            ) from exc
        return merge_candidates(parts, k)


def merge_candidates(parts: Sequence[tuple[Matrix, IdArray]], k: int) -> tuple[Matrix, IdArray]:
    """Per-shard (scores, ids) -> the best k per query over all shards (ids -1 pad)."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
