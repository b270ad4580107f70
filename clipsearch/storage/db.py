"""The database: image rows with their vectors, and the index's facts, over SQLite.

Every write is one transaction that also bumps `generation` (in one statement, so two
processes can never both read N and write N + 1), a counter the FAISS cache is stamped with:
a cache whose stamp differs from the database's is stale and gets rebuilt.

SQLite's errors that a user can act on (a damaged file, a full disk, a read-only folder, a
lock held too long) come out as the typed errors of `clipsearch.errors`, from every query.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Engine,
    Integer,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clipsearch.errors import (
    ConfigError,
    IndexDamagedError,
    IndexNotFoundError,
    ReadOnlyIndexError,
    SchemaVersionError,
)
from clipsearch.storage.blobs import (
    VECTOR_DTYPES,
    IdArray,
    Vector,
    decode_vectors,
    dtype_of,
    iter_vectors,
    vectors_for,
)
from clipsearch.storage.lock import WriterLock
from clipsearch.storage.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ZERO_SHOT,
    ImageRow,
    ImageTag,
    Meta,
    read_version,
)
from clipsearch.storage.sqlite import (
    READER_PRAGMAS,
    WRITER_PRAGMAS,
    pragmas,
    read_only_uri,
    typed_errors,
    writable,
)

DB_FILENAME = "clipsearch.db"
#: Seconds any opener waits for another process that is creating or migrating the index.
CREATE_WAIT = 5.0


@dataclass(frozen=True)
class StoredFile:
    """What change detection needs to know about an indexed file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class ImageRecord:
    """One embedded image, ready to be written."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    format: str | None
    taken_at: str | None
    vector: Vector


@dataclass(frozen=True)
class Move:
    id: int
    path: str
    size: int
    mtime_ns: int


def bump(session: Session, key: str = "generation") -> int:
    """Advance a write counter inside the caller's transaction, in one statement (no
    read-then-write window between two processes); returns the new value."""
    insert = sqlite_insert(Meta).values(key=key, value="1")
    stmt = insert.on_conflict_do_update(
        index_elements=[Meta.key], set_={"value": cast(cast(Meta.value, Integer) + 1, Text)}
    ).returning(Meta.value)
    return int(session.execute(stmt).scalar_one())


def _create(path: Path) -> None:
    """A new, fully migrated database at `path`, made under a temporary name first."""
    partial = path.with_name(f".{path.name}.creating")
    for suffix in ("", "-wal", "-shm", "-journal"):  # from a run killed while creating
        partial.with_name(partial.name + suffix).unlink(missing_ok=True)
    db = Database._connect(partial)
    try:
        db._migrate()
    finally:
        db.close()  # the last connection checkpoints the WAL into the file and removes it
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, path)


class Database:
    """An index's SQLite file. Open it with `Database.open`."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self._count: tuple[int, int] | None = None  # (generation, images) of the last count
        self.path = path
        self.vector_dtype = VECTOR_DTYPES["float32"]  # the stored images' (meta vector_dtype)
        #: The image generation this object's last write produced (None before any).
        self.written_generation: int | None = None

    @classmethod
    def open(cls, directory: Path, create: bool = True, wait: float | None = 0.0) -> Database:
        """Open the index database in `directory`, creating (or migrating) it under the
        writer lock. A folder this process cannot write is opened read-only. `wait`: how
        long to queue behind another writer (None: as long as it takes); creating takes
        well under a second, so at least `CREATE_WAIT` seconds are granted anyway."""
        path = directory / DB_FILENAME
        if not path.exists() and not create:
            raise IndexNotFoundError(
                f"no clipsearch index at {directory} (expected {path}); "
                "create one with `clipsearch index PATH --db DIR`"
            )
        if path.exists() and not (writable(directory) and writable(path)):
            return cls._open_read_only(path)
        if path.is_dir():
            raise IndexDamagedError(f"{path} is a folder, not an index database")
        if path.exists() and path.stat().st_size > 0:
            db = cls._connect(path)
            if db._version() == SCHEMA_VERSION:
                return db._ready()
            db.close()
        directory.mkdir(parents=True, exist_ok=True)
        # Creating or migrating: one process at a time, or two first runs trip over each
        # other's half-made tables. A new database is made whole under a temporary name and
        # renamed into place, so a run killed while creating leaves no file behind, and a
        # file that is empty once we hold the lock is a truncated database, not a new one.
        with WriterLock(directory, None if wait is None else max(wait, CREATE_WAIT)):
            if path.exists() and path.stat().st_size == 0:
                raise IndexDamagedError(
                    f"the index database {path} is empty (0 bytes): it was truncated; run "
                    f"`clipsearch repair --db {directory}` to start it afresh (the file is "
                    "kept aside), or delete the folder"
                )
            if not path.exists():
                _create(path)
            db = cls._connect(path)
            try:
                db._migrate()
            except BaseException:
                db.close()
                raise
        return db._ready()

    @classmethod
    def _connect(cls, path: Path) -> Database:
        engine = create_engine(f"sqlite:///{path}")
        event.listen(engine, "connect", pragmas(path, WRITER_PRAGMAS))
        event.listen(engine, "handle_error", typed_errors(path))
        return cls(engine, path)

    @classmethod
    def _open_read_only(cls, path: Path) -> Database:
        """A database in a folder we cannot write: no lock, no WAL switch, no migration."""
        engine = create_engine(f"sqlite:///{read_only_uri(path)}&uri=true")
        event.listen(engine, "connect", pragmas(path, READER_PRAGMAS))
        event.listen(engine, "handle_error", typed_errors(path))
        db = cls(engine, path)
        version = db._version()
        if version != SCHEMA_VERSION:
            db.close()
            raise ReadOnlyIndexError(
                f"the index at {path.parent} has schema version {version} and must be "
                f"upgraded to {SCHEMA_VERSION}, but its folder is read-only; open it once "
                "with write access"
            )
        return db._ready()

    def _ready(self) -> Database:
        try:
            self.vector_dtype = VECTOR_DTYPES[self.get_meta().get("vector_dtype", "float32")]
        except BaseException:
            self.close()
            raise
        return self

    def _version(self) -> int:
        with self.engine.connect() as conn:
            return read_version(conn)

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            version = read_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version}, newer than this clipsearch "
                    f"understands ({SCHEMA_VERSION}); upgrade clipsearch"
                )
            for step in MIGRATIONS[version:]:
                step(conn)
            if version < SCHEMA_VERSION:
                with Session(conn) as session:
                    session.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                    session.flush()

    # -- facts ---------------------------------------------------------------------------

    def get_meta(self) -> dict[str, str]:
        # Plain SQL: a search reads the meta table several times, and the ORM costs 3x here.
        with self.engine.connect() as conn:
            return {str(k): str(v) for k, v in conn.exec_driver_sql("SELECT key, value FROM meta")}

    def set_meta(self, **values: str) -> None:
        with Session(self.engine) as session, session.begin():
            for key, value in values.items():
                session.merge(Meta(key=key, value=value))

    def generation(self, key: str = "generation") -> int:
        """The write counter of the images (or, with `key`, of another table)."""
        with self.engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT value FROM meta WHERE key = ?", (key,)).scalar()
        return int(found or 0)

    def count(self) -> int:
        """Images in the index. Counting 100k rows takes milliseconds, so the count is kept
        per generation (read before counting: a write in between only makes a stale key)."""
        generation = self.generation()
        if self._count is not None and self._count[0] == generation:
            return self._count[1]
        with Session(self.engine) as session:
            count = int(session.scalar(select(func.count(ImageRow.id))) or 0)
        self._count = (generation, count)
        return count

    # -- reads ---------------------------------------------------------------------------

    def stored_files(self) -> list[StoredFile]:
        stmt = select(ImageRow.id, ImageRow.path, ImageRow.size, ImageRow.mtime_ns, ImageRow.sha256)
        with Session(self.engine) as session:
            return [StoredFile(*row) for row in session.execute(stmt)]

    def ids_where(self, condition: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Ids of the rows matching an SQL condition on the images table, ascending."""
        stmt = select(ImageRow.id).where(condition).order_by(ImageRow.id)
        with Session(self.engine) as session:
            return np.fromiter(session.scalars(stmt), dtype=np.int64)

    def ids_by_path(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return {
                path: row_id for path, row_id in session.execute(select(ImageRow.path, ImageRow.id))
            }

    def ids_for_paths(self, paths: Sequence[str], chunk: int = 10_000) -> dict[str, int]:
        """Row ids of those of `paths` that are indexed."""
        out: dict[str, int] = {}
        with Session(self.engine) as session:
            for start in range(0, len(paths), chunk):
                wanted = list(paths[start : start + chunk])
                stmt = select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(wanted))
                out.update({path: row_id for path, row_id in session.execute(stmt)})
        return out

    def known_hashes(self) -> set[str]:
        with Session(self.engine) as session:
            return set(session.scalars(select(ImageRow.sha256).distinct()))

    def vector_for_hash(self, sha256: str) -> Vector | None:
        stmt = select(ImageRow.vector).where(ImageRow.sha256 == sha256).limit(1)
        with Session(self.engine) as session:
            blob = session.scalar(stmt)
        return None if blob is None else decode_vectors(blob, self.vector_dtype)[0]

    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Vector]:
        """Rows for the given ids that still exist, as (ids, paths, matrix)."""
        return vectors_for(
            self.engine, ImageRow.id, ImageRow.path, ImageRow.vector, ids, self.vector_dtype
        )

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Vector]]:
        """All (ids as int64, vectors) in id order, a chunk at a time (for index rebuilds)."""
        return iter_vectors(self.engine, ImageRow.id, ImageRow.vector, chunk, self.vector_dtype)

    def rows(self, ids: Iterable[int] | None = None) -> list[ImageRow]:
        stmt = select(ImageRow).order_by(ImageRow.id)
        if ids is not None:
            stmt = stmt.where(ImageRow.id.in_(list(ids)))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    # -- writes (each one transaction, each bumps the generation) -----------------------

    def apply_file_changes(
        self, removed: Sequence[int], moved: Sequence[Move], touched: Sequence[Move]
    ) -> bool:
        """Drop rows of deleted files, re-point moved ones, refresh stat of unchanged ones;
        returns whether anything was written."""
        if not (removed or moved or touched):
            return False
        with Session(self.engine) as session, session.begin():
            if removed:
                session.execute(delete(ImageRow).where(ImageRow.id.in_(list(removed))))
            # Two-step rename so that swapping two paths cannot trip the UNIQUE constraint.
            for m in moved:
                session.execute(
                    update(ImageRow).where(ImageRow.id == m.id).values(path=f"\0moving:{m.id}")
                )
            for m in [*moved, *touched]:
                session.execute(
                    update(ImageRow)
                    .where(ImageRow.id == m.id)
                    .values(path=m.path, size=m.size, mtime_ns=m.mtime_ns)
                )
            generation = bump(session)
        self.written_generation = generation
        return True

    def convert_vectors(self, name: str, chunk: int = 20_000) -> None:
        """Store every image vector as `name` (float32 or float16) from now on, rewriting the
        stored ones a chunk per transaction; the setting is recorded last, and a killed
        conversion is finished by running it again (each blob's length tells its type)."""
        if name not in VECTOR_DTYPES:
            raise ConfigError(f"vector type must be float32 or float16, not {name!r}")
        target = VECTOR_DTYPES[name]
        dim = int(self.get_meta().get("dim", "0")) or None
        last = 0
        while True:
            with Session(self.engine) as session, session.begin():
                rows = session.execute(
                    select(ImageRow.id, ImageRow.vector)
                    .where(ImageRow.id > last).order_by(ImageRow.id).limit(chunk)
                ).all()  # fmt: skip
                if not rows:
                    break
                changed = [
                    {"id": row_id, "vector": np.frombuffer(blob, dtype=source).astype(target)
                     .tobytes()}
                    for row_id, blob in rows
                    if (source := dtype_of(blob, dim, self.vector_dtype)) != target
                ]  # fmt: skip
                if changed:  # an ORM bulk UPDATE by primary key
                    session.execute(update(ImageRow), changed)
                last = rows[-1][0]
        with Session(self.engine) as session, session.begin():
            session.merge(Meta(key="vector_dtype", value=name))
            generation = bump(session)
        self.written_generation = generation
        self.vector_dtype = target

    def write_images(self, records: Sequence[ImageRecord], drop: Sequence[int] = ()) -> list[int]:
        """Insert or replace (by path) a batch of embedded images, and delete the rows `drop`
        (files that can no longer be read), in one transaction; returns the images' ids."""
        if not records:
            if drop:
                self.apply_file_changes(drop, [], [])
            return []
        now = time.time()
        values = [
            {
                "path": r.path,
                "size": r.size,
                "mtime_ns": r.mtime_ns,
                "sha256": r.sha256,
                "width": r.width,
                "height": r.height,
                "format": r.format,
                "taken_at": r.taken_at,
                "indexed_at": now,
                "vector": np.ascontiguousarray(r.vector, dtype=self.vector_dtype).tobytes(),
            }
            for r in records
        ]
        stmt = sqlite_insert(ImageRow)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ImageRow.path],
            set_={k: stmt.excluded[k] for k in values[0] if k != "path"},
        )
        with Session(self.engine) as session, session.begin():
            if drop:
                session.execute(delete(ImageRow).where(ImageRow.id.in_(list(drop))))
            session.execute(stmt, values)
            paths = [r.path for r in records]
            found = session.execute(
                select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(paths))
            )
            by_path = {path: row_id for path, row_id in found}
            # A changed image's zero-shot tags described the old picture.
            session.execute(
                delete(ImageTag).where(
                    ImageTag.image_id.in_(list(by_path.values())), ImageTag.origin == ZERO_SHOT
                )
            )
            generation = bump(session)
        self.written_generation = generation
        return [by_path[p] for p in paths]
