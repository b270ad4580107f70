"""SQLite specifics of the index database: connection settings, read-only access, and the
translation of SQLite's errors into clipsearch's typed ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ExceptionContext

from clipsearch.errors import (
    ClipsearchError,
    DiskFullError,
    IndexBusyError,
    IndexDamagedError,
    ReadOnlyIndexError,
)


def pragmas(path: Path, statements: Sequence[str]) -> Any:
    """A `connect` hook running these PRAGMAs; errors there (a damaged header, a full disk
    while creating the WAL) are translated like any query's."""

    def run(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            for statement in statements:
                cur.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise translate_error(str(exc), path) or exc from None
        finally:
            cur.close()

    return run


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


def translate_error(message: str, path: Path) -> ClipsearchError | None:
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


def typed_errors(path: Path) -> Any:
    """An engine `handle_error` hook: SQLite errors a user can act on become typed errors
    whose message says what to do; anything else stays as it is."""

    def translate(context: ExceptionContext) -> None:
        typed = translate_error(str(context.original_exception), path)
        if typed is not None:
            raise typed from None

    return translate


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
