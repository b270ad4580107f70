"""The database: image rows with their vectors, and the index's facts, in SQLite or
PostgreSQL (see `location`; every difference between the two is in `dialect`).

Every write is one transaction that also bumps `generation` (in one statement, so two
processes can never both read N and write N + 1), a counter the FAISS cache is stamped with:
a cache whose stamp differs from the database's is stale and gets rebuilt.

Errors that a user can act on (a damaged file, a full disk, a read-only folder, a lock held
too long, a server that cannot be reached) come out as the typed errors of
`clipsearch.errors`, from every query.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Engine,
    Integer,
    Text,
    cast,
    delete,
    func,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session

from clipsearch.arrays import IdArray, Vector
from clipsearch.errors import ConfigError, IndexDamagedError
from clipsearch.storage import dialect, filtering
from clipsearch.storage.blobs import (
    VECTOR_DTYPES,
    decode_vectors,
    dtype_of,
    iter_vectors,
    stored_widths,
    vectors_for,
)
from clipsearch.storage.filtering import ImageConditions
from clipsearch.storage.keyframes import Keyframes, replace_frames
from clipsearch.storage.location import StoreLocation
from clipsearch.storage.lock import AdvisoryLock, WriterLock
from clipsearch.storage.opening import DB_FILENAME, open_engine, store_id
from clipsearch.storage.schema import ZERO_SHOT, ImageRow, ImageTag, Meta

__all__ = [
    "DB_FILENAME", "Database", "ImageRecord", "Move", "StoredFile", "Written", "bump", "chunked",
    "put_meta",
]  # fmt: skip


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
    camera: str | None = None
    embedded: str | None = None
    duration: float | None = None  # a video's, in seconds
    frames: Keyframes | None = None  # a video's keyframes (`vector` is their mean)


@dataclass(frozen=True)
class Written:
    """What a write stored: the rows' ids (in the order given), the keys of the keyframes it
    stored and of those it replaced (for the live vector index)."""

    ids: list[int]
    frame_keys: list[int]
    dropped_keys: list[int]


@dataclass(frozen=True)
class Move:
    id: int
    path: str
    size: int
    mtime_ns: int


#: The most rows `Database._rows_seen` keeps before it starts afresh.
MEMO_ROWS = 200_000
#: Advanced by writes that change an image's words but not its vector (tags, OCR text).
WORDS_GENERATION = "words_generation"


def bump(session: Session, key: str = "generation") -> int:
    """Advance a write counter inside the caller's transaction, in one statement (no
    read-then-write window between two processes); returns the new value."""
    insert = dialect.upsert(session.connection(), Meta).values(key=key, value="1")
    stmt = insert.on_conflict_do_update(
        index_elements=[Meta.key], set_={"value": cast(cast(Meta.value, Integer) + 1, Text)}
    ).returning(Meta.value)
    return int(session.execute(stmt).scalar_one())


def put_meta(session: Session, key: str, value: str) -> None:
    """Set one fact inside the caller's transaction (an upsert: two writers never collide)."""
    stmt = dialect.upsert(session.connection(), Meta).values(key=key, value=value)
    session.execute(stmt.on_conflict_do_update(index_elements=[Meta.key], set_={"value": value}))


def chunked(values: Sequence[int], size: int = 10_000) -> Iterator[list[int]]:
    """Long id lists a slice at a time: PostgreSQL takes at most 65,535 parameters."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _file_identity(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Database:
    """An index's metadata store (SQLite or PostgreSQL). Open it with `Database.open`."""

    def __init__(self, engine: Engine, location: StoreLocation) -> None:
        self.engine = engine
        self.location = location
        self._count: tuple[int, int] | None = None  # (generation, images) of the last count
        self.vector_dtype = VECTOR_DTYPES["float32"]  # the stored images' (meta vector_dtype)
        self._dim: int | None = None  # the model's, read from the meta table once known
        #: The image generation this object's last write produced (None before any).
        self.written_generation: int | None = None
        self._file = _file_identity(self.path)
        self._snapshot = threading.local()  # this thread's `snapshot` of the meta table
        #: (write counter, rows by id) of what searches read of the rows: see `_rows_seen`.
        self._rows: tuple[int, dict[int, tuple[str, str | None, bool]]] | None = None

    @classmethod
    def open(
        cls,
        location: StoreLocation | Path,
        create: bool = True,
        wait: float | None = 0.0,
    ) -> Database:
        """Open the index database at `location` (a folder: SQLite), creating or migrating
        it under the writer lock. `wait`: how long to queue behind another writer (None: as
        long as it takes)."""
        if isinstance(location, Path):
            location = StoreLocation(location, None)
        db = cls(open_engine(location, create, wait), location)
        try:
            db.vector_dtype = VECTOR_DTYPES[db.get_meta().get("vector_dtype", "float32")]
        except BaseException:
            db.close()
            raise
        return db

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for a server database)."""
        folder = self.location.folder
        return None if folder is None else folder / DB_FILENAME

    @property
    def label(self) -> str:
        return self.location.label

    def store_id(self) -> str:
        return store_id(self.engine, self.location)

    def cache_dir(self) -> Path:
        """Where this index's FAISS caches and thumbnails live (made on demand)."""
        folder = self.location.cache_dir(self.store_id())
        if folder != self.location.folder:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def writer_lock(self, wait: float | None = 0.0) -> WriterLock:
        """The lock a writing operation holds (not yet acquired). On PostgreSQL, indexing
        runs take it shared (several at once: rows are upserts, the generation one
        statement); everything else takes it exclusive. SQLite has one writer at a time."""
        if self.location.folder is not None:
            return WriterLock(self.location.folder, wait)
        return WriterLock(
            None,
            wait,
            process=AdvisoryLock(self.engine),
            shared_process=AdvisoryLock(self.engine, shared=True),
            label=self.label,
        )

    def size_bytes(self) -> int:
        return dialect.database_bytes(self.engine, self.path)

    def close(self) -> None:
        self.engine.dispose()

    # -- facts ---------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Within, this thread's reads of the meta table (`get_meta`, `generation`) all
        answer from its first read: a search reads its facts and write counters a dozen
        times, each a query (a round trip on PostgreSQL), and one search sees one state.
        Nested snapshots share the outer one; a write of the meta table through this object
        drops what was read."""
        local = self._snapshot
        if getattr(local, "active", False):
            yield
            return
        local.active, local.meta = True, None
        try:
            yield
        finally:
            local.active, local.meta = False, None

    def get_meta(self) -> dict[str, str]:
        local = self._snapshot
        if not getattr(local, "active", False):
            return self._read_meta()
        if local.meta is None:
            local.meta = self._read_meta()
        return dict(local.meta)

    def _read_meta(self) -> dict[str, str]:
        # Plain SQL: the ORM costs 3x here.
        self.check_file()
        with self.engine.connect() as conn:
            return {str(k): str(v) for k, v in conn.exec_driver_sql("SELECT key, value FROM meta")}

    def _forget_snapshot(self) -> None:
        self._snapshot.meta = None

    def set_meta(self, **values: str) -> None:
        self._forget_snapshot()
        with Session(self.engine) as session, session.begin():
            for key, value in values.items():
                put_meta(session, key, value)

    def set_meta_if_absent(self, **values: str) -> None:
        """Set these facts together, unless the first is already set (a claim: of several
        processes racing, the first to commit wins and the others keep its values)."""
        self._forget_snapshot()
        with Session(self.engine) as session, session.begin():
            first = next(iter(values))
            stmt = dialect.upsert(session.connection(), Meta).values(key=first, value=values[first])
            claimed = session.execute(
                stmt.on_conflict_do_nothing(index_elements=[Meta.key]).returning(Meta.key)
            ).first()
            if claimed is not None:
                for key, value in list(values.items())[1:]:
                    put_meta(session, key, value)

    def check_file(self) -> None:
        """For an SQLite store: raise `IndexDamagedError` if the database file was deleted
        or emptied while open (its connections would go on answering from what they had
        read, as a server did), and reconnect if another file took its place (`repair`
        swaps one in). One stat, on every read of the meta table or the write counter."""
        path = self.path
        if path is None:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise IndexDamagedError(
                f"the index database {path} was deleted while in use; restore it from a "
                f"backup, or index again into {path.parent}"
            ) from None
        if st.st_size == 0:
            raise IndexDamagedError(
                f"the index database {path} was emptied (0 bytes) while in use; run "
                f"`clipsearch repair --db {path.parent}` to start it afresh, or restore it"
            )
        if (st.st_dev, st.st_ino) != self._file:
            self._file = (st.st_dev, st.st_ino)
            self._count = None
            self.engine.dispose()  # new connections open the file now at the path

    def generation(self, key: str = "generation") -> int:
        """The write counter of the images (or, with `key`, of another table)."""
        if getattr(self._snapshot, "active", False):
            return int(self.get_meta().get(key) or 0)
        self.check_file()
        with self.engine.connect() as conn:
            found = conn.scalar(text("SELECT value FROM meta WHERE key = :key"), {"key": key})
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

    def ids_matching(self, conditions: ImageConditions) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Ids of the images that meet a filter's conditions, ascending."""
        return self._ids_where(filtering.where(conditions))

    def all_ids(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Every image's id, ascending."""
        return self._ids_where(true())

    def _ids_where(self, condition: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Ids of the rows matching an SQL condition on the images table, ascending."""
        stmt = select(ImageRow.id).where(condition).order_by(ImageRow.id)
        with Session(self.engine) as session:
            return np.fromiter(session.scalars(stmt), dtype=np.int64)

    def unread_texts(self) -> list[tuple[int, str]]:
        """(id, path) of the images whose text has not been read (OCR) yet."""
        stmt = select(ImageRow.id, ImageRow.path).where(
            ImageRow.ocr.is_(None),
            ImageRow.duration.is_(None),  # videos are not read
        )
        with Session(self.engine) as session:
            return [(i, p) for i, p in session.execute(stmt.order_by(ImageRow.id))]

    def set_texts_read(self, texts: dict[int, str]) -> None:
        """Store the text read in each image ('' for none), in one transaction."""
        if not texts:
            return
        with Session(self.engine) as session, session.begin():
            for image_id, text in texts.items():
                session.execute(update(ImageRow).where(ImageRow.id == image_id).values(ocr=text))
            bump(session, WORDS_GENERATION)

    def _rows_seen(self, ids: Sequence[int]) -> dict[int, tuple[str, str | None, bool]]:
        """What searches read of the rows, holding each of `ids` that exists: (path, date
        taken, whether its vector is well-formed). One read fills what `labels_for` and
        `dates_for` need, as a search asks for both (a round trip each on PostgreSQL); kept
        as long as the write counter holds (the same images come back search after search,
        and a snapshot's counter costs nothing). Rows read after the counter moved are only
        newer than their key."""
        generation = self.generation()
        if self._rows is None or self._rows[0] != generation or len(self._rows[1]) > MEMO_ROWS:
            self._rows = (generation, {})
        memo = self._rows[1]
        missing = [i for i in dict.fromkeys(ids) if i not in memo]
        if missing:
            widths = set(stored_widths(self.dim()))
            columns = (ImageRow.id, ImageRow.path, ImageRow.taken_at, func.length(ImageRow.vector))
            with self.engine.connect() as conn:  # Core: this runs in every search
                for chunk in chunked(missing):
                    for i, path, taken, size in conn.execute(
                        select(*columns).where(ImageRow.id.in_(chunk))
                    ):
                        memo[i] = (path, taken, not widths or size in widths)
        return memo

    def dates_for(self, ids: Sequence[int]) -> dict[int, str | None]:
        """The EXIF date taken of each of these images (None where the photo has none)."""
        rows = self._rows_seen(ids)
        return {i: rows[i][1] for i in ids if i in rows}

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

    def labels_for(self, ids: Sequence[int]) -> tuple[list[int], list[str]]:
        """(ids, paths) of the rows among `ids` whose vectors are well-formed."""
        rows = self._rows_seen(ids)
        kept = [i for i in dict.fromkeys(ids) if i in rows and rows[i][2]]
        return kept, [rows[i][0] for i in kept]

    def dim(self) -> int | None:
        """The dimension of the stored vectors (None before the model is recorded)."""
        if self._dim is None and (recorded := self.get_meta().get("dim")):
            self._dim = int(recorded)
        return self._dim

    def iter_vectors(
        self, chunk: int = 20_000, shard: tuple[int, int] | None = None
    ) -> Iterator[tuple[IdArray, Vector]]:
        """All (ids as int64, vectors) in id order, a chunk at a time (for index rebuilds);
        `shard` (s, n): only ids equal to s modulo n."""
        return iter_vectors(
            self.engine, ImageRow.id, ImageRow.vector, chunk, self.vector_dtype, shard
        )

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
        self.written_generation = dialect.retrying(
            lambda: self._apply_file_changes(removed, moved, touched)
        )
        return True

    def _apply_file_changes(
        self, removed: Sequence[int], moved: Sequence[Move], touched: Sequence[Move]
    ) -> int:
        with Session(self.engine) as session, session.begin():
            for ids in chunked(removed):
                session.execute(delete(ImageRow).where(ImageRow.id.in_(ids)))
            # Two-step rename so that swapping two paths cannot trip the UNIQUE constraint
            # (the interim name is relative, so it can never be an indexed file's).
            for m in moved:
                session.execute(
                    update(ImageRow).where(ImageRow.id == m.id).values(path=f":moving:{m.id}")
                )
            for m in [*moved, *touched]:
                session.execute(
                    update(ImageRow)
                    .where(ImageRow.id == m.id)
                    .values(path=m.path, size=m.size, mtime_ns=m.mtime_ns)
                )
            return bump(session)

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
            put_meta(session, "vector_dtype", name)
            generation = bump(session)
        self.written_generation = generation
        self.vector_dtype = target

    def write_images(self, records: Sequence[ImageRecord], drop: Sequence[int] = ()) -> list[int]:
        """Insert or replace (by path) a batch of embedded images, and delete the rows `drop`
        (files that can no longer be read), in one transaction; returns the images' ids."""
        return self.write_items(records, drop).ids

    def write_items(self, records: Sequence[ImageRecord], drop: Sequence[int] = ()) -> Written:
        """`write_images`, for photos and videos alike: a video's keyframes replace those it
        had, in the same transaction."""
        if not records:
            if drop:
                self.apply_file_changes(drop, [], [])
            return Written([], [], [])
        now = time.time()
        paths = [r.path for r in records]
        # Rows go in in path order, one lock order for every writer: two writers inserting
        # the same new paths in different orders could each wait for the other.
        records = sorted(records, key=lambda r: r.path)
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
                "camera": r.camera,
                "embedded": r.embedded,
                "duration": r.duration,
                "ocr": None,  # new content: its text is read again (--ocr)
                "indexed_at": now,
                "vector": np.ascontiguousarray(r.vector, dtype=self.vector_dtype).tobytes(),
            }
            for r in records
        ]
        frames = {r.path: r.frames for r in records if r.frames is not None}
        by_path, keys, dropped, self.written_generation = dialect.retrying(
            lambda: self._upsert_images(values, paths, drop, frames)
        )
        return Written([by_path[p] for p in paths], keys, dropped)

    def _upsert_images(
        self,
        values: list[dict[str, Any]],
        paths: list[str],
        drop: Sequence[int],
        frames: dict[str, Keyframes],
    ) -> tuple[dict[str, int], list[int], list[int], int]:
        with Session(self.engine) as session, session.begin():
            stmt = dialect.upsert(session.connection(), ImageRow)
            stmt = stmt.on_conflict_do_update(
                index_elements=[ImageRow.path],
                set_={k: stmt.excluded[k] for k in values[0] if k != "path"},
            )
            for ids in chunked(drop):
                session.execute(delete(ImageRow).where(ImageRow.id.in_(ids)))
            session.execute(stmt, values)
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
            keys: list[int] = []
            dropped: list[int] = []
            for path, keyframes in sorted(frames.items()):
                new, old = replace_frames(session, by_path[path], keyframes, self.vector_dtype)
                keys += new
                dropped += old
            return by_path, keys, dropped, bump(session)
