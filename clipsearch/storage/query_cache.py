"""Embeddings of recent text queries, per model, in the index's database.

Encoding a text query needs the model, and loading the model (importing torch, reading the
weights) is most of a cold search's time. A repeated query is answered from here instead, so
`clipsearch search "the same words"` a second time loads no model. Raw model outputs are
stored, so switching adapters keeps the cache valid. Beyond `MAX_ENTRIES`, the entries
used longest ago are dropped (a hit refreshes its entry's time, at most once per
`TOUCH_SECONDS`, so a busy server does not write on every search).

The entries used last are also held in memory (`MEMORY_ENTRIES`): a server reads a query's
vector right after encoding it, and a repeated query then costs no read at all. A server
also writes new entries `later`: together, in one transaction a second (`flush`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from clipsearch.arrays import Vector
from clipsearch.errors import ClipsearchError
from clipsearch.storage import dialect
from clipsearch.storage.db import Database
from clipsearch.storage.schema import CachedQuery

MAX_ENTRIES = 10_000
TOUCH_SECONDS = 600.0
MEMORY_ENTRIES = 4096
#: Entries written `later` wait at most this long for the others of their transaction.
FLUSH_SECONDS = 1.0


class QueryCache:
    def __init__(self, db: Database) -> None:
        self.engine = db.engine
        self._memory: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._pending: dict[str, dict[str, Vector]] = {}  # by identity, written by `flush`
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def held(self, identity: str, texts: Sequence[str]) -> dict[str, Vector]:
        """The entries among `texts` held in memory (no read of the table)."""
        found: dict[str, Vector] = {}
        with self._lock:
            for t in texts:
                vector = self._memory.get((identity, t))
                if vector is not None:
                    self._memory.move_to_end((identity, t))
                    found[t] = vector
        return found

    def get(self, identity: str, texts: Sequence[str]) -> dict[str, Vector]:
        found = self.held(identity, texts)
        rest = [t for t in dict.fromkeys(texts) if t not in found]
        if not rest:
            return found
        stmt = select(CachedQuery.text, CachedQuery.vector, CachedQuery.used_at).where(
            CachedQuery.identity == identity, CachedQuery.text.in_(rest)
        )
        with Session(self.engine) as session:
            rows = session.execute(stmt).all()
        now = time.time()
        stale = [t for t, _, used_at in rows if used_at < now - TOUCH_SECONDS]
        if stale:
            self._touch(identity, stale, now)
        read = {t: np.frombuffer(v, dtype=np.float32) for t, v, _ in rows}
        self._hold(identity, read)
        return found | read

    def _hold(self, identity: str, vectors: dict[str, Vector]) -> None:
        with self._lock:
            for t, v in vectors.items():
                self._memory[(identity, t)] = v
                self._memory.move_to_end((identity, t))
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def _touch(self, identity: str, texts: list[str], now: float) -> None:
        stmt = (
            update(CachedQuery)
            .where(CachedQuery.identity == identity, CachedQuery.text.in_(texts))
            .values(used_at=now)
        )
        with (
            contextlib.suppress(OperationalError, ClipsearchError),  # e.g. read-only
            Session(self.engine) as session,
            session.begin(),
        ):
            session.execute(stmt)

    def put(self, identity: str, vectors: dict[str, Vector], later: bool = False) -> None:
        """Store (or refresh) entries; a database that cannot be written is left alone.
        `later`: held in memory now, written with the others of the next second (`flush`)."""
        if not vectors:
            return
        vectors = {t: np.ascontiguousarray(v, dtype=np.float32) for t, v in vectors.items()}
        self._hold(identity, vectors)
        if not later:
            self._write(identity, vectors)
            return
        with self._lock:
            self._pending.setdefault(identity, {}).update(vectors)
            if self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the entries held for `later` now."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        for identity, vectors in pending.items():
            self._write(identity, vectors)

    def _write(self, identity: str, vectors: dict[str, Vector]) -> None:
        now = time.time()
        rows = [
            {"identity": identity, "text": t, "used_at": now,
             "vector": np.ascontiguousarray(v, dtype="<f4").tobytes()}
            for t, v in vectors.items()
        ]  # fmt: skip
        try:
            with Session(self.engine) as session, session.begin():
                stmt = dialect.upsert(session.connection(), CachedQuery)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[CachedQuery.identity, CachedQuery.text],
                    set_={"vector": stmt.excluded.vector, "used_at": stmt.excluded.used_at},
                )
                session.execute(stmt, rows)
                count = int(session.scalar(select(func.count()).select_from(CachedQuery)) or 0)
                if count > MAX_ENTRIES:
                    oldest = select(CachedQuery.used_at).order_by(CachedQuery.used_at)
                    cutoff = session.scalar(oldest.offset(count - MAX_ENTRIES).limit(1))
                    session.execute(delete(CachedQuery).where(CachedQuery.used_at < cutoff))
        except (OperationalError, ClipsearchError):  # read-only, full, or locked too long
            pass
