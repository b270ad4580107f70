"""The keyword index of a PostgreSQL store: PostgreSQL's own full-text search.

Each image's document (`storage.words`) becomes one `tsvector` in the table
`clipsearch_keywords` of the index's database (a GIN index over it), its fields weighted
A (file name, XMP keywords), B (captions and sidecars, text in the photo) and C (folders,
tags, camera), with the `english` configuration (stemming, stop words). A search ranks by
`ts_rank_cd` with those weights. Like every cache, the table is rebuilt from the store's own
rows: it is brought in step before each search by per-image digests, under an advisory lock
so that one process does it at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.exc import DBAPIError

from clipsearch.errors import ReadOnlyIndexError
from clipsearch.storage.db import Database
from clipsearch.storage.keyword_index import SIZE, Counts, Pace
from clipsearch.storage.words import FIELDS, Document, changed_documents, documents, stamp

log = logging.getLogger(__name__)

TABLE = "clipsearch_keywords"
STATE = "clipsearch_keywords_state"
CONFIG = "english"
#: The `setweight` class of each field (A counts most).
CLASSES = {"name": "A", "keywords": "A", "caption": "B", "ocr": "B", "folder": "C",
           "tags": "C", "camera": "C"}  # fmt: skip
#: Any key for the advisory lock that serialises refreshes (not the writer lock's).
REFRESH_LOCK = 0x6B657977  # "keyw"
_RECIPE = "1"
#: A refresh that changes more than this many rows plus this share of the table tidies it at
#: once (autovacuum's own trigger, without waiting for it): it moves the GIN index's pending
#: list (rows just written, which every search reads one by one) into the index proper and
#: analyses the table. Before, a server on a new 100,000-photo index answered 40 searches/s
#: instead of 120 (60 ms a keyword query) until autovacuum came round.
TIDY_ROWS, TIDY_SHARE = 50, 0.1


def _document_sql() -> str:
    return " || ".join(
        f"setweight(to_tsvector('{CONFIG}', coalesce(:{f}, '')), '{CLASSES[f]}')" for f in FIELDS
    )


def _part_query(name: str) -> str:
    """A word or a phrase as a tsquery (a phrase query keeps its words in order)."""
    return f"phraseto_tsquery('{CONFIG}', :{name})"


class PostgresKeywords:
    """PostgreSQL full-text search over one index's image documents (`KeywordIndex`)."""

    def __init__(self, db: Database, pace: Pace | None = None) -> None:
        self.db = db
        self._pace = pace or Pace()
        self._ready = False
        # One thread of this process brings the table in step; the others wait here, not
        # on the advisory lock holding a pooled connection each: 15 such waiters once left
        # the writer none to read the documents with (QueuePool limit reached).
        self._writing = threading.Lock()
        self._in_step: str | None = None  # the stamp this process last saw the table at
        self._partly = 0  # partial refreshes made (new images added while writing)
        self._counts = Counts()

    def _ensure(self, conn: Connection) -> None:
        if self._ready:
            return
        conn.execute(text(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGINT PRIMARY KEY, digest TEXT NOT NULL, "
            "doc TSVECTOR NOT NULL)"
        ))  # fmt: skip
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {TABLE}_doc ON {TABLE} USING GIN (doc)"))
        conn.execute(
            text(f"CREATE TABLE IF NOT EXISTS {STATE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        )
        recipe = conn.execute(text(f"SELECT value FROM {STATE} WHERE key = 'recipe'")).scalar()
        if recipe != _RECIPE:
            conn.execute(text(f"DELETE FROM {TABLE}"))
            conn.execute(text(f"DELETE FROM {STATE}"))
            conn.execute(text(f"INSERT INTO {STATE} VALUES ('recipe', :r)"), {"r": _RECIPE})

    def refresh(self) -> int:
        """Bring the table in step with the store; returns how many documents changed. While
        another thread of this process does it, returns 0 at once (the table holds the last
        refresh's state) unless it was never filled."""
        current = stamp(self.db)
        if current == self._in_step:
            return 0
        held = text(f"SELECT value FROM {STATE} WHERE key = 'stamp'")
        seen = None
        if self._ready:  # the usual case, nothing changed: no lock, no transaction
            with self.db.engine.connect() as conn:
                seen = conn.execute(held).scalar()
            if seen == current:
                self._in_step = current
                return 0
        if seen is not None and self._pace.hold():
            return 0
        if not self._writing.acquire(blocking=seen is None):
            return 0
        started = time.monotonic()
        # While this process writes, only the new images' words are added (the stamp is
        # left, so the whole refresh follows once the writing is over).
        partly = seen is not None and self._pace.writing()
        try:
            with self.db.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REFRESH_LOCK})
                self._ensure(conn)
                if partly:
                    last = conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {TABLE}"))
                    changed = _apply(conn, documents(self.db, after=int(last.scalar_one())), {})
                elif conn.execute(held).scalar() == current:
                    changed = 0  # another process brought it in step while this one waited
                else:
                    known = {
                        int(i): str(d)
                        for i, d in conn.execute(text(f"SELECT id, digest FROM {TABLE}"))
                    }
                    changed = _apply(conn, documents(self.db), known)
                    conn.execute(
                        text(f"INSERT INTO {STATE} VALUES ('stamp', :v) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                        {"v": current},
                    )  # fmt: skip
                if not partly:  # during a job, the list is left to grow (up to its limit)
                    _tidy_if_grown(conn, changed)
        finally:
            self._writing.release()
            self._pace.done(started)
        self._ready = True  # committed: other threads may read the tables now
        if partly:
            self._partly += 1
        else:
            self._in_step = current
        return changed

    def search(
        self,
        terms: Sequence[str],
        phrases: Sequence[str],
        limit: int,
        allowed: np.ndarray[Any, Any] | None = None,
    ) -> list[tuple[int, float]]:
        self.refresh()
        if not (terms or phrases) or limit < 1 or (allowed is not None and len(allowed) == 0):
            return []
        params: dict[str, Any] = {}
        required = []
        for n, phrase in enumerate(phrases):
            params[f"p{n}"] = phrase
            required.append(_part_query(f"p{n}"))
        any_term = []
        for n, term in enumerate(terms):
            params[f"t{n}"] = term
            any_term.append(_part_query(f"t{n}"))
        query = " && ".join([*required, *([f"({' || '.join(any_term)})"] if any_term else [])])
        sql = (
            f"SELECT id, ts_rank_cd(doc, q) FROM {TABLE}, ({'SELECT ' + query} AS q) AS query "
            "WHERE doc @@ q"
        )
        bind = []
        if allowed is not None:
            sql += " AND id = ANY(:allowed)"
            params["allowed"] = [int(i) for i in np.asarray(allowed)]
            bind.append(bindparam("allowed", type_=ARRAY(BIGINT)))
        sql += f" ORDER BY 2 DESC, id LIMIT {int(limit)}"
        with self.db.engine.connect() as conn:
            rows = conn.execute(text(sql).bindparams(*bind), params).all()
        return [(int(i), float(score)) for i, score in rows]

    def close(self) -> None:
        """Nothing to let go of: it reads through the store's own connections."""

    def size(self) -> int:
        return self._counted(SIZE, f"SELECT count(*) FROM {TABLE}", {})

    def document_frequency(self, part: str) -> int:
        sql = f"SELECT count(*) FROM {TABLE} WHERE doc @@ {_part_query('p')}"
        return self._counted(part, sql, {"p": part})

    def _counted(self, key: str, sql: str, params: dict[str, str]) -> int:
        counts = self._counts.at(f"{self._in_step}+{self._partly}")
        if key not in counts:
            with self.db.engine.connect() as conn:
                counts[key] = int(conn.execute(text(sql), params).scalar_one())
        return counts[key]

    def matching(self, part: str, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        sql = text(
            f"SELECT id FROM {TABLE} WHERE id = ANY(:ids) AND doc @@ {_part_query('p')}"
        ).bindparams(bindparam("ids", type_=ARRAY(BIGINT)))
        with self.db.engine.connect() as conn:
            rows = conn.execute(sql, {"ids": [int(i) for i in ids], "p": part})
            return {int(r[0]) for r in rows}


def _tidy_if_grown(conn: Connection, changed: int) -> None:
    """Empty the GIN pending list and ANALYZE the table when this refresh changed enough
    of it (see `TIDY_SHARE`)."""
    if changed <= TIDY_ROWS:
        return
    known = conn.execute(text(f"SELECT reltuples FROM pg_class WHERE oid = '{TABLE}'::regclass"))
    if changed <= TIDY_ROWS + TIDY_SHARE * max(float(known.scalar_one()), 0.0):
        return
    try:
        with conn.begin_nested():  # a savepoint: a role that may write but not own the
            # table is refused the pending list's clean-up; the refresh stands without it
            conn.execute(text(f"SELECT gin_clean_pending_list('{TABLE}_doc'::regclass)"))
    except (DBAPIError, ReadOnlyIndexError) as exc:  # as the store's error hook words it
        log.info("keyword table's pending list left to autovacuum: %s", exc)
    conn.execute(text(f"ANALYZE {TABLE}"))  # a non-owner's is a warning, not an error


def _apply(
    conn: Connection, docs: Iterator[tuple[int, str, Callable[[], Document]]], known: dict[int, str]
) -> int:
    """Rewrite the documents whose digest differs from the `known` one; drop those of the
    known images that `docs` no longer holds."""
    upsert = text(
        f"INSERT INTO {TABLE} (id, digest, doc) VALUES (:id, :digest, {_document_sql()}) "
        "ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, doc = excluded.doc"
    )
    batch: list[dict[str, Any]] = []
    changed = 0
    for image_id, digest, doc in changed_documents(docs, known):
        fields = dict(zip(FIELDS, doc.fields(), strict=True))
        batch.append({"id": image_id, "digest": digest, **fields})
        if len(batch) >= 1000:
            conn.execute(upsert, batch)
            changed += len(batch)
            batch = []
    if batch:
        conn.execute(upsert, batch)
        changed += len(batch)
    if known:
        gone = text(f"DELETE FROM {TABLE} WHERE id = ANY(:ids)").bindparams(
            bindparam("ids", type_=ARRAY(BIGINT))
        )
        conn.execute(gone, {"ids": list(known)})
        changed += len(known)
    return changed
