"""Opening a store: creating it (whole, or not at all), migrating it, or opening it read-only.

SQLite: a new database is built whole under `.clipsearch.db.creating` and renamed into place,
under the folder's writer lock, so two first runs never trip over each other's half-made
tables and a run killed while creating leaves nothing behind. PostgreSQL: creation and every
migration run in one transaction (its DDL is transactional) under the advisory writer lock.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from clipsearch.errors import (
    IndexDamagedError,
    IndexNotFoundError,
    ReadOnlyIndexError,
    SchemaVersionError,
)
from clipsearch.storage import dialect
from clipsearch.storage.location import StoreLocation
from clipsearch.storage.lock import AdvisoryLock, WriterLock
from clipsearch.storage.schema import MIGRATIONS, SCHEMA_VERSION, Meta, read_version

DB_FILENAME = "clipsearch.db"
#: Seconds any opener waits for another process that is creating or migrating the index.
CREATE_WAIT = 5.0
STORE_ID = "store_id"


def open_engine(location: StoreLocation, create: bool, wait: float | None) -> Engine:
    """An engine on the location's database, at the current schema version."""
    if location.folder is not None:
        return _open_sqlite(location.folder, create, wait)
    return _open_postgres(location, create, wait)


def _creation_wait(wait: float | None) -> float | None:
    """Creating takes well under a second, so at least `CREATE_WAIT` s are granted anyway."""
    return None if wait is None else max(wait, CREATE_WAIT)


def _open_postgres(location: StoreLocation, create: bool, wait: float | None) -> Engine:
    assert location.url is not None
    engine = dialect.postgres_engine(location.url, location.label)
    try:
        version = _version(engine)
        if version == SCHEMA_VERSION:
            return engine
        if version == 0 and not create:
            raise IndexNotFoundError(
                f"no clipsearch index in the database {location.label}; create one with "
                f"`clipsearch index PATH --db {location.label}`"
            )
        lock = AdvisoryLock(engine, key=dialect.SCHEMA_KEY)
        with WriterLock(None, _creation_wait(wait), process=lock, label=location.label):
            migrate(engine, location.label)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _open_sqlite(directory: Path, create: bool, wait: float | None) -> Engine:
    """The SQLite database in `directory`, creating (or migrating) it under the writer lock;
    a folder this process cannot write is opened read-only."""
    path = directory / DB_FILENAME
    if not path.exists() and not create:
        raise IndexNotFoundError(
            f"no clipsearch index at {directory} (expected {path}); "
            "create one with `clipsearch index PATH --db DIR`"
        )
    if path.exists() and not (dialect.writable(directory) and dialect.writable(path)):
        return _open_sqlite_read_only(path)
    if path.is_dir():
        raise IndexDamagedError(f"{path} is a folder, not an index database")
    if path.exists() and path.stat().st_size > 0:
        engine = dialect.sqlite_engine(path)
        if _version(engine) == SCHEMA_VERSION:
            return engine
        engine.dispose()
    directory.mkdir(parents=True, exist_ok=True)
    with WriterLock(directory, _creation_wait(wait)):
        if path.exists() and path.stat().st_size == 0:
            raise IndexDamagedError(
                f"the index database {path} is empty (0 bytes): it was truncated; run "
                f"`clipsearch repair --db {directory}` to start it afresh (the file is "
                "kept aside), or delete the folder"
            )
        if not path.exists():
            _create_sqlite(path)
        engine = dialect.sqlite_engine(path)
        try:
            migrate(engine, str(path))
        except BaseException:
            engine.dispose()
            raise
    return engine


def _create_sqlite(path: Path) -> None:
    """A new, fully migrated database at `path`, made under a temporary name first."""
    partial = path.with_name(f".{path.name}.creating")
    for suffix in ("", "-wal", "-shm", "-journal"):  # from a run killed while creating
        partial.with_name(partial.name + suffix).unlink(missing_ok=True)
    engine = dialect.sqlite_engine(partial)
    try:
        migrate(engine, str(path))
    finally:
        engine.dispose()  # the last connection checkpoints the WAL into the file
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, path)


def _open_sqlite_read_only(path: Path) -> Engine:
    """A database in a folder we cannot write: no lock, no WAL switch, no migration."""
    engine = dialect.sqlite_engine(path, read_only=True)
    version = _version(engine)
    if version != SCHEMA_VERSION:
        engine.dispose()
        raise ReadOnlyIndexError(
            f"the index at {path.parent} has schema version {version} and must be "
            f"upgraded to {SCHEMA_VERSION}, but its folder is read-only; open it once "
            "with write access"
        )
    return engine


def _version(engine: Engine) -> int:
    with engine.connect() as conn:
        return read_version(conn)


def migrate(engine: Engine, label: str) -> None:
    """Bring the schema to `SCHEMA_VERSION` in one transaction; a new store gets its id."""
    with engine.begin() as conn:
        version = read_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{label} has schema version {version}, newer than this clipsearch "
                f"understands ({SCHEMA_VERSION}); upgrade clipsearch"
            )
        for step in MIGRATIONS[version:]:
            step(conn)
        dialect.create_extra_indexes(conn)
        if version < SCHEMA_VERSION:
            with Session(conn) as session:
                session.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                if version == 0:
                    session.add(Meta(key=STORE_ID, value=uuid.uuid4().hex))
                session.flush()


def store_id(engine: Engine, location: StoreLocation) -> str:
    """The store's own id (made at creation); indexes older than ids have their folder's."""
    with Session(engine) as session:
        found = session.scalar(select(Meta.value).where(Meta.key == STORE_ID))
    if found:
        return str(found)
    return uuid.uuid5(uuid.NAMESPACE_URL, location.label).hex
