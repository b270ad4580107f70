"""`clipsearch repair`: bring a damaged index back to a working one, losing as little as can be.

1. A database SQLite cannot read, or whose integrity check fails, is salvaged: every row that
   can still be read, table by table and row by row, goes into a fresh database; the damaged
   file is kept beside it as `clipsearch.db.damaged-<time>`. A 0-byte file is kept aside and
   a new, empty database started. A damaged or zeroed 100-byte header is rebuilt first, on
   a copy (`storage.header`), so the pages behind it are read.
2. Rows whose vector is damaged (wrong length, NaN, all zeros) are quarantined: written to
   `quarantine.jsonl` in the index folder and deleted, so the next `clipsearch index` of
   their folder embeds those files again.
3. Tags and texts whose image or source is gone are deleted.
4. The FAISS caches are rebuilt from the database.

Runs under the writer lock. What could not be saved is listed in the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.storage.db import DB_FILENAME
from clipsearch.storage.header import header_is_damaged, rebuilt_copy, remove_copy
from clipsearch.storage.lock import WriterLock
from clipsearch.storage.verify import TABLES, vector_fault, verify

QUARANTINE = "quarantine.jsonl"
#: Bound on the row-by-row probing of a damaged table: give up on a table after this many
#: consecutive unreadable ids.
MAX_GAP = 10_000


@dataclass
class RepairReport:
    directory: str
    salvaged: dict[str, int] = field(default_factory=dict)  # table -> rows saved
    #: table -> rows that could not be read (at most this many where the count was unreadable)
    lost: dict[str, int] = field(default_factory=dict)
    #: Tables of which nothing, not even a count, could be read: an unknown number lost.
    unreadable: list[str] = field(default_factory=list)
    kept_aside: str | None = None  # the damaged file, renamed
    header_rebuilt: int | None = None  # the page size of a rebuilt header
    quarantined: int = 0
    orphans_removed: int = 0
    caches_rebuilt: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # what verify still finds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair(directory: str | os.PathLike[str], *, wait: float | None = 0.0) -> RepairReport:
    root = Path(directory).expanduser()
    report = RepairReport(str(root))
    path = root / DB_FILENAME
    if not path.exists():
        from clipsearch.errors import IndexNotFoundError

        raise IndexNotFoundError(f"no clipsearch index at {root} (expected {path})")
    try:
        with WriterLock(root, wait):
            first = verify(root, files=False)
            if any(p.kind == "database" for p in first.problems):
                _salvage(path, report)
            _quarantine_and_clean(root, report)
    except OSError as exc:  # a full disk while copying, say: one line, not a traceback
        from clipsearch.errors import ClipsearchError

        raise ClipsearchError(
            f"repair stopped: {exc.strerror or exc} ({exc.filename or root}); free space or "
            "fix access, then run it again (the database in place is left as it was)"
        ) from None
    _rebuild_caches(root, report)  # needs no lock: caches are stamped with what they hold
    after = verify(root, files=False)
    report.remaining += [f"{p.kind}: {p.where}: {p.detail}" for p in after.problems]
    return report


# -- 1. salvage -------------------------------------------------------------------------------


def _salvage(path: Path, report: RepairReport) -> None:
    """Copy what can be read into a fresh database and swap it in, keeping the old file."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    fresh = path.with_name(f".{path.name}.salvage.tmp")
    fresh.unlink(missing_ok=True)
    _create_schema(fresh)
    if path.stat().st_size > 0:
        rebuilt = rebuilt_copy(path, TABLES) if header_is_damaged(path) else None
        if rebuilt is not None:
            report.header_rebuilt = rebuilt[1]
        try:
            _copy_tables(rebuilt[0] if rebuilt else path, fresh, report)
        finally:
            if rebuilt is not None:
                remove_copy(rebuilt[0])
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    os.replace(fresh, path)
    report.kept_aside = str(aside)


def _copy_tables(source: Path, fresh: Path, report: RepairReport) -> None:
    with contextlib.closing(sqlite3.connect(fresh)) as target:
        for table in TABLES:
            saved, lost = _copy_table(source, target, table)
            report.salvaged[table] = saved
            if lost is None:
                report.unreadable.append(table)
            elif lost:
                report.lost[table] = lost
        target.commit()


def _create_schema(path: Path) -> None:
    from sqlalchemy import create_engine

    from clipsearch.storage.schema import MIGRATIONS, SCHEMA_VERSION

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        for step in MIGRATIONS:
            step(conn)
        conn.exec_driver_sql(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    engine.dispose()


def _copy_table(path: Path, target: sqlite3.Connection, table: str) -> tuple[int, int | None]:
    """(rows saved, rows lost) of one table; lost is None when nothing told how many rows
    it held. Reads in rowid order; where a read fails, steps over the damage one rowid at a
    time, then in growing strides, up to the largest rowid."""
    columns = [str(r[1]) for r in target.execute(f"PRAGMA table_info({table})")]
    names = ", ".join(columns)
    insert = f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    select_after = f"SELECT rowid, {names} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 500"
    select_one = f"SELECT rowid, {names} FROM {table} WHERE rowid = ?"
    saved = 0
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        source.execute("PRAGMA writable_schema=ON")  # read past a damaged schema entry
    except sqlite3.DatabaseError:
        return 0, None
    with contextlib.closing(source):
        claimed = _scalar(source, f"SELECT count(*) FROM {table}")
        top = _scalar(source, f"SELECT max(rowid) FROM {table}")
        if top is None:  # AUTOINCREMENT tables record their largest id on the side
            top = _scalar(source, f"SELECT seq FROM sqlite_sequence WHERE name = '{table}'")
        last, stride = -(2**63), 1
        while True:
            try:
                rows = source.execute(select_after, (last,)).fetchall()
                stride = 1
            except sqlite3.DatabaseError:
                if top is None or last >= top:
                    break
                start = max(last, 0)
                try:
                    rows = source.execute(select_one, (start + 1,)).fetchall()
                except sqlite3.DatabaseError:
                    rows = []
                if not rows:
                    last, stride = start + stride, min(stride * 2, 1 << 16)
                    continue
            if not rows:
                break
            target.executemany(insert, [r[1:] for r in rows])
            saved += len(rows)
            last = int(rows[-1][0])
    if claimed is None and top is None and not saved:
        return 0, None  # the table (or the whole file) unreadable: how many is unknown
    # Without a count, the largest id bounds the rows there were (ids may have gaps).
    expected = claimed if claimed is not None else top or 0
    return saved, max(0, expected - saved)


def _scalar(conn: sqlite3.Connection, sql: str) -> int | None:
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None or row[0] is None else int(row[0])


# -- 2 and 3. quarantine damaged vectors, drop orphans -------------------------------------------


def _quarantine_and_clean(root: Path, report: RepairReport) -> None:
    with contextlib.closing(sqlite3.connect(root / DB_FILENAME, timeout=30)) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        dim = int(meta.get("dim", "0") or 0)
        bad: list[dict[str, Any]] = []
        present = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
        for table in [t for t in ("images", "frames", "texts") if t in present]:
            label = {"images": "path", "frames": "image_id", "texts": "text"}[table]
            for row_id, name, blob in conn.execute(f"SELECT id, {label}, vector FROM {table}"):
                reason = vector_fault(blob, dim)
                if reason:
                    raw = blob.hex() if isinstance(blob, bytes) else None
                    bad.append(
                        {"table": table, "id": row_id, label: name, "reason": reason, "raw": raw}
                    )
        if bad:
            with (root / QUARANTINE).open("a", encoding="utf-8") as f:
                for entry in bad:
                    f.write(json.dumps({**entry, "at": time.time()}, ensure_ascii=False) + "\n")
            for entry in bad:
                conn.execute(f"DELETE FROM {entry['table']} WHERE id = ?", (entry["id"],))
            _bump(conn, "generation")
            _bump(conn, "text_generation")
        report.quarantined = len(bad)
        gone = conn.execute(
            "DELETE FROM image_tags WHERE image_id NOT IN (SELECT id FROM images)"
        ).rowcount
        gone += conn.execute(
            "DELETE FROM texts WHERE source_id NOT IN (SELECT id FROM text_sources)"
        ).rowcount
        keyframes = 0
        if "frames" in present:
            keyframes = conn.execute(
                "DELETE FROM frames WHERE image_id NOT IN (SELECT id FROM images)"
            ).rowcount
        if keyframes:
            _bump(conn, "generation")
        gone += keyframes
        if gone:
            _bump(conn, "text_generation")
        report.orphans_removed = gone
        conn.commit()


def _bump(conn: sqlite3.Connection, key: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        (key,),
    )


# -- 4. caches ------------------------------------------------------------------------------------


def _rebuild_caches(root: Path, report: RepairReport) -> None:
    from clipsearch.errors import ClipsearchError
    from clipsearch.index import open_index
    from clipsearch.storage import vector_index as vi

    for name in (vi.IMAGES, vi.TEXTS):
        vi.invalidate_cache(root, name)
    try:
        with open_index(root, create=False) as idx:
            if idx.model_info is None:
                return
            if idx.db.count():
                idx.vector_index()
                report.caches_rebuilt.append(f"{vi.IMAGES}.faiss")
            if idx.texts.table.count():
                idx.texts.vector_index()
                report.caches_rebuilt.append(f"{vi.TEXTS}.faiss")
    except ClipsearchError as exc:
        report.remaining.append(f"cache: {exc}")
