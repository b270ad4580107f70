"""Helpers shared by the evaluations: texts as a searchable collection, stored image vectors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.arrays import Matrix
from clipsearch.errors import QueryError
from clipsearch.search.ensemble import Ensemble, Searchable
from clipsearch.search.rerank import Reranker
from clipsearch.search.searcher import InMemoryStore, Searcher
from clipsearch.storage.vector_index import FlatIndex, HNSWIndex, IdIndex, fill_from_db

if TYPE_CHECKING:
    from clipsearch.adapters.space import SearchSpace
    from clipsearch.facts import IndexSummary


#: With `ann` or re-rankers, retrieval stops at this depth: both answer top-k questions, so
#: only Recall@K and precision@K (K <= 10) are measured; median rank and mAP are left out.
TOP_DEPTH = 10


class Evaluated(Searchable, Protocol):
    """What an evaluation needs of the index it measures (an `Index`)."""

    def add(self, paths: Iterable[str | os.PathLike[str]]) -> IndexSummary: ...

    def image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]: ...

    def vector_index(self) -> IdIndex: ...

    def space(self) -> SearchSpace: ...


def text_searcher(
    labels: Sequence[str], vectors: Matrix, ann: bool = False, rerankers: Sequence[Reranker] = ()
) -> Searcher:
    """Texts searched the way images are: FAISS candidates, then exact rescoring."""
    index = HNSWIndex(vectors.shape[1]) if ann else FlatIndex(vectors.shape[1])
    index.add(np.arange(len(labels), dtype=np.int64), vectors)
    return Searcher(InMemoryStore(labels, vectors), index, rerankers=rerankers)


def image_searcher(
    index: Evaluated, ann: bool = False, rerankers: Sequence[Reranker] = ()
) -> Searcher:
    """The index's own two-stage searcher, or one whose candidates come from HNSW; with
    re-rankers after the exact rescoring."""
    space = index.space()
    store = space.image_store(index.db)
    if not ann:
        return Searcher(store, index.vector_index(), rerankers=rerankers)
    graph = HNSWIndex(space.dim)
    fill_from_db(graph, store)
    return Searcher(store, graph, rerankers=rerankers)


def image_ids(index: Evaluated, paths: Sequence[str]) -> list[int]:
    """Row ids of these image paths; a clear error naming the ones that are not indexed."""
    by_path = index.db.ids_by_path()
    missing = [p for p in paths if p not in by_path]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise QueryError(f"{len(missing)} evaluation images are not in the index: {shown}")
    return [by_path[p] for p in paths]


def rank_images(
    index: Evaluated,
    texts: Sequence[str],
    depth: int,
    ann: bool = False,
    rerankers: Sequence[Reranker] = (),
    ensemble: Ensemble | None = None,
    vectors: Matrix | None = None,
) -> list[list[int]]:
    """Image ids ranked for each text query, through the index's searcher or an ensemble
    (whose first member must be `index`); `vectors`: the texts already encoded by `index`."""
    if ensemble is None:
        queries = vectors if vectors is not None else index.encode_texts(texts)
        hits = image_searcher(index, ann, rerankers).search_many(queries, depth)
        return [[h.id for h in row] for row in hits]
    if ensemble.members[0].index is not index:
        raise QueryError("the ensemble's first member must be the index being evaluated")
    per_member = [
        vectors if vectors is not None and m.index is index else m.index.encode_texts(texts)
        for m in ensemble.members
    ]
    return [[h.id for h in row] for row in ensemble.search_vectors(per_member, depth)]
