"""Two-stage search: ANN candidates from the vector index, then exact rescoring.

The vector index may be approximate (quantised, a graph); the final order is always the
exact cosine on the stored vectors, so ANN error can drop a far candidate but never
reorders the top-k. Many queries at once go through FAISS's batched search and one fetch of
the candidates' vectors. A vector index that declares its scores exact (`exact`, a flat
float32 index) skips the second stage: its top k are the answer, and only their labels are
read (re-rankers and `explain` still take the two-stage path, as they need the vectors).

With `owners`, several vectors can belong to one item (a video's keyframes, under keys of
their own, and the video's own row): each item then counts once, by its best-scoring
vector, before re-rankers see the list, and the candidate pass goes deeper until k items
(not k vectors) are found or the index has nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from clipsearch.arrays import IdArray, Matrix
from clipsearch.search.rerank import Reranker
from clipsearch.storage.vector_index import VectorIndex
from clipsearch.storage.vectors import VectorTable

DEFAULT_OVERSAMPLE = 4
#: A filter that leaves at most this many items is ranked by exact scoring of all of them
#: (cheap, and exact whatever the index type); larger ones go through FAISS's id selector.
EXACT_FILTER_LIMIT = 4096
#: Maps vector ids to the id of the item each belongs to (missing ids are their own item).
Owners = Callable[[Sequence[int]], dict[int, int]]


@dataclass(frozen=True)
class Hit:
    """One image or video found by a search."""

    id: int
    path: str
    score: float
    #: With `explain`: the hit's rank at each stage (candidate, exact, then each re-ranker).
    explain: dict[str, float] | None = None
    #: The adapter the search ran through (`clipsearch adapters list`), if one was active.
    adapter: str | None = None
    #: The calibrated relevance (0-1, 0.5 at the "good match" bar; see `search.relevance`),
    #: when the search asked for a relevance cut-off.
    relevance: float | None = None
    #: The BM25 score of the image's words, when they matched the query (hybrid, keyword).
    keyword_score: float | None = None
    #: When the photo was taken (EXIF, ISO 8601), filled in by `Index.search`.
    taken_at: str | None = None
    #: For a video: the moment that matches best (seconds from its start) ...
    time: float | None = None
    #: ... and the span (start, end, in seconds) of the keyframes around it that match too.
    span: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (written out by hand: `dataclasses.asdict` deep-copies,
        and cost a server as much as the search itself for 20 hits)."""
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.explain is not None:
            out["explain"] = dict(self.explain)
        if self.span is not None:
            out["span"] = list(self.span)
        return out

    def but(self, **changes: Any) -> Hit:
        """This hit with some fields changed (`dataclasses.replace` without its checks:
        a search replaces fields of every hit several times)."""
        new = object.__new__(Hit)
        new.__dict__.update(self.__dict__, **changes)
        return new


class Match(NamedTuple):
    """A stored item (image or text) and its exact score for one query."""

    id: int
    label: str
    score: float
    explain: tuple[tuple[str, float], ...] = ()


class InMemoryStore:
    """A fixed collection of labelled vectors whose ids are their positions (a
    `VectorTable` that never changes)."""

    def __init__(self, labels: Sequence[str], vectors: Matrix) -> None:
        self.labels = list(labels)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Matrix]:
        found = [i for i in ids if 0 <= i < len(self.labels)]
        return found, [self.labels[i] for i in found], self.vectors[found]

    def labels_for(self, ids: Sequence[int]) -> tuple[list[int], list[str]]:
        found = [i for i in ids if 0 <= i < len(self.labels)]
        return found, [self.labels[i] for i in found]

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Matrix]]:
        for start in range(0, len(self.labels), chunk):
            end = min(start + chunk, len(self.labels))
            yield np.arange(start, end, dtype=np.int64), self.vectors[start:end]

    def generation(self) -> int:
        return 0

    def count(self) -> int:
        return len(self.labels)


def positions_of(found: Sequence[int], wanted: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """For each id in `wanted`, its position in `found` (ids as a store returned them, in any
    order), or -1 where the store did not return it."""
    found_ids = np.asarray(found, dtype=np.int64)
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(found_ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(found_ids)
    sorted_ids = found_ids[order]
    at = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return np.where(sorted_ids[at] == wanted, order[at], -1)


def rank_exact(
    query: np.ndarray[Any, Any],
    ids: Sequence[int],
    labels: Sequence[str],
    vectors: Matrix,
    k: int,
    rerankers: Sequence[Reranker] = (),
    explain: bool = False,
) -> list[Match]:
    """The k best of the given rows by exact inner product (ties broken by id), then each
    re-ranker in turn over that list. Rows come in candidate order, so with `explain` each
    match carries its 1-based rank as a candidate, after exact rescoring and after each
    re-ranker."""
    if len(ids) == 0:
        return []
    scores = vectors @ query.astype(np.float32)
    order = np.lexsort((np.asarray(ids), -scores))
    stages = [("exact_rank", order)]
    if not rerankers:
        order = order[:k]
    for reranker in rerankers:
        keep = reranker.rerank(query, scores[order].tolist(), vectors[order], k)
        order = order[keep]
        stages.append((f"{type(reranker).__name__}_rank", order))
    final = order[:k]
    notes: dict[int, list[tuple[str, float]]] = {int(i): [] for i in final}
    if explain:
        for i in final:
            notes[int(i)].append(("candidate_rank", float(i + 1)))
        for name, ranked in stages:
            for position, i in enumerate(ranked):
                if int(i) in notes:
                    notes[int(i)].append((name, float(position + 1)))
    return [Match(int(ids[i]), labels[i], float(scores[i]), tuple(notes[int(i)])) for i in final]


def best_per_owner(
    rows: np.ndarray[Any, Any],
    ids: Sequence[int],
    scores: np.ndarray[Any, Any],
    owner_of: dict[int, int],
) -> np.ndarray[Any, Any]:
    """Of candidate `rows` (with their ids and scores), the best-scoring one per owner, in
    candidate order."""
    best: dict[int, int] = {}
    for n, i in enumerate(ids):
        owner = owner_of.get(i, i)
        if owner not in best or scores[n] > scores[best[owner]]:
            best[owner] = n
    return rows[sorted(best.values())]


class Searcher:
    def __init__(
        self,
        store: VectorTable,
        index: VectorIndex,
        oversample: int = DEFAULT_OVERSAMPLE,
        rerankers: Sequence[Reranker] = (),
        explain: bool = False,
        owners: Owners | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.oversample = oversample
        self.rerankers = tuple(rerankers)
        self.explain = explain
        self.owners = owners

    def search(
        self, query: np.ndarray[Any, Any], k: int, allowed: np.ndarray[Any, Any] | None = None
    ) -> list[Match]:
        """`query`: one unit vector (dim,). Up to k matches, best first."""
        return self.search_many(query[None, :], k, allowed)[0]

    def search_many(
        self, queries: np.ndarray[Any, Any], k: int, allowed: np.ndarray[Any, Any] | None = None
    ) -> list[list[Match]]:
        """(Q, dim) unit vectors -> for each, up to k matches, best first.

        `allowed`: only these ids may be returned (a metadata filter); k hits still come
        back whenever at least k of them exist.
        """
        if allowed is not None and len(allowed) == 0:
            return [[] for _ in range(len(queries))]
        if self.index.exact and not (self.rerankers or self.explain):
            return self._search_exact_index(queries, k, allowed)
        if allowed is not None and len(allowed) <= EXACT_FILTER_LIMIT:
            candidates = np.broadcast_to(
                np.asarray(allowed, dtype=np.int64), (len(queries), len(allowed))
            )
            owner_of = self.owners(np.asarray(allowed).tolist()) if self.owners else None
        else:
            _, candidates, owner_of = self._deep_enough(queries, k, k * self.oversample, allowed)
        wanted = np.unique(candidates[candidates >= 0])
        ids, labels, vectors = self.store.vectors_for(wanted.tolist())
        if not ids:
            return [[] for _ in range(len(queries))]
        results = []
        for query, row in zip(queries, candidates, strict=True):
            rows = positions_of(ids, row[row >= 0])
            rows = rows[rows >= 0]
            if owner_of is not None:
                rows = best_per_owner(rows, [ids[r] for r in rows], vectors[rows] @ query, owner_of)
            row_ids = [ids[r] if owner_of is None else owner_of.get(ids[r], ids[r]) for r in rows]
            row_labels = [labels[r] for r in rows]
            results.append(
                rank_exact(
                    query, row_ids, row_labels, vectors[rows], k, self.rerankers, self.explain
                )
            )
        return results

    def _deep_enough(
        self, queries: np.ndarray[Any, Any], k: int, depth: int, allowed: Any
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], dict[int, int] | None]:
        """The index's top `depth` per query, deepened (x4 at a time) while some query's
        full list holds fewer than k distinct items; with the owners of what it found
        (None without `owners`)."""
        while True:
            scores, found = self.index.search(queries, depth, allowed)
            if self.owners is None:
                return scores, found, None
            owner_of = self.owners(np.unique(found[found >= 0]).tolist())
            short = any(
                (row >= 0).sum() >= depth
                and len({owner_of.get(int(i), int(i)) for i in row[row >= 0]}) < k
                for row in found
            )
            if not short:
                return scores, found, owner_of
            depth *= 4

    def _search_exact_index(
        self, queries: np.ndarray[Any, Any], k: int, allowed: np.ndarray[Any, Any] | None
    ) -> list[list[Match]]:
        """The index's own top k, its scores taken as they are; rows deleted since it was
        built (no label any more) are dropped, ties put in id order as `rank_exact` does."""
        depth = k if self.owners is None else k * self.oversample
        scores, candidates, owners = self._deep_enough(queries, k, depth, allowed)
        found, labels = self.store.labels_for(np.unique(candidates[candidates >= 0]).tolist())
        label_of = dict(zip(found, labels, strict=True))
        owner_of = owners or {}
        results = []
        for row_scores, row_ids in zip(scores, candidates, strict=True):
            best: dict[int, tuple[float, int]] = {}
            for score, i in zip(row_scores, row_ids, strict=True):
                if i >= 0 and int(i) in label_of:
                    item, ranked = owner_of.get(int(i), int(i)), (-float(score), int(i))
                    if item not in best or ranked < best[item]:
                        best[item] = ranked
            hits = sorted((neg, item, i) for item, (neg, i) in best.items())[:k]
            results.append([Match(item, label_of[i], -neg) for neg, item, i in hits])
        return results
