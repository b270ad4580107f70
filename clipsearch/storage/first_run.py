"""A first `clipsearch index` run into a new folder that fails before storing anything
leaves no index behind (nor the folder, if the run made it)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from clipsearch.errors import ClipsearchError
from clipsearch.storage.db import DB_FILENAME
from clipsearch.storage.location import locate
from clipsearch.storage.lock import LOCK_FILENAME, WriterLock


@contextlib.contextmanager
def undone_on_failure(db: str) -> Iterator[None]:
    """A first `index` run into a folder that fails before storing anything leaves no index
    behind (nor the folder, if it made it)."""
    directory = locate(db).folder
    if directory is None:
        yield  # a server database: its empty tables cost nothing and may be shared
        return
    folder_existed = directory.exists()
    if (directory / DB_FILENAME).exists():
        yield
        return
    try:
        yield
    except BaseException:
        _discard_if_empty(directory, folder_existed)
        raise


def _discard_if_empty(directory: Path, keep_folder: bool) -> None:
    """Remove the index a failed first run made, if it is still empty and nobody else is
    writing to it (another first run on the same folder may be)."""
    path = directory / DB_FILENAME
    try:
        lock = WriterLock(directory, wait=0)
        lock.acquire()
    except ClipsearchError:
        return  # busy: it is someone else's now
    try:
        try:  # read-only: a plain connect would create the file it is asked about
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                stored = sum(
                    int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                    for table in ("images", "texts")
                )
        except sqlite3.Error:
            if path.exists():
                return  # not ours to judge: leave it
            stored = 0
        if stored:
            return
        for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
            (directory / name).unlink(missing_ok=True)
    finally:
        lock.release()
    if not keep_folder:
        (directory / LOCK_FILENAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else lives there
            directory.rmdir()
