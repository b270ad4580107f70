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

import faiss
import numpy as np

#: Cache names: `<name>.faiss` with its stamp `<name>.json` beside the database.
IMAGES = "vectors"
TEXTS = "texts"
INDEX_FILENAME = f"{IMAGES}.faiss"
Matrix = np.ndarray[Any, np.dtype[np.float32]]
IdArray = np.ndarray[Any, np.dtype[np.int64]]


class VectorIndex(Protocol):
    """Approximate (or exact) nearest neighbours by inner product over unit vectors."""

    def search(
        self, queries: Matrix, k: int, allowed: IdArray | None = None
    ) -> tuple[Matrix, IdArray]:
        """(Q, dim) queries -> (Q, k) scores and ids, best first; id -1 pads missing hits.
        With `allowed`, only those ids are considered."""
        ...


@dataclass(frozen=True)
class Stamp:
    generation: int
    identity: str
    dim: int
    kind: str


def faiss_gpu_count() -> int:
    """GPUs the installed FAISS build can use (0 with faiss-cpu), asked at run time."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


class _IdMappedIndex:
    """A FAISS index addressed by our database ids (`IndexIDMap2` around `inner`)."""

    kind = "?"

    def __init__(self, dim: int, inner: Any) -> None:
        self.dim = dim
        # Typed Any: faiss's stubs miss the numpy overloads its Python wrappers accept.
        self.index: Any = (
            inner if isinstance(inner, faiss.IndexIDMap2) else faiss.IndexIDMap2(inner)
        )

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: IdArray, vectors: Matrix) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(ids, dtype=np.int64),
            )

    def _searchable(self) -> Any:
        return self.index

    def _search_parameters(self) -> Any:
        return faiss.SearchParameters()

    def search(
        self, queries: Matrix, k: int, allowed: IdArray | None = None
    ) -> tuple[Matrix, IdArray]:
        k = max(1, min(k, self.ntotal))
        x = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is None:
            scores, ids = self._searchable().search(x, k)
            return scores, ids
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        params = self._search_parameters()
        params.sel = selector  # kept referenced by `selector` until the search returns
        scores, ids = self.index.search(x, k, params=params)
        return scores, ids


class FlatIndex(_IdMappedIndex):
    """Exact inner-product search (`IndexFlatIP`).

    The CPU index is the one kept and saved. When FAISS sees GPUs, searches run on a GPU copy
    made on first search after a change (adds and removes go to the CPU index).
    """

    kind = "flat-ip"

    def __init__(self, dim: int, index: Any | None = None) -> None:
        super().__init__(dim, index if index is not None else faiss.IndexFlatIP(dim))
        self._gpu_copy: Any | None = None
        self._use_gpu = faiss_gpu_count() > 0  # asked once, not on every search

    def _searchable(self) -> Any:
        if not self._use_gpu:
            return self.index
        if self._gpu_copy is None:
            try:
                self._gpu_copy = faiss.index_cpu_to_all_gpus(self.index)
            except (AttributeError, RuntimeError):  # a GPU build without usable devices
                return self.index
        return self._gpu_copy

    def add(self, ids: IdArray, vectors: Matrix) -> None:
        self._gpu_copy = None
        super().add(ids, vectors)

    def remove(self, ids: IdArray) -> None:
        self._gpu_copy = None
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, dim: int) -> FlatIndex:
        return cls(dim, faiss.read_index(str(path)))


class HNSWIndex(_IdMappedIndex):
    """Approximate search over an HNSW graph (`IndexHNSWFlat`, inner product).

    For now used by `clipsearch eval --ann` to make ANN loss visible; a graph cannot drop
    points, so it is built from the stored vectors when needed, not kept in step.
    """

    kind = "hnsw"

    def __init__(self, dim: int, m: int = 32, ef_search: int = 64) -> None:
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efSearch = ef_search
        self.ef_search = ef_search
        super().__init__(dim, graph)

    def _search_parameters(self) -> Any:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing in stubs
        params.efSearch = self.ef_search
        return params


class VectorSource(Protocol):
    """A table of stored vectors a FAISS cache can be rebuilt from (images, or texts)."""

    def generation(self) -> int: ...

    def count(self) -> int: ...

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Matrix]]: ...


def build_from_db(source: VectorSource, dim: int) -> FlatIndex:
    index = FlatIndex(dim)
    fill_from_db(index, source)
    return index


def fill_from_db(index: _IdMappedIndex, source: VectorSource) -> None:
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


def save_cache(directory: Path, index: FlatIndex, stamp: Stamp, name: str = IMAGES) -> None:
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
    source: VectorSource, directory: Path, identity: str, dim: int, name: str = IMAGES
) -> tuple[FlatIndex, bool]:
    """The index matching the stored vectors now, and whether it had to be rebuilt."""
    index_path, stamp_path = _files(directory, name)
    expected = Stamp(source.generation(), identity, dim, FlatIndex.kind)
    if _read_stamp(stamp_path) == expected:
        try:
            index = FlatIndex.load(index_path, dim)
            if index.ntotal == source.count():
                return index, False
        except RuntimeError:  # unreadable or truncated file: fall through to a rebuild
            pass
    index = build_from_db(source, dim)
    save_cache(directory, index, expected, name)
    return index, True
