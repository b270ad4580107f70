"""A vector index that declares its scores exact skips the rescoring stage: same answers as
the two-stage path, without reading a single stored vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from clipsearch.arrays import Matrix
from clipsearch.search.searcher import EXACT_FILTER_LIMIT, InMemoryStore, Searcher
from clipsearch.storage.faiss_index import IVFIndex
from clipsearch.storage.vector_index import FlatIndex

N, DIM = 5_000, 32


class CountingStore(InMemoryStore):
    """The real in-memory table, counting what a search reads from it."""

    def __init__(self, labels: Sequence[str], vectors: Matrix) -> None:
        super().__init__(labels, vectors)
        self.vector_reads = 0

    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Matrix]:
        self.vector_reads += 1
        return super().vectors_for(ids)


class RescoredFlat(FlatIndex):
    """The same flat index, declaring itself approximate: the two-stage reference."""

    exact = False


def _unit(rows: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return np.asarray(m / np.linalg.norm(m, axis=1, keepdims=True), dtype=np.float32)


@pytest.fixture(scope="module")
def table() -> tuple[list[str], np.ndarray]:
    return [f"item{i}" for i in range(N)], _unit(N, 0)


def _searcher(index_type: type[FlatIndex], labels: list[str], vectors: np.ndarray) -> Searcher:
    index = index_type(DIM)
    index.add(np.arange(N, dtype=np.int64), vectors)
    return Searcher(CountingStore(labels, vectors), index)


@pytest.mark.parametrize("allowed", [None, "small", "large"])
def test_exact_index_answers_like_the_rescored_path(table, allowed) -> None:  # type: ignore[no-untyped-def]
    labels, vectors = table
    queries = _unit(25, 1)
    # A filter under the exact-filter limit (scored from its vectors in the two-stage
    # path) and one over it (FAISS's id selector there too).
    size = {"small": 50, "large": EXACT_FILTER_LIMIT + 100}.get(allowed or "", 0)
    rng = np.random.default_rng(2)
    ids = np.sort(rng.choice(N, size, replace=False)) if allowed else None
    fast = _searcher(FlatIndex, labels, vectors)
    slow = _searcher(RescoredFlat, labels, vectors)
    got, want = fast.search_many(queries, 10, ids), slow.search_many(queries, 10, ids)
    for g, w in zip(got, want, strict=True):
        assert [m.id for m in g] == [m.id for m in w]
        assert [m.label for m in g] == [m.label for m in w]
        np.testing.assert_allclose([m.score for m in g], [m.score for m in w], atol=1e-5)
    assert isinstance(fast.store, CountingStore) and isinstance(slow.store, CountingStore)
    assert fast.store.vector_reads == 0
    assert slow.store.vector_reads > 0


def test_rows_gone_from_the_table_are_dropped(table) -> None:  # type: ignore[no-untyped-def]
    labels, vectors = table
    index = FlatIndex(DIM)
    index.add(np.arange(N, dtype=np.int64), vectors)
    # The table lost its last half since the index was built: those ids have no label.
    searcher = Searcher(InMemoryStore(labels[: N // 2], vectors[: N // 2]), index)
    hits = searcher.search(vectors[N - 1], 5)
    assert hits and all(m.id < N // 2 for m in hits)
    assert len(hits) < 5 or hits[0].id != N - 1


def test_quantised_and_graph_indexes_are_not_exact() -> None:
    assert FlatIndex.exact is True
    assert IVFIndex.exact is False


def test_rerankers_and_explain_keep_the_two_stage_path(table) -> None:  # type: ignore[no-untyped-def]
    labels, vectors = table
    store = CountingStore(labels, vectors)
    index = FlatIndex(DIM)
    index.add(np.arange(N, dtype=np.int64), vectors)
    explained = Searcher(store, index, explain=True).search(vectors[3], 3)
    assert explained[0].id == 3 and dict(explained[0].explain)["exact_rank"] == 1
    assert store.vector_reads == 1
