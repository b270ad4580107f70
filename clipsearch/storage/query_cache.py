"""Embeddings of recent text queries, per model, in the index's database.

Encoding a text query needs the model, and loading the model (importing torch, reading the
weights) is most of a cold search's time. A repeated query is answered from here instead, so
`clipsearch search "the same words"` a second time loads no model. Raw model outputs are
stored, so switching adapters keeps the cache valid. Beyond `MAX_ENTRIES`, the entries
used longest ago are dropped (a hit refreshes its entry's time, at most once per
`TOUCH_SECONDS`, so a busy server does not write on every search).
"""

from __future__ import annotations

import contextlib
import time
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


class QueryCache:
    def __init__(self, db: Database) -> None:
        self.engine = db.engine

    def get(self, identity: str, texts: Sequence[str]) -> dict[str, Vector]:
        if not texts:
            return {}
        stmt = select(CachedQuery.text, CachedQuery.vector, CachedQuery.used_at).where(
            CachedQuery.identity == identity, CachedQuery.text.in_(list(texts))
        )
        with Session(self.engine) as session:
            rows = session.execute(stmt).all()
        now = time.time()
        stale = [t for t, _, used_at in rows if used_at < now - TOUCH_SECONDS]
        if stale:
            self._touch(identity, stale, now)
        return {t: np.frombuffer(v, dtype=np.float32) for t, v, _ in rows}

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

    def put(self, identity: str, vectors: dict[str, Vector]) -> None:
        """Store (or refresh) entries; a database that cannot be written is left alone."""
        if not vectors:
            return
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
