"""`clipsearch copy SOURCE TARGET`: a whole index from one store to another (SQLite folder
or PostgreSQL database, either way), verified.

Every row keeps its id (a client's image ids stay valid), with its vector bytes as stored;
the active adapter, model, vector type and index settings come along in the meta table. The
source is held under its writer lock for the copy, so no write lands half-way; the target is
written in one transaction, so a failed copy leaves it as empty as it was. Afterwards both
sides are read back: the row count of every table and a SHA-256 over every (id, vector) pair
of the images, the keyframes and the texts must agree, or the copy is an error.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select

from clipsearch.errors import ClipsearchError
from clipsearch.storage import dialect
from clipsearch.storage.db import Database
from clipsearch.storage.location import locate
from clipsearch.storage.opening import STORE_ID
from clipsearch.storage.schema import Base

#: Tables in an order that satisfies their foreign keys.
TABLES = (
    "meta", "images", "frames", "text_sources", "texts", "image_tags", "adapters", "query_cache",
)  # fmt: skip
#: Facts that belong to a store, not to the index in it.
_OWN_FACTS = (STORE_ID, "schema_version")
#: Rows per insert.
CHUNK = 2_000


class CopyError(ClipsearchError):
    """A copy that cannot start (a target that already holds an index) or that did not
    arrive whole (counts or vector checksums differ)."""


@dataclass
class CopyReport:
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    vectors_sha256: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def copy(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, wait: float | None = 0.0
) -> CopyReport:
    """Copy the index at `source` into `target` (a new folder or an empty database; either
    may be a folder or a PostgreSQL URL), then verify it. `wait`: how long to queue behind a
    writer of either."""
    if locate(source).address == locate(target).address:
        raise CopyError(f"{locate(source).label} is both the source and the target")
    source_db = Database.open(locate(source), create=False, wait=wait)
    try:
        target_db = Database.open(locate(target), create=True, wait=wait)
        try:
            return copy_index(source_db, target_db, wait=wait)
        finally:
            target_db.close()
    finally:
        source_db.close()


def copy_index(source: Database, target: Database, *, wait: float | None = 0.0) -> CopyReport:
    """Copy everything in `source` into the empty index `target`, then verify it."""
    started = time.perf_counter()
    report = CopyReport(source.label, target.label)
    with source.writer_lock(wait), target.writer_lock(wait):
        _check_empty(target)
        tables = [Base.metadata.tables[name] for name in TABLES]
        with source.engine.connect() as reader, target.engine.begin() as writer:
            for table in tables:
                _copy_table(reader, writer, table)
            dialect.sync_sequences(writer, tables)
        expected = _fingerprint(source.engine, tables)
        found = _fingerprint(target.engine, tables)
    if expected != found:
        differ = sorted(k for k in expected.keys() | found.keys() if expected[k] != found.get(k))
        raise CopyError(
            f"the copy in {target.label} does not match {source.label} ({', '.join(differ)} "
            "differ); the target is not to be trusted: empty it and copy again"
        )
    report.rows = {
        k.removeprefix("rows:"): int(v) for k, v in expected.items() if k.startswith("rows:")
    }
    report.vectors_sha256 = {
        k.removeprefix("sha256:"): str(v) for k, v in expected.items() if k.startswith("sha256:")
    }
    report.seconds = time.perf_counter() - started
    return report


def _check_empty(target: Database) -> None:
    with target.engine.connect() as conn:
        for name in ("images", "texts", "adapters"):
            table = Base.metadata.tables[name]
            if conn.scalar(select(func.count()).select_from(table)):
                raise CopyError(
                    f"{target.label} already holds an index ({name} has rows); copy into a new "
                    "folder or an empty database"
                )


def _copy_table(reader: Connection, writer: Connection, table: Table) -> None:
    if table.name == "meta":
        writer.execute(table.delete().where(table.c.key.not_in(_OWN_FACTS)))
    stmt = select(table).order_by(*table.primary_key.columns)
    if table.name == "meta":
        stmt = stmt.where(table.c.key.not_in(_OWN_FACTS))
    result = reader.execution_options(stream_results=True, yield_per=CHUNK).execute(stmt)
    for rows in result.partitions():
        writer.execute(table.insert(), [dict(row._mapping) for row in rows])


def _fingerprint(engine: Engine, tables: list[Table]) -> dict[str, int | str]:
    """Row counts of every table (meta without the store's own facts) and a SHA-256 of the
    (id, vector) pairs of images, videos' keyframes and texts, in id order."""
    out: dict[str, int | str] = {}
    with engine.connect() as conn:
        for table in tables:
            count = select(func.count()).select_from(table)
            if table.name == "meta":
                count = count.where(table.c.key.not_in(_OWN_FACTS))
            out[f"rows:{table.name}"] = int(conn.scalar(count) or 0)
        for name in ("images", "frames", "texts"):
            table = Base.metadata.tables[name]
            digest = hashlib.sha256()
            stmt = select(table.c.id, table.c.vector).order_by(table.c.id)
            for row_id, vector in conn.execution_options(yield_per=CHUNK).execute(stmt):
                digest.update(int(row_id).to_bytes(8, "little"))
                digest.update(bytes(vector))
            out[f"sha256:{name}"] = digest.hexdigest()
    return out
