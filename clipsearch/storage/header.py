"""Rebuilding the 100-byte header of an SQLite file whose header is damaged or zeroed.

The header holds nothing a reader cannot work out again from the pages behind it, which a
zeroed header leaves intact: the page size (the one at which page 1's b-tree and the
schema read back whole), and defaults for the rest (UTF-8, schema format 4, no free-list,
the database size from the file's size). `repair` salvages from a copy with such a header.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import struct
from pathlib import Path

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
PAGE_SIZES = tuple(1 << n for n in range(9, 17))  # 512 .. 65536


def header_is_damaged(path: Path) -> bool:
    """Whether the file does not start as an SQLite database does."""
    with path.open("rb") as f:
        head = f.read(HEADER_SIZE)
    return len(head) == HEADER_SIZE and not head.startswith(MAGIC)


def header(page_size: int, pages: int, wal: bool) -> bytes:
    """A header for a database of `pages` pages of `page_size` bytes (auto-vacuum off,
    no free-list: its pages are read as unused)."""
    version = 2 if wal else 1
    fields = struct.pack(
        ">HBBBBBBIIIIIIIIIIII20xII",
        1 if page_size == 65536 else page_size,
        version, version,  # file format write / read version (2: WAL)
        0, 64, 32, 32,  # reserved bytes a page; payload fractions (fixed by the format)
        1,  # file change counter
        pages,
        0, 0,  # first free-list trunk page, free-list pages
        1,  # schema cookie
        4,  # schema format
        0, 0,  # default cache size, largest root page (auto-vacuum off)
        1,  # text encoding: UTF-8
        0, 0, 0,  # user version, incremental vacuum, application id
        1,  # version-valid-for: equals the change counter, so the page count is trusted
        3_045_000,  # the SQLite version that wrote it
    )  # fmt: skip
    return MAGIC + fields


def rebuilt_copy(path: Path, tables: tuple[str, ...]) -> tuple[Path, int] | None:
    """A copy of `path` beside it with a rebuilt header, and the page size chosen: the one
    at which most of `tables` can be counted; None when no page size reads any. The file is
    copied once; each page size tried rewrites only the copy's first 100 bytes."""
    size = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    copy = path.with_name(f".{path.name}.header-rebuilt")
    remove_copy(copy)
    try:
        shutil.copyfile(path, copy)
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        best: tuple[int, int] | None = None  # (tables readable, page size)
        for page_size in PAGE_SIZES:
            if size % page_size == 0:
                _write_header(copy, header(page_size, size // page_size, wal.exists()))
                readable = _readable_tables(copy, tables)
                if readable and (best is None or readable > best[0]):
                    best = (readable, page_size)
        if best is None:
            remove_copy(copy)
            return None
        _write_header(copy, header(best[1], size // best[1], wal.exists()))
    except BaseException:
        remove_copy(copy)
        raise
    return copy, best[1]


def _write_header(copy: Path, head: bytes) -> None:
    with copy.open("r+b") as f:
        f.write(head)
    copy.with_name(copy.name + "-shm").unlink(missing_ok=True)  # the last try's WAL index


def _readable_tables(path: Path, tables: tuple[str, ...]) -> int:
    readable = 0
    opened = contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))
    with contextlib.suppress(sqlite3.DatabaseError), opened as conn:
        for table in tables:
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                readable += 1
    return readable


def remove_copy(copy: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        copy.with_name(copy.name + suffix).unlink(missing_ok=True)
