"""The keyword index: full-text search over each image's words (`storage.words`), brought in
step with the store before each search. Two implementations of one protocol:

- `Fts5Keywords` (an SQLite store): SQLite FTS5 in a cache file beside the FAISS files
  (`keywords.sqlite`), BM25 with per-field weights, Porter stemming ("dogs" finds "dog").
- `PostgresKeywords` (a PostgreSQL store, `storage.pg_keywords`): PostgreSQL's own full-text
  search, a `tsvector` per image with weighted fields in a table of the database, ranked by
  `ts_rank_cd`, English stemming.

Either way, bringing it in step reads every image's document and compares digests, so only
the images whose words changed are rewritten (a rename, a new sidecar, a deleted photo); a
stamp of the store's counters says which state it reflects.

A query reaches a keyword index as *parts*: single words, and phrases (words that must come
in that order); each backend writes them in its own syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipsearch.errors import ClipsearchError, IndexDamagedError
from clipsearch.storage import dialect
from clipsearch.storage.db import Database
from clipsearch.storage.words import FIELDS, changed_documents, documents, stamp

#: bm25 weight of each field, in `FIELDS` order: a word in the file name or an XMP keyword
#: says more than one in a folder name or a zero-shot tag.
WEIGHTS = {"name": 4.0, "folder": 1.0, "caption": 2.0, "keywords": 3.0, "tags": 1.0,
           "camera": 1.0, "ocr": 2.0}  # fmt: skip
FILE_NAME = "keywords.sqlite"
#: With at most this many allowed ids, the filter goes into the SQL; above it, hits are
#: filtered after the query.
SQL_FILTER_LIMIT = 50_000
_RECIPE = "1"  # a new document recipe or tokenizer invalidates older files


class KeywordIndex(Protocol):
    """Full-text search over one index's image documents (scores: higher is better)."""

    def refresh(self) -> int: ...

    def search(
        self,
        terms: Sequence[str],
        phrases: Sequence[str],
        limit: int,
        allowed: np.ndarray[Any, Any] | None = None,
    ) -> list[tuple[int, float]]:
        """The best `limit` images holding every phrase and any of the terms (all of
        them when there are no terms), best first; only `allowed` ids when given."""
        ...

    def size(self) -> int:
        """How many images it holds."""
        ...

    def document_frequency(self, part: str) -> int:
        """How many images hold a word or phrase."""
        ...

    def matching(self, part: str, ids: Sequence[int]) -> set[int]:
        """Which of `ids` hold a word or phrase."""
        ...

    def close(self) -> None:
        """Let go of what it holds open (a search after this opens it again)."""
        ...


def _roll_back(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if any is left: a COMMIT that failed (a full disk) has
    already rolled it back, and a second ROLLBACK would hide that error behind its own."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def fts5_part(part: str) -> str:
    """A word or phrase as an FTS5 string (a phrase query when it has several words)."""
    return '"' + part.replace('"', '""') + '"'


def fts5_expression(terms: Sequence[str], phrases: Sequence[str]) -> str | None:
    """Every phrase, and any of the terms, as one FTS5 MATCH expression."""
    required = " AND ".join(fts5_part(p) for p in phrases)
    any_term = " OR ".join(fts5_part(t) for t in terms)
    if required and any_term:
        return f"{required} AND ({any_term})"
    return required or any_term or None


#: While this process writes (an indexing job), a keyword index is brought in step at most
#: once in this many seconds, or in this many times what the last refresh took if longer:
#: a refresh reads every image's words, and a job commits a batch several times a second.
REFRESH_GAP = 2.0
REFRESH_SHARE = 5.0


class Pace:
    """When a keyword index may next be brought in step while this process writes: new
    images are found by their words a little later, and searches keep the CPU. Without a
    writer of this process there is no pause: a search after a write sees its words."""

    def __init__(self, writing: Callable[[], bool] = lambda: False) -> None:
        self._writing = writing
        self._next = 0.0

    def hold(self) -> bool:
        """Whether a refresh should wait for a later search."""
        return time.monotonic() < self._next and self._writing()

    def writing(self) -> bool:
        """Whether this process is writing (a refresh then adds the new images' words only:
        reading every image's words again after each batch is what took the CPU)."""
        return self._writing()

    def done(self, started: float) -> None:
        now = time.monotonic()
        self._next = now + max(REFRESH_GAP, REFRESH_SHARE * (now - started))


class Counts:
    """How many documents hold each word, and how many there are, as of one stamp of a
    keyword index: a search asks for both for every word of its query, and they change only
    when the index is brought in step. Keyed by the stamp, so counts read while another
    thread brought the index in step are dropped with the old stamp."""

    def __init__(self) -> None:
        self._at: tuple[str | None, dict[str, int]] = (None, {})

    def at(self, stamp: str | None) -> dict[str, int]:
        """The counts as of `stamp` (a new, empty table when the stamp moved)."""
        held = self._at
        if held[0] != stamp:
            held = self._at = (stamp, {})
        return held[1]


class Fts5Keywords:
    """SQLite FTS5 over one index's image documents, in a cache file.

    Each thread keeps its own connection to the file (opened again when the file was
    deleted or replaced). One thread at a time brings the file in step with the store; the
    others, meanwhile, search what the file holds (the state of the last refresh) instead of
    waiting: a search never waits behind an indexing job's words.
    """

    def __init__(self, db: Database, folder: Path, pace: Pace | None = None) -> None:
        self.db = db
        self.path = _writable(folder, db.store_id()) / FILE_NAME
        self._pace = pace or Pace()
        self._ready = False
        self._local = threading.local()  # this thread's (file identity, connection)
        self._file: tuple[int, int] | None = None  # the file the state below is about
        self._pinned: int | None = None  # a descriptor of that file, held open
        self._pinning = threading.Lock()
        self._in_step: str | None = None  # the stamp this process last saw the file at
        self._partly = 0  # partial refreshes made (new images added while writing)
        self._counts = Counts()
        self._refreshing = threading.Lock()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the cache file; its errors a user can act on (a full
        disk, a damaged file) come out typed, with one line saying what to do. A file
        deleted since (as a damaged one's error says to do) is made again by `_ensure`."""
        try:
            conn = self._connection()
            yield conn
        except sqlite3.Error as exc:
            self._drop_connection()
            typed = dialect.sqlite_error(str(exc), self.path)
            if isinstance(typed, IndexDamagedError):
                typed = IndexDamagedError(
                    f"the keyword cache {self.path} is damaged ({exc}); delete it, and the "
                    "next search rebuilds it from the index"
                )
            raise (typed or ClipsearchError(f"keyword cache {self.path}: {exc}")) from None

    def _connection(self) -> sqlite3.Connection:
        identity = _identity(self.path)
        held = getattr(self._local, "held", None)
        if held is not None and identity is not None and held[0] == identity:
            return held[1]  # type: ignore[no-any-return]
        self._drop_connection()
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        identity = _identity(self.path)  # made just now if it was missing
        self._local.held = (identity, conn)
        self._pin(identity)
        return conn

    def _pin(self, identity: tuple[int, int] | None) -> None:
        """Note which file this object's state (tables made, stamp seen) is about, holding
        it open: while a file is open its inode number is not given to another, so a file
        deleted and made again is always told apart (a thread's connection pins its own)."""
        with self._pinning:
            if identity == self._file or identity is None:
                return
            if self._pinned is not None:
                os.close(self._pinned)
            self._pinned = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._file = _identity_of(os.fstat(self._pinned))
            self._ready, self._in_step = False, None

    def close(self) -> None:
        """Close this thread's connection and let go of the file (other threads'
        connections close as their threads end)."""
        self._drop_connection()
        with self._pinning:
            if self._pinned is not None:
                os.close(self._pinned)
            self._pinned, self._file, self._ready, self._in_step = None, None, False, None

    def _drop_connection(self) -> None:
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held[1].close()

    def _ensure(self, conn: sqlite3.Connection) -> None:
        if not self._ready:
            with self._pinning:  # one thread of this process makes the tables
                if not self._ready:
                    self._create(conn)
                    self._ready = True

    def _create(self, conn: sqlite3.Connection) -> None:
        """Make the tables, or empty them when written by an older recipe: in one write
        transaction, as many threads and processes reach here at once on first search."""
        _use_wal(conn)
        columns = ", ".join(FIELDS)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, digest TEXT)")
            conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5("
                f"{columns}, tokenize='porter unicode61 remove_diacritics 2')"
            )
            recipe = conn.execute("SELECT value FROM state WHERE key='recipe'").fetchone()
            if recipe is None or recipe[0] != _RECIPE:
                for table in ("docs", "fts", "state"):
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("INSERT INTO state VALUES ('recipe', ?)", (_RECIPE,))
            conn.execute("COMMIT")
        except BaseException:
            _roll_back(conn)
            raise

    def refresh(self) -> int:
        """Bring the file in step with the store; returns how many documents changed. While
        another thread of this process does it, returns 0 at once (the file holds the last
        refresh's state) unless the file was never filled; so does a refresh too soon after
        the last one while this process writes (`Pace`)."""
        current = stamp(self.db)
        with self._connect() as conn:
            if current == self._in_step:
                return 0
            self._ensure(conn)
            seen = _stamp(conn)
            if seen == current:
                self._in_step = current
                return 0
            if seen is not None and self._pace.hold():
                return 0
            if not self._refreshing.acquire(blocking=seen is None):
                return 0
            started = time.monotonic()
            partly = seen is not None and self._pace.writing()
            try:
                changed = self._apply(conn, None if partly else current)
            finally:
                self._refreshing.release()
                self._pace.done(started)
        if partly:
            self._partly += 1  # the counts of the words changed: `_counted` reads them again
        else:
            self._in_step = current
        return changed

    def _apply(self, conn: sqlite3.Connection, current: str | None) -> int:
        """Bring the file in step with the store at stamp `current`; with None, only add
        the images past the last one it holds, and leave the stamp (the whole refresh then
        follows when this process has stopped writing)."""
        conn.execute("BEGIN IMMEDIATE")  # one process refreshes; the others then see it
        try:
            if current is None:
                last = int(conn.execute("SELECT coalesce(max(id), 0) FROM docs").fetchone()[0])
                changed = _apply(conn, documents(self.db, after=last), {})
            elif _stamp(conn) == current:
                changed = 0
            else:
                known = dict(conn.execute("SELECT id, digest FROM docs"))
                changed = _apply(conn, documents(self.db), known)
                conn.execute("INSERT OR REPLACE INTO state VALUES ('stamp', ?)", (current,))
            conn.execute("COMMIT")
        except BaseException:
            _roll_back(conn)
            raise
        return changed

    def search(
        self,
        terms: Sequence[str],
        phrases: Sequence[str],
        limit: int,
        allowed: np.ndarray[Any, Any] | None = None,
    ) -> list[tuple[int, float]]:
        """(image id, BM25 score, higher is better) of the best `limit` documents holding
        every phrase and any term, best first; only `allowed` ids when given."""
        self.refresh()
        match = fts5_expression(terms, phrases)
        if match is None or limit < 1 or (allowed is not None and len(allowed) == 0):
            return []
        weights = ", ".join(str(WEIGHTS[f]) for f in FIELDS)
        sql = f"SELECT rowid, bm25(fts, {weights}) FROM fts WHERE fts MATCH ?"
        params: list[Any] = [match]
        in_sql = allowed is not None and len(allowed) <= SQL_FILTER_LIMIT
        if in_sql:
            sql += " AND rowid IN (SELECT value FROM json_each(?))"
            params.append(json.dumps([int(i) for i in np.asarray(allowed)]))
        sql += " ORDER BY 2, rowid"
        if allowed is None or in_sql:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        if allowed is not None and not in_sql:
            keep = set(np.asarray(allowed).tolist())
            rows = [r for r in rows if r[0] in keep][:limit]
        return [(int(i), -float(score)) for i, score in rows]

    def size(self) -> int:
        """How many documents it holds, as of the last refresh."""
        return self._counted(SIZE, "SELECT count(*) FROM docs", ())

    def document_frequency(self, part: str) -> int:
        """How many documents hold a word or phrase, as of the last refresh."""
        return self._counted(part, "SELECT count(*) FROM fts WHERE fts MATCH ?", (fts5_part(part),))

    def _counted(self, key: str, sql: str, params: tuple[str, ...]) -> int:
        counts = self._counts.at(f"{self._in_step}+{self._partly}")
        if key not in counts:
            with self._connect() as conn:
                self._ensure(conn)
                counts[key] = int(conn.execute(sql, params).fetchone()[0])
        return counts[key]

    def matching(self, part: str, ids: Sequence[int]) -> set[int]:
        """Which of `ids` hold a word or phrase, as of the last refresh."""
        if not ids:
            return set()
        sql = (
            "SELECT rowid FROM fts WHERE fts MATCH ? AND rowid IN (SELECT value FROM json_each(?))"
        )
        with self._connect() as conn:
            self._ensure(conn)
            found = conn.execute(sql, (fts5_part(part), json.dumps([int(i) for i in ids])))
            return {int(r[0]) for r in found}


#: The key of the document count among the `Counts` (no word holds a NUL).
SIZE = "\0size"


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` (None: none)."""
    try:
        return _identity_of(os.stat(path))
    except FileNotFoundError:
        return None


def _identity_of(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _use_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (readers never wait for the one writer) unless it is: the
    switch needs the file to itself, and fails at once ("database is locked") while another
    connection reads, so it is tried again for a while."""
    for attempt in range(200):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                raise
            time.sleep(0.05)


def _stamp(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM state WHERE key='stamp'").fetchone()
    return None if row is None else str(row[0])


def _apply(
    conn: sqlite3.Connection,
    docs: Iterator[tuple[int, str, Callable[[], Any]]],
    known: dict[int, str],
) -> int:
    """Rewrite the documents whose digest differs from the `known` one; drop those of the
    known images that `docs` no longer holds."""
    changed = 0
    placeholders = ", ".join("?" for _ in FIELDS)
    for image_id, digest, doc in changed_documents(docs, known):
        conn.execute("DELETE FROM fts WHERE rowid = ?", (image_id,))
        conn.execute(
            f"INSERT INTO fts (rowid, {', '.join(FIELDS)}) VALUES (?, {placeholders})",
            (image_id, *doc.fields()),
        )
        conn.execute("INSERT OR REPLACE INTO docs VALUES (?, ?)", (image_id, digest))
        changed += 1
    for gone in known:
        conn.execute("DELETE FROM fts WHERE rowid = ?", (gone,))
        conn.execute("DELETE FROM docs WHERE id = ?", (gone,))
        changed += 1
    return changed


def _writable(folder: Path, store_id: str) -> Path:
    """The index's cache folder, or (a read-only one) a folder of this user's temp space."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return folder
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"clipsearch-keywords-{store_id}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback
