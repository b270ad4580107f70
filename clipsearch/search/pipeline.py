"""A search over an index, end to end: the model's ranking (exact rescoring, re-rankers,
one hit per video), the keyword ranking fused with it (`hybrid`), videos' best moments, the
calibrated relevance cut and the date sort. `Index.search_judged` and `Index.search_vectors`
are these functions over the index."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from clipsearch.adapters.space import SearchSpace
from clipsearch.search import hybrid
from clipsearch.search.filters import Filter
from clipsearch.search.judge import Judged, RelevanceJudge
from clipsearch.search.moments import find_moments
from clipsearch.search.query import Query
from clipsearch.search.relevance import MinRelevance
from clipsearch.search.rerank import Reranker
from clipsearch.search.searcher import Hit, Searcher
from clipsearch.search.sorting import Sort, dated, ordered
from clipsearch.storage.db import Database
from clipsearch.storage.faiss_index import VectorIndex
from clipsearch.storage.frames import ImageVectors, frame_keys_of, frames_of
from clipsearch.storage.vectors import VectorTable

Vector = np.ndarray[Any, Any]


class SearchHost(hybrid.HybridHost, Protocol):
    """What a search needs of an index (an `Index`) beyond what hybrid search needs."""

    db: Database
    searchable: ImageVectors

    @property
    def relevance(self) -> RelevanceJudge: ...

    def space(self) -> SearchSpace: ...

    def searched_vectors(self, space: SearchSpace | None = None) -> VectorIndex: ...


def judged_search(
    host: SearchHost,
    asked: Query,
    *,
    k: int,
    filters: Filter | None,
    rerankers: Sequence[Reranker],
    explain: bool,
    rule: MinRelevance,
    mode: hybrid.Mode,
    order: Sort,
) -> Judged:
    """The best k hits for a query (arguments already checked), judged and sorted."""
    if mode != "keyword":
        host.searched_vectors()  # an empty index fails here, before a model is loaded
    found = hybrid.search(host, asked, mode, k, filters, rerankers, explain)
    if mode != "keyword" and host.searchable.frame_count() > 0:
        # videos the words found that the model's list did not: their moments too
        hits = with_moments(
            host, found.hits, lambda: host.embed_query(query=hybrid.without_quotes(asked))
        )
        found = dataclasses.replace(found, hits=hits)
    coverage = {i: h.coverage for i, h in found.keyword.items()}
    judged = host.relevance.judge(asked, found.hits, rule, coverage, mode != "keyword")
    hits = dated(judged.hits, host.db.dates_for([h.id for h in judged.hits]))
    return dataclasses.replace(judged, hits=ordered(hits, order))


def vector_search(
    host: SearchHost,
    queries: Vector,
    k: int,
    filters: Filter | None,
    rerankers: Sequence[Reranker],
    explain: bool,
    allowed: Vector | None,
) -> list[list[Hit]]:
    """The model's ranking for a batch of unit query vectors (see `Index.search_vectors`)."""
    space = host.space()  # read once per search: every read is a query
    store = space.image_store(host.searchable)
    vectors = host.searched_vectors(space)
    videos = host.searchable.frame_count() > 0
    owners = host.searchable.owners if videos else None
    searcher = Searcher(store, vectors, rerankers=rerankers, explain=explain, owners=owners)
    matching = host.filter_ids(filters)
    if matching is not None and allowed is not None:
        allowed = np.intersect1d(matching, allowed)
    elif matching is not None:
        allowed = matching
    if videos and allowed is not None:  # a video passes a filter with its keyframes
        allowed = np.union1d(allowed, frame_keys_of(host.db, allowed.tolist()))
    queries = np.asarray(queries, dtype=np.float32)
    matches = searcher.search_many(queries, k, allowed)
    adapter = space.adapter_label
    hits = [
        [Hit(m.id, m.label, m.score, dict(m.explain) if explain else None, adapter) for m in row]
        for row in matches
    ]
    if videos:
        hits = [with_moments(host, row, q, store) for row, q in zip(hits, queries, strict=True)]
    return hits


def with_moments(
    host: SearchHost,
    hits: list[Hit],
    query: Vector | Callable[[], Vector],
    store: VectorTable | None = None,
) -> list[Hit]:
    """The hits, each video among them that has no moment yet with its best moment for the
    query (its vector, or a call that makes it: made only when there is such a video)."""
    found = frames_of(host.db, [h.id for h in hits if h.time is None])
    if not found:
        return hits
    store = store or host.image_table()
    moments = find_moments(query() if callable(query) else query, found, store)
    return [
        h.but(time=moments[h.id].time, span=moments[h.id].span) if h.id in moments else h
        for h in hits
    ]
