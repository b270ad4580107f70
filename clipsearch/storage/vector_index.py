"""The FAISS vector index: a cache of the database's vectors, rebuilt from it when stale.

Each index file (one for the images, one for the texts) sits beside the database with a small
JSON stamp (the generation of the table it reflects, the model identity and the dimension).
`load_or_rebuild` trusts the file only when the stamp matches the database; otherwise it
rebuilds from the stored vectors, which is how a killed indexing run or a deleted cache file
recovers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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
    read_index,
)

__all__ = [
    "FlatIndex", "HNSWIndex", "IVFIndex", "IdIndex", "IndexChoice", "Stamp", "VectorIndex",
    "VectorSource", "choose_index", "faiss_gpu_count", "family_of", "load_or_rebuild",
    "save_cache",
]  # fmt: skip

#: Cache names: `<name>.faiss` with its stamp `<name>.json` beside the database.
IMAGES = "vectors"
TEXTS = "texts"
INDEX_FILENAME = f"{IMAGES}.faiss"
Matrix = np.ndarray[Any, np.dtype[np.float32]]
IdArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True)
class Stamp:
    generation: int
    identity: str
    dim: int
    kind: str


class VectorSource(Protocol):
    """A table of stored vectors a FAISS cache can be rebuilt from (images, or texts)."""

    def generation(self) -> int: ...

    def count(self) -> int: ...

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Matrix]]: ...


#: IVF training uses at most this many vectors (FAISS wants 30-256 per list).
TRAIN_SAMPLE_MAX = 200_000


def build_from_db(source: VectorSource, dim: int, choice: IndexChoice | None = None) -> IdIndex:
    """A new index of the given type holding every stored vector (trained first if IVF)."""
    choice = choice or IndexChoice("flat")
    index = new_index(choice, dim)
    if not index.is_trained:
        index.train(training_sample(source, min(TRAIN_SAMPLE_MAX, 256 * choice.nlist)))
    fill_from_db(index, source)
    return index


def training_sample(source: VectorSource, size: int, seed: int = 0) -> Matrix:
    """About `size` stored vectors, drawn uniformly in one pass over the table."""
    total = max(source.count(), 1)
    keep = min(1.0, size / total)
    rng = np.random.default_rng(seed)
    parts = [v[rng.random(len(v)) < keep] for _, v in source.iter_vectors()]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def fill_from_db(index: IdIndex, source: VectorSource) -> None:
    for ids, vectors in source.iter_vectors():
        index.add(ids, vectors)


def _files(directory: Path, name: str) -> tuple[Path, Path]:
    """The index file and its stamp, for the collection `name` ("vectors" for the images)."""
    return directory / f"{name}.faiss", directory / f"{name}.json"


def _read_stamp(path: Path) -> Stamp | None:
    try:
        raw = json.loads(path.read_text())
        return Stamp(
            int(raw["generation"]), str(raw["identity"]), int(raw["dim"]), str(raw["kind"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_stamp(directory: Path, name: str = IMAGES) -> Stamp | None:
    return _read_stamp(_files(directory, name)[1])


def save_cache(directory: Path, index: IdIndex, stamp: Stamp, name: str = IMAGES) -> None:
    """Write the index and then its stamp, each atomically (write + rename)."""
    index_path, stamp_path = _files(directory, name)
    invalidate_cache(directory, name)  # never a moment where an old stamp vouches for a new file
    tmp = index_path.with_name(index_path.name + ".tmp")
    index.save(tmp)
    os.replace(tmp, index_path)
    tmp_stamp = stamp_path.with_name(stamp_path.name + ".tmp")
    tmp_stamp.write_text(json.dumps(stamp.__dict__))
    os.replace(tmp_stamp, stamp_path)


def invalidate_cache(directory: Path, name: str = IMAGES) -> None:
    _files(directory, name)[1].unlink(missing_ok=True)


def load_or_rebuild(
    source: VectorSource,
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
    index_path, stamp_path = _files(directory, name)
    stamp = _read_stamp(stamp_path)
    if (
        stamp is not None
        and (stamp.generation, stamp.identity, stamp.dim) == (source.generation(), identity, dim)
        and family_of(stamp.kind) == choice.family
    ):
        try:
            index = read_index(index_path, dim, choice)
            if index.ntotal == source.count() and index.kind == stamp.kind:
                return index, False
        except RuntimeError:  # unreadable or truncated file: fall through to a rebuild
            pass
    index = build_from_db(source, dim, choice)
    save_cache(directory, index, Stamp(source.generation(), identity, dim, index.kind), name)
    return index, True
