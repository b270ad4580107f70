"""Every difference between the two stores, in one module: SQLite (an index folder, the
embedded default) and PostgreSQL (by URL). Everything else in clipsearch speaks SQLAlchemy
and never asks which one it has.

What differs: how an engine is made (SQLite's PRAGMAs and read-only URIs, PostgreSQL's
connection settings), the upsert statement, path globs (SQLite's GLOB, a regular expression
on PostgreSQL), id sequences after rows are copied in with their ids, the size on disk, the
SQL of the writer lock (an advisory lock on PostgreSQL; SQLite uses a file lock), and the
translation of each one's errors into clipsearch's typed ones.

And what one cannot hold: PostgreSQL refuses NUL in text. Every statement on either store
has NUL dropped from its string parameters (`without_nul`), so a query, filter, caption or
EXIF field with one is searched or stored the same way on both, without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    ExceptionContext,
    Table,
    create_engine,
    event,
    func,
    literal,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from clipsearch.errors import (
    ClipsearchError,
    ConfigError,
    DiskFullError,
    IndexBusyError,
    IndexDamagedError,
    ReadOnlyIndexError,
    StoreUnavailableError,
)

T = TypeVar("T")
log = logging.getLogger("clipsearch.storage")

# -- engines ------------------------------------------------------------------------------

WRITER_PRAGMAS = (
    # First, so that even switching to WAL waits for another process instead of failing.
    "PRAGMA busy_timeout=30000",
    # WAL + NORMAL: a killed process never loses a committed batch, and readers (a search
    # while indexing runs) are not blocked by the writer.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",  # a deleted image takes its tags with it
)
READER_PRAGMAS = ("PRAGMA busy_timeout=30000",)


def sqlite_engine(path: Path, read_only: bool = False) -> Engine:
    """An engine on the SQLite file `path`; `read_only` for a folder we cannot write."""
    url = f"sqlite:///{read_only_uri(path)}&uri=true" if read_only else f"sqlite:///{path}"
    engine = create_engine(url)
    event.listen(engine, "connect", _pragmas(path, READER_PRAGMAS if read_only else WRITER_PRAGMAS))
    event.listen(engine, "handle_error", _typed_errors(lambda m, _s: sqlite_error(m, path)))
    event.listen(engine, "before_cursor_execute", without_nul, retval=True)
    return engine


def postgres_engine(url: str, label: str) -> Engine:
    """An engine on a PostgreSQL database. Each connection names its process, so a busy
    index can say who holds it."""
    try:
        import psycopg  # noqa: F401  # the driver, named here to fail with the fix
    except ImportError:
        raise ConfigError(
            f"--db {label} needs the PostgreSQL driver: pip install 'clipsearch[postgres]'"
        ) from None
    engine = create_engine(
        url,
        pool_pre_ping=True,  # a server restart costs one reconnect, not a failed search
        connect_args={"application_name": _process_name(), "connect_timeout": 10},
    )
    event.listen(engine, "handle_error", _typed_errors(lambda m, s: _postgres_error(m, s, label)))
    event.listen(engine, "before_cursor_execute", without_nul, retval=True)
    return engine


def without_nul(
    _conn: Connection, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
) -> tuple[str, Any]:
    """A statement's parameters with NUL dropped from every string (an engine hook), and
    one warning naming how many went: PostgreSQL cannot hold them in text (a 500 and an
    aborted run, once), and SQLite holds what PostgreSQL holds, so both stores agree."""
    rows = parameters if many else [parameters]
    if not any(_has_nul(row) for row in rows):
        return statement, parameters  # the usual case: nothing copied
    dropped = sum(_count_nul(row) for row in rows)
    log.warning("dropped %d NUL character(s) from text a store cannot hold", dropped)
    cleaned = [_strip_nul(row) for row in rows]
    return statement, cleaned if many else cleaned[0]


def _values(row: Any) -> Any:
    return row.values() if isinstance(row, dict) else row if isinstance(row, (list, tuple)) else ()


def _has_nul(row: Any) -> bool:
    return any(isinstance(v, str) and "\x00" in v for v in _values(row))


def _count_nul(row: Any) -> int:
    return sum(v.count("\x00") for v in _values(row) if isinstance(v, str))


def _strip_nul(row: Any) -> Any:
    def clean(value: Any) -> Any:
        return value.replace("\x00", "") if isinstance(value, str) else value

    if isinstance(row, dict):
        return {k: clean(v) for k, v in row.items()}
    if isinstance(row, (list, tuple)):
        return type(row)(clean(v) for v in row)
    return row


def _process_name() -> str:
    return f"clipsearch pid {os.getpid()} on {socket.gethostname()}"[:63]


def _pragmas(path: Path, statements: Sequence[str]) -> Any:
    """A `connect` hook running these PRAGMAs; errors there (a damaged header, a full disk
    while creating the WAL) are translated like any query's."""

    def run(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            for statement in statements:
                cur.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise sqlite_error(str(exc), path) or exc from None
        finally:
            cur.close()

    return run


def writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def read_only_uri(path: Path) -> str:
    """An SQLite URI that reads `path` without writing anything. In a folder that cannot be
    written and without a pending WAL, the file is opened as immutable (SQLite then needs no
    -shm file, which it could not create there)."""
    wal = path.with_name(path.name + "-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    mode = "immutable=1" if not pending and not writable(path.parent) else "mode=ro"
    return f"file:{path}?{mode}"


# -- statements ---------------------------------------------------------------------------


def upsert(bind: Engine | Connection, table: Any) -> Any:
    """An INSERT with `.on_conflict_do_update(...)` / `.excluded` in the bind's dialect
    (the two dialects spell that clause the same way)."""
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql  # only here: 50 ms of imports otherwise

        return postgresql.insert(table)
    return sqlite.insert(table)


class _GlobMatch(FunctionElement[bool]):
    """`column` matches a shell-style glob (`*`, `?`, `[...]`), case-sensitively."""

    type = Boolean()
    inherit_cache = True
    name = "glob_match"
    # A condition in its own right: without this, SQLite gets `(path GLOB ?) = 1`, which
    # hides the GLOB from SQLite's optimiser (no index range for a constant prefix: 10x).
    _is_implicitly_boolean = True


def glob_match(column: Any, pattern: str) -> Any:
    """An SQL condition: `column` matches the glob `pattern` (SQLite's GLOB semantics).
    A literal prefix lets either store use the path index: SQLite's GLOB does so itself;
    PostgreSQL gets a `LIKE 'prefix%'` beside the regular expression, which its
    `text_pattern_ops` index on the path serves (see `create_extra_indexes`)."""
    like = _like_escape(glob_prefix(pattern)) + "%"
    return _GlobMatch(column, literal(pattern), literal(glob_to_regex(pattern)), literal(like))


def glob_prefix(pattern: str) -> str:
    """The literal characters a glob starts with (before any `*`, `?` or `[`)."""
    for i, char in enumerate(pattern):
        if char in "*?[":
            return pattern[:i]
    return pattern


def glob_escape(text: str) -> str:
    """`text` as a glob that matches exactly it (SQLite's GLOB has no escape character)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def create_extra_indexes(conn: Connection) -> None:
    """Indexes one store needs and the other has anyway: PostgreSQL's default index on the
    path cannot serve prefix matches under a non-C collation; a `text_pattern_ops` one can."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "CREATE INDEX IF NOT EXISTS ix_images_path_prefix ON images (path text_pattern_ops)"
            )
        )


@compiles(_GlobMatch, "sqlite")
def _glob_sqlite(element: _GlobMatch, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern, _, _ = element.clauses
    return f"{compiler.process(column, **kw)} GLOB {compiler.process(pattern, **kw)}"


@compiles(_GlobMatch, "postgresql")
def _glob_postgres(element: _GlobMatch, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, regex, like = element.clauses
    name = compiler.process(column, **kw)
    return (
        f"({name} LIKE {compiler.process(like, **kw)} ESCAPE '\\' "
        f"AND {name} ~ {compiler.process(regex, **kw)})"
    )


def glob_to_regex(pattern: str) -> str:
    """A glob as an anchored POSIX regular expression with the same meaning as SQLite's
    GLOB: `*` any run of characters, `?` one, `[...]` a class (`[^...]` negated)."""
    out, i = ["^"], 0
    while i < len(pattern):
        char = pattern[i]
        end = pattern.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif end > 0:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out) + "$"


def sync_sequences(conn: Connection, tables: Sequence[Table]) -> None:
    """After rows were inserted with their ids: make the next generated id follow the
    largest (SQLite's AUTOINCREMENT keeps up by itself; PostgreSQL's sequences do not)."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        if "id" not in table.c or not table.c.id.primary_key:
            continue
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
            )
        )


def database_bytes(engine: Engine, path: Path | None) -> int:
    """The store's size on disk: the SQLite file with its WAL, or the PostgreSQL database."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return int(conn.scalar(func.pg_database_size(func.current_database())) or 0)
    if path is None:
        return 0
    return sum(_size(p) for p in (path, path.with_name(path.name + "-wal")))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


#: PostgreSQL's codes for a transaction that lost a race with another and may simply run
#: again: deadlock detected, serialization failure.
RETRYABLE = ("40P01", "40001")
#: ... and a unique key taken meanwhile, for writes that replace by key (delete + insert).
RETRYABLE_REPLACE = (*RETRYABLE, "23505")


def retrying(
    transaction: Callable[[], T], codes: Sequence[str] = RETRYABLE, attempts: int = 5
) -> T:
    """Run a whole transaction, and again (up to `attempts` times) if the database aborted
    it for losing a race with a concurrent writer. Only for transactions that are safe to
    repeat from the start; SQLite never reports these (it has one writer at a time)."""
    for attempt in range(attempts):
        try:
            return transaction()
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in codes or attempt == attempts - 1:
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


# -- the writer lock on PostgreSQL: a session-level advisory lock -------------------------

#: The advisory lock keys of clipsearch's writer lock and of its schema changes (one each
#: per database; the two are apart, so creating the schema never waits for indexing runs
#: that hold the writer lock shared); below 2^31, so pg_locks shows them as objid.
ADVISORY_KEY = 0x0C11_5EA2
SCHEMA_KEY = 0x0C11_5EA3


def try_advisory_lock(conn: Connection, shared: bool = False, key: int = ADVISORY_KEY) -> bool:
    call = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
    return bool(conn.scalar(text(f"SELECT {call}(:key)"), {"key": key}))


def advisory_unlock(conn: Connection, shared: bool = False, key: int = ADVISORY_KEY) -> None:
    call = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
    conn.execute(text(f"SELECT {call}(:key)"), {"key": key})


def advisory_holder(conn: Connection, key: int = ADVISORY_KEY) -> str | None:
    """Who holds the lock: the application name of its connection."""
    holder = conn.scalar(
        text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "LIMIT 1"
        ),
        {"key": key},
    )
    return str(holder) if holder else None


# -- errors ---------------------------------------------------------------------------------

#: SQLite's words for a damaged file, as they appear in its error messages.
_DAMAGE = (
    "file is not a database",
    "database disk image is malformed",
    "no such table",
    "no such column",
    "malformed database schema",
)
#: Below this many free bytes, an I/O error is taken to be the disk filling up.
_NEARLY_FULL = 1 << 20


def _typed_errors(translate: Any) -> Any:
    """An engine `handle_error` hook: errors a user can act on become typed errors whose
    message says what to do; anything else stays as it is."""

    def hook(context: ExceptionContext) -> None:
        original = context.original_exception
        typed = translate(str(original), getattr(original, "sqlstate", None))
        if typed is not None:
            raise typed from None

    return hook


def sqlite_error(message: str, path: Path) -> ClipsearchError | None:
    """The typed error for an SQLite error message a user can act on, or None."""
    folder = path.parent
    if any(words in message for words in _DAMAGE):
        return IndexDamagedError(
            f"the index database {path} is damaged ({message}); run `clipsearch verify "
            f"--db {folder}` to see what is wrong and `clipsearch repair --db {folder}` to "
            "salvage it"
        )
    full = "database or disk is full" in message
    if not full and "disk I/O error" in message:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(folder).free < _NEARLY_FULL
        if not full:
            return ClipsearchError(
                f"disk I/O error on {path}: the disk or file system reported a failure; "
                f"check it, then run `clipsearch verify --db {folder}`"
            )
    if full:
        return DiskFullError(
            f"the disk holding {path} is full; free some space and run the command again "
            "(everything committed before is kept)"
        )
    if "readonly database" in message:
        return ReadOnlyIndexError(
            f"the index database {path} is read-only: searching works, but changing the "
            "index needs write access to its folder"
        )
    if "database is locked" in message:
        return IndexBusyError(
            f"the index database {path} stayed locked by another process for 30 s; "
            "try again when it is done"
        )
    return None


def _postgres_error(message: str, sqlstate: str | None, label: str) -> ClipsearchError | None:
    """The typed error for a PostgreSQL error a user can act on (by SQLSTATE), or None."""
    first = message.strip().splitlines()[0] if message.strip() else message
    if sqlstate is None and ("connection" in message or "could not" in message):
        return StoreUnavailableError(
            f"cannot reach the index database {label}: {first}; check that the PostgreSQL "
            "server is running and the URL (user, host, database name) is right"
        )
    if sqlstate in ("28000", "28P01", "3D000"):  # bad login / password / no such database
        return StoreUnavailableError(f"cannot open the index database {label}: {first}")
    if sqlstate in ("42P01", "42703"):  # a table or column is missing
        return IndexDamagedError(
            f"the index database {label} lacks part of clipsearch's schema ({first}): it was "
            "changed by hand, or is not a clipsearch index"
        )
    if sqlstate == "53100":
        return DiskFullError(
            f"the disk of the PostgreSQL server holding {label} is full; free some space and "
            "run the command again (everything committed before is kept)"
        )
    if sqlstate in ("25006", "42501"):  # read-only transaction / insufficient privilege
        return ReadOnlyIndexError(
            f"the index database {label} cannot be changed by this user ({first}): "
            "searching works, changing the index needs write access"
        )
    if sqlstate in ("55P03", "57014"):  # lock not available / statement timeout
        return IndexBusyError(f"the index database {label} stayed locked: {first}; try again")
    return None
