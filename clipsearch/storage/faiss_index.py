"""The FAISS index types, addressed by our database ids, and the automatic choice by size.

- `flat`: exact inner product (`IndexIDMap2(IndexFlatIP)`); right below ~50k vectors, where
  a query costs a few milliseconds.
- `ivf-sq8`: an inverted file of 8-bit scalar-quantised vectors (`IndexIVFScalarQuantizer`),
  a quarter of the memory of float32, trained on a sample; a query scans `nprobe` of `nlist`
  lists. Its candidates are approximate; the searcher rescores them exactly on the stored
  vectors, so quantisation error never reorders the final top-k.
- `hnsw`: a graph (`IndexHNSWFlat`), used by `clipsearch eval --ann`; a graph cannot drop
  points, so it is not kept in step with the database.

When FAISS sees GPUs, searches of a kept index run on a GPU copy made on first search after a
change; adds and removes go to the CPU index, which is the one saved.
"""

from __future__ import annotations

import contextlib
import math
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import faiss
import numpy as np

from clipsearch.arrays import IdArray, Matrix
from clipsearch.errors import ConfigError

INDEX_TYPES = ("auto", "flat", "ivf-sq8")
#: With `auto`, collections from this size on get an IVF index instead of exact search.
AUTO_IVF_MIN = 50_000


class VectorIndex(Protocol):
    """Approximate (or exact) nearest neighbours by inner product over unit vectors."""

    #: True when the scores `search` returns are the exact inner products with the stored
    #: vectors (a flat float32 index built from the table): a searcher then needs no exact
    #: rescoring step. False for quantised or graph indexes, whose candidates it rescores.
    exact: bool

    def search(
        self, queries: Matrix, k: int, allowed: IdArray | None = None
    ) -> tuple[Matrix, IdArray]:
        """(Q, dim) queries -> (Q, k) scores and ids, best first; id -1 pads missing hits.
        With `allowed`, only those ids are considered."""
        ...


def faiss_gpu_count() -> int:
    """GPUs the installed FAISS build can use (0 with faiss-cpu), asked at run time."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


@dataclass(frozen=True)
class IndexChoice:
    """An index type with its parameters, resolved from what was asked and the size."""

    family: str  # flat | ivf-sq8
    nlist: int = 0
    nprobe: int = 0

    @property
    def kind(self) -> str:
        return "flat-ip" if self.family == "flat" else f"ivf{self.nlist}-sq8"


def choose_index(requested: str, count: int, nprobe: int | None = None) -> IndexChoice:
    """`auto`: exact below `AUTO_IVF_MIN` vectors, else IVF-SQ8 with about 4·√N lists
    (a power of two; 4,096 at 1M; at least 39 vectors to train each list, at least 8 lists)
    and nprobe = nlist / 64, at least 32: on real embeddings (CIFAR-10, clipsearch-mini) 8 of
    1,024 lists found 0.82 of the true top 10, 32 found 0.98, at the same latency."""
    if requested not in INDEX_TYPES:
        raise ConfigError(f"index type must be one of {', '.join(INDEX_TYPES)}, not {requested!r}")
    family = requested
    if requested == "auto":
        family = "flat" if count < AUTO_IVF_MIN else "ivf-sq8"
    if family == "flat":
        return IndexChoice("flat")
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(count, 1))))
    trainable = 2 ** int(math.log2(max(count // 39, 1)))
    nlist = max(8, min(nlist, trainable, 65_536))
    return IndexChoice("ivf-sq8", nlist, nprobe or min(nlist, max(32, nlist // 64)))


def family_of(kind: str) -> str:
    return "flat" if kind == "flat-ip" else "ivf-sq8" if kind.endswith("-sq8") else kind


class IdIndex:
    """A FAISS index over (id, vector) pairs with our ids: add, remove, search, save."""

    exact = False

    def __init__(self, dim: int, index: Any, kind: str) -> None:
        self.dim = dim
        self.kind = kind
        # Typed Any: faiss's stubs miss the numpy overloads its Python wrappers accept.
        self.index: Any = index
        self._gpu_copy: Any | None = None
        self._use_gpu = faiss_gpu_count() > 0  # asked once, not on every search
        # One writer or one search at a time: a server searches while an indexing job adds
        # batches, and FAISS does not guard an index against concurrent add and search.
        self._lock = threading.RLock()
        #: The generation of the stored table this index holds, when known (see
        #: `vector_index`); None: unknown, so it must not be saved as a cache.
        self.generation: int | None = None

    def advanced_to(self, generation: int | None) -> None:
        """After applying one write of our own to this index: it now holds `generation`
        if that write was the very next one; else another wrote in between, and what this
        index holds is no longer known."""
        if self.generation is None or generation != self.generation + 1:
            self.generation = None
        else:
            self.generation = generation

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, sample: Matrix) -> None:
        with self._lock:
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, ids: IdArray, vectors: Matrix) -> None:
        if len(ids):
            x = np.ascontiguousarray(vectors, dtype=np.float32)
            with self._lock:
                self._gpu_copy = None
                self.index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: IdArray) -> None:
        if len(ids):
            with self._lock:
                self._gpu_copy = None
                self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def write_to(self, f: IO[bytes]) -> dict[str, int]:
        """Serialise into an open file; returns its size and CRC-32, computed on the way."""
        facts = {"size": 0, "crc32": 0}

        def write(chunk: bytes) -> int:
            facts["crc32"] = zlib.crc32(chunk, facts["crc32"])
            facts["size"] += len(chunk)
            return f.write(chunk)

        with self._lock:
            writer = faiss.PyCallbackIOWriter(write)  # type: ignore[attr-defined]  # not in stubs
            faiss.write_index(self.index, writer)
            del writer  # flushes its buffer through `write`
        return facts

    def ids(self) -> IdArray:
        """Every id this index holds (any order)."""
        with self._lock:
            index = self.index
            if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
                return np.asarray(faiss.vector_to_array(index.id_map), dtype=np.int64)
            lists: Any = faiss.extract_index_ivf(index).invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(lists.nlist)
                if lists.list_size(i)
            ]
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def _search_parameters(self) -> Any | None:
        """Search-time settings (nprobe, efSearch); None where the defaults do."""
        return None

    def _searchable(self) -> Any:
        if not self._use_gpu:
            return self.index
        if self._gpu_copy is None:
            try:
                self._gpu_copy = faiss.index_cpu_to_all_gpus(self.index)
            except (AttributeError, RuntimeError):  # a GPU build without usable devices
                return self.index
        return self._gpu_copy

    def search(
        self, queries: Matrix, k: int, allowed: IdArray | None = None
    ) -> tuple[Matrix, IdArray]:
        x = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock, _threads_for(len(x)):
            return self._search_locked(x, k, allowed)

    def _search_locked(self, x: Matrix, k: int, allowed: IdArray | None) -> tuple[Matrix, IdArray]:
        k = max(1, min(k, self.ntotal))
        params = self._search_parameters()
        if allowed is None:
            searchable = self._searchable()
            if params is None or searchable is not self.index:
                scores, ids = searchable.search(x, k)
            else:
                scores, ids = searchable.search(x, k, params=params)
            return scores, ids
        return self._select(x, k, allowed, params)

    def _select(
        self, x: Matrix, k: int, allowed: IdArray, params: Any | None
    ) -> tuple[Matrix, IdArray]:
        """Search only among the `allowed` ids (on the CPU index), with these parameters."""
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        params = params if params is not None else faiss.SearchParameters()
        params.sel = selector  # kept referenced by `selector` until the search returns
        scores, ids = self.index.search(x, k, params=params)
        return scores, ids


class FlatIndex(IdIndex):
    """Exact inner-product search (over float32 copies of the stored vectors, so its scores
    are the exact ones: `exact`)."""

    exact = True

    def __init__(self, dim: int, index: Any | None = None) -> None:
        inner = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        super().__init__(dim, inner, "flat-ip")


class IVFIndex(IdIndex):
    """IVF with 8-bit scalar quantisation; train it (on a sample) before adding."""

    def __init__(self, dim: int, nlist: int, nprobe: int, index: Any | None = None) -> None:
        if index is None:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            self._quantizer = quantizer  # the IVF index does not own it from Python
        super().__init__(dim, index, f"ivf{nlist}-sq8")
        self.nprobe = nprobe
        #: Filtered queries that needed the fallback scan of every list (for benchmarks).
        self.full_scans = 0

    def _search_parameters(self, nprobe: int | None = None) -> Any:
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe or self.nprobe
        return params

    def _search_locked(self, x: Matrix, k: int, allowed: IdArray | None) -> tuple[Matrix, IdArray]:
        """With `allowed`, the id selector only sees the lists probed, so a filter matching
        few items would find few or none of them. The probe count is first widened by how
        selective the filter is (1% of the items: 100x the lists, capped at all of them);
        any query still short of min(k, matches) is searched again over every list, which
        is then an exhaustive scan of the allowed ids: k hits whenever k match."""
        if allowed is None:
            return super()._search_locked(x, k, allowed)
        k = max(1, min(k, self.ntotal))
        nlist = int(self.index.nlist)
        share = max(len(allowed), 1) / max(self.ntotal, 1)
        widened = min(nlist, max(self.nprobe, math.ceil(self.nprobe / share)))
        scores, ids = self._select(x, k, allowed, self._search_parameters(widened))
        wanted = min(k, len(allowed))
        short = np.flatnonzero((ids >= 0).sum(axis=1) < wanted)
        if len(short) and widened < nlist:
            self.full_scans += len(short)
            everywhere = self._search_parameters(nlist)
            scores[short], ids[short] = self._select(x[short], k, allowed, everywhere)
        return scores, ids


class HNSWIndex(IdIndex):
    """Approximate search over an HNSW graph (inner product), for `eval --ann`."""

    def __init__(self, dim: int, m: int = 32, ef_search: int = 64) -> None:
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efSearch = ef_search
        self.ef_search = ef_search
        super().__init__(dim, faiss.IndexIDMap2(graph), "hnsw")

    def _search_parameters(self) -> Any:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing in stubs
        params.efSearch = self.ef_search
        return params


def new_index(choice: IndexChoice, dim: int) -> IdIndex:
    if choice.family == "flat":
        return FlatIndex(dim)
    return IVFIndex(dim, choice.nlist, choice.nprobe)


def read_index_checked(path: Path, dim: int, choice: IndexChoice) -> tuple[IdIndex, int]:
    """A saved index and the CRC-32 of the bytes it was read from, in one pass; an IVF one
    searches with `choice.nprobe`."""
    crc = 0
    with path.open("rb") as f:

        def read(size: int) -> bytes:
            nonlocal crc
            chunk = f.read(size)
            crc = zlib.crc32(chunk, crc)
            return chunk

        reader = faiss.PyCallbackIOReader(read)  # type: ignore[attr-defined]  # not in stubs
        try:
            index = faiss.read_index(reader)
        finally:
            del reader
    return _wrap(index, dim, choice), crc


def _wrap(index: Any, dim: int, choice: IndexChoice) -> IdIndex:
    if int(index.d) != dim:
        raise RuntimeError(f"index of dimension {index.d}, expected {dim}")
    if isinstance(index, faiss.IndexIVF):
        return IVFIndex(dim, int(index.nlist), choice.nprobe or 8, index)
    return FlatIndex(dim, index)


#: Searches of at most this many queries run on the calling thread alone: starting
#: OpenMP's threads costs more than they save (12,000 vectors, one query: 1.7 ms on 2
#: threads, 0.6 ms on one; benchmarks/results/serve_profile.md).
FEW_QUERIES = 4


@contextlib.contextmanager
def _threads_for(queries: int) -> Iterator[None]:
    """OpenMP threads for a search of this many queries (OpenMP's setting is the calling
    thread's own: other threads, an indexing job's, keep theirs)."""
    if queries > FEW_QUERIES:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
