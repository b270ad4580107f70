"""The FAISS vector index: a cache of the database's vectors, rebuilt from it when stale.

Each index file (one for the images, one for the texts) sits beside the database with a small
JSON stamp: the generation of the table the index *holds* (not whatever the database says
when it is saved), the model identity, the dimension, the vector count, and the file's size
and CRC-32. `load_or_rebuild` trusts the file only when all of that matches; otherwise it
rebuilds from the stored vectors, which is how a killed run, a second writer, a deleted,
truncated or overwritten cache file all recover.

An index built from the database knows its generation when no write committed while it was
read (the generation is read before and after); a writer's live index advances it only by
its own writes, one at a time, so a write from elsewhere makes it unknown, and an index
whose generation is unknown is never saved. Files are written under a unique temporary name,
fsynced, and renamed into place, so concurrent savers never mix their bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.arrays import Matrix
from clipsearch.errors import DiskFullError, ReadOnlyIndexError
from clipsearch.storage.faiss_index import (
    FlatIndex,
    HNSWIndex,
    IdIndex,
    IndexChoice,
    IVFIndex,
    VectorIndex,
    choose_index,
    faiss_gpu_count,
    family_of,
    new_index,
    read_index_checked,
)
from clipsearch.storage.vectors import VectorTable

__all__ = [
    "CacheFiles", "FaissBackend", "FlatIndex", "HNSWIndex", "IVFIndex", "IdIndex",
    "IndexChoice", "Stamp", "VectorIndex", "VectorTable", "choose_index", "faiss_gpu_count",
    "family_of", "load_or_rebuild", "read_index_checked", "save_cache", "try_save_cache",
]  # fmt: skip

#: Cache names: `<name>.faiss` with its stamp `<name>.json` beside the database.
IMAGES = "vectors"
TEXTS = "texts"
INDEX_FILENAME = f"{IMAGES}.faiss"


@dataclass(frozen=True)
class Stamp:
    generation: int
    identity: str
    dim: int
    kind: str
    count: int = -1  # vectors in the file
    size: int = -1  # bytes of the file
    crc32: int = -1  # of the file's bytes


#: IVF training uses at most this many vectors (FAISS wants 30-256 per list).
TRAIN_SAMPLE_MAX = 200_000


def build_from_db(source: VectorTable, dim: int, choice: IndexChoice | None = None) -> IdIndex:
    """A new index of the given type holding every stored vector (trained first if IVF),
    with the generation it holds when no write landed while it was read (else None)."""
    choice = choice or IndexChoice("flat")
    for _attempt in range(3):
        before = source.generation()
        index = new_index(choice, dim)
        if not index.is_trained:
            index.train(training_sample(source, min(TRAIN_SAMPLE_MAX, 256 * choice.nlist)))
        fill_from_db(index, source)
        if source.generation() == before:
            index.generation = before
            return index
    return index  # written to all along: usable now, but not worth saving


def training_sample(source: VectorTable, size: int, seed: int = 0) -> Matrix:
    """About `size` stored vectors, drawn uniformly in one pass over the table."""
    total = max(source.count(), 1)
    keep = min(1.0, size / total)
    rng = np.random.default_rng(seed)
    parts = [v[rng.random(len(v)) < keep] for _, v in source.iter_vectors()]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def fill_from_db(index: IdIndex, source: VectorTable) -> None:
    for ids, vectors in source.iter_vectors():
        index.add(ids, vectors)


def _files(directory: Path, name: str) -> tuple[Path, Path]:
    """The index file and its stamp, for the collection `name` ("vectors" for the images)."""
    return directory / f"{name}.faiss", directory / f"{name}.json"


def _read_stamp(path: Path) -> Stamp | None:
    try:
        raw = json.loads(path.read_text())
        return Stamp(
            int(raw["generation"]), str(raw["identity"]), int(raw["dim"]), str(raw["kind"]),
            int(raw.get("count", -1)), int(raw.get("size", -1)), int(raw.get("crc32", -1)),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_stamp(directory: Path, name: str = IMAGES) -> Stamp | None:
    return _read_stamp(_files(directory, name)[1])


def _write_atomically(target: Path, write: Callable[[Any], None]) -> None:
    """Write through `write(file)` to a unique temporary name beside `target`, fsync, then
    rename over `target` and fsync the folder; on failure the temporary file is removed."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a folder
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_cache(directory: Path, index: IdIndex, identity: str, name: str = IMAGES) -> bool:
    """Write the index and then its stamp, each atomically, if the index knows the
    generation it holds; returns whether it was saved. A full disk or a read-only folder
    raises its typed error, after removing the partial file."""
    if index.generation is None:
        invalidate_cache(directory, name)
        return False
    index_path, stamp_path = _files(directory, name)
    invalidate_cache(directory, name)  # never a moment where an old stamp vouches for a new file
    written: dict[str, int] = {}
    try:
        _write_atomically(index_path, lambda f: written.update(index.write_to(f)))
        stamp = Stamp(
            index.generation, identity, index.dim, index.kind, index.ntotal,
            written["size"], written["crc32"],
        )  # fmt: skip
        _write_atomically(stamp_path, lambda f: f.write(json.dumps(asdict(stamp)).encode()))
    except OSError as exc:
        raise _cache_error(directory, exc) from None
    return True


def _cache_error(directory: Path, exc: OSError) -> Exception:
    if exc.errno == 28:  # ENOSPC
        return DiskFullError(
            f"the disk holding {directory} is full: the vector cache could not be saved (the "
            "database is intact; the next search rebuilds the cache once there is space)"
        )
    return ReadOnlyIndexError(f"cannot write the vector cache in {directory}: {exc.strerror}")


def try_save_cache(directory: Path, index: IdIndex, identity: str, name: str = IMAGES) -> None:
    """`save_cache` for readers: a cache that cannot be written is simply not kept."""
    with contextlib.suppress(DiskFullError, ReadOnlyIndexError):
        save_cache(directory, index, identity, name)


def invalidate_cache(directory: Path, name: str = IMAGES) -> None:
    with contextlib.suppress(OSError):  # a read-only folder: its stamp cannot be stale
        _files(directory, name)[1].unlink(missing_ok=True)


def load_cache(
    source: VectorTable, directory: Path, identity: str, dim: int, name: str, choice: IndexChoice
) -> IdIndex | None:
    """The saved index, if its stamp says it holds exactly the stored vectors now and its
    bytes are the ones the stamp describes."""
    index_path, stamp_path = _files(directory, name)
    stamp = _read_stamp(stamp_path)
    if stamp is None or family_of(stamp.kind) != choice.family:
        return None
    generation = source.generation()
    if (stamp.generation, stamp.identity, stamp.dim) != (generation, identity, dim):
        return None
    try:
        if index_path.stat().st_size != stamp.size:
            return None
        index, crc = read_index_checked(index_path, dim, choice)
    except (OSError, RuntimeError):  # missing, unreadable or truncated: rebuild
        return None
    if crc != stamp.crc32 or index.kind != stamp.kind:
        return None
    if index.ntotal != stamp.count or index.ntotal != source.count():
        return None
    index.generation = generation
    return index


def load_or_rebuild(
    source: VectorTable,
    directory: Path,
    identity: str,
    dim: int,
    name: str = IMAGES,
    choice: IndexChoice | None = None,
) -> tuple[IdIndex, bool]:
    """The index matching the stored vectors now, and whether it had to be rebuilt. A saved
    index is kept if its stamp matches and it is of the chosen family (an IVF index keeps the
    lists it was trained with until `clipsearch reindex`)."""
    choice = choice or IndexChoice("flat")
    index = load_cache(source, directory, identity, dim, name, choice)
    if index is not None:
        return index, False
    index = build_from_db(source, dim, choice)
    try_save_cache(directory, index, identity, name)
    return index, True


@dataclass(frozen=True)
class CacheFiles:
    """A saved index and its stamp (`<name>.faiss`, `<name>.json`) in a cache folder."""

    folder: Path
    name: str = IMAGES

    def stamp(self) -> Stamp | None:
        return read_stamp(self.folder, self.name)

    def invalidate(self) -> None:
        """Forget the saved index (the next open rebuilds from the table)."""
        invalidate_cache(self.folder, self.name)

    def size(self) -> int:
        try:
            return _files(self.folder, self.name)[0].stat().st_size
        except OSError:
            return 0


class FaissBackend:
    """The FAISS index of one vector table, owning its whole life: built from the table,
    kept as a cache file in `cache_dir` under a stamp, trusted only while the stamp matches,
    saved atomically under a unique temporary name, rebuilt otherwise. The `IdIndex` it
    hands out adds, removes and searches (with an id filter)."""

    def __init__(
        self,
        table: VectorTable,
        cache_dir: Path,
        identity: str,
        dim: int,
        name: str = IMAGES,
        choice: IndexChoice | None = None,
    ) -> None:
        self.table = table
        self.cache_dir = cache_dir
        self.identity = identity
        self.dim = dim
        self.name = name
        self.choice = choice or IndexChoice("flat")
        self.files = CacheFiles(cache_dir, name)

    def open(self) -> IdIndex:
        """The index holding the table's vectors now: the saved cache, or a rebuild."""
        index, _ = load_or_rebuild(
            self.table, self.cache_dir, self.identity, self.dim, self.name, self.choice
        )
        return index

    def save(self, index: IdIndex) -> bool:
        """Keep `index` as the cache, if it knows which generation it holds."""
        return save_cache(self.cache_dir, index, self.identity, self.name)
