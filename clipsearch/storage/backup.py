"""`clipsearch backup DEST`: a consistent copy of an index, taken while it is in use.

SQLite's online backup copies the database page by page and restarts if a writer changes it
meanwhile, so the copy is one committed state even during an indexing run. The FAISS caches
are not copied: they are rebuilt from the copy on its first search. DEST is a new index
folder, usable with `--db DEST` as it is.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipsearch.errors import ConfigError, IndexDamagedError, IndexNotFoundError
from clipsearch.storage.db import DB_FILENAME
from clipsearch.storage.dialect import read_only_uri


@dataclass(frozen=True)
class BackupReport:
    source: str
    target: str
    bytes: int
    images: int
    texts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backup(
    directory: str | os.PathLike[str], target: str | os.PathLike[str], *, force: bool = False
) -> BackupReport:
    source_dir = Path(directory).expanduser()
    source = source_dir / DB_FILENAME
    if not source.is_file():
        raise IndexNotFoundError(f"no clipsearch index at {source_dir} (expected {source})")
    target_dir = Path(target).expanduser()
    if target_dir.resolve() == source_dir.resolve():
        raise ConfigError("the backup must go to another folder than the index itself")
    final = target_dir / DB_FILENAME
    if final.exists() and not force:
        raise ConfigError(f"{final} exists already; choose an empty folder or pass --force")
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target_dir / f".{DB_FILENAME}.backup.tmp"
    partial.unlink(missing_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(read_only_uri(source), uri=True)) as src:
            src.execute("PRAGMA busy_timeout=30000")
            with contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst, pages=1024)
                images = int(dst.execute("SELECT count(*) FROM images").fetchone()[0])
                texts = int(dst.execute("SELECT count(*) FROM texts").fetchone()[0])
                dst.execute("PRAGMA journal_mode=WAL")
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        for suffix in ("-wal", "-shm"):
            (target_dir / (DB_FILENAME + suffix)).unlink(missing_ok=True)
        os.replace(partial, final)
    except sqlite3.DatabaseError as exc:
        partial.unlink(missing_ok=True)
        raise IndexDamagedError(
            f"cannot back up {source}: {exc}; run `clipsearch verify --db {source_dir}`"
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupReport(str(source_dir), str(target_dir), final.stat().st_size, images, texts)
