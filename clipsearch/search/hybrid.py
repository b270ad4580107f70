"""Hybrid search: the keyword index's ranking and the semantic ranking, fused.

For a text query, `hybrid` (the default) ranks the collection twice: by the model (exact
cosine, as `semantic` does) and by the words the index holds about each image (`keyword`:
BM25 over file and folder names, captions and sidecars, XMP keywords, tags, camera, text in
the photo). Each list goes `DEPTH_PER_HIT` x k deep (at least `MIN_DEPTH`), and the lists are
fused by reciprocal rank (RRF): an image's fused score is

    Σ_lists  w_list / (RRF_K + rank in that list)

with RRF_K = 60 and equal weights (1.0 each), the usual choice: rank fusion needs no common
scale between BM25 and cosines. A keyword hit must hold at least half of the query's words
and phrases (`MIN_COVERAGE`), so one common word alone does not push a photo up; words that
more than half of the images hold (`COMMON_SHARE`) count for nothing. With no
keyword hit the fused order is the semantic order. "Quoted phrases" must match as phrases:
a keyword hit must hold every phrase of the query, words in that order (so in `keyword`
mode only such images come back; in `hybrid` they come first, and the model's ranking
fills the rest). Image queries have no words: `hybrid` is `semantic` for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.search.keywords import KeywordQuery
from clipsearch.search.query import Query
from clipsearch.search.rerank import Reranker
from clipsearch.search.searcher import Hit
from clipsearch.storage.keyword_index import KeywordIndex
from clipsearch.storage.vectors import VectorTable

Mode = Literal["hybrid", "semantic", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "keyword")
RRF_K = 60
SEMANTIC_WEIGHT = 1.0
KEYWORD_WEIGHT = 1.0
MIN_COVERAGE = 0.5
#: A word or phrase held by more than this share of the images counts for no coverage.
COMMON_SHARE = 0.5
DEPTH_PER_HIT = 4
MIN_DEPTH = 40


class HybridHost(Protocol):
    """What hybrid search needs of an index (an `Index`)."""

    def keyword_index(self) -> KeywordIndex: ...

    def filter_ids(self, filters: Any) -> np.ndarray[Any, Any] | None: ...

    def image_table(self) -> VectorTable: ...

    def embed_query(self, *, query: Query) -> np.ndarray[Any, Any]: ...

    def search_vectors(
        self,
        queries: np.ndarray[Any, Any],
        k: int = 10,
        filters: Any = None,
        rerankers: Sequence[Reranker] = (),
        explain: bool = False,
        allowed: np.ndarray[Any, Any] | None = None,
    ) -> list[list[Hit]]: ...


@dataclass(frozen=True)
class KeywordHit:
    id: int
    bm25: float  # higher is better
    coverage: float  # the share of the query's words and phrases the image's words hold


def parse_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise QueryError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def query_words(query: Query) -> KeywordQuery:
    """The words of a query's positive text parts."""
    text = " ".join(str(p.value) for p in query.positive if p.kind == "text")
    return KeywordQuery.parse(text)


def without_quotes(query: Query) -> Query:
    """The query the model reads: its texts without quote marks."""
    positive = tuple(
        replace(p, value=" ".join(str(p.value).replace('"', " ").split()) or str(p.value))
        if p.kind == "text"
        else p
        for p in query.positive
    )
    return Query(positive, query.negative)


def keyword_hits(
    index: KeywordIndex, words: KeywordQuery, limit: int, allowed: np.ndarray[Any, Any] | None
) -> list[KeywordHit]:
    """The best `limit` images by BM25 that hold at least `MIN_COVERAGE` of the words."""
    if words.empty:
        return []
    found = index.search(words.terms, words.phrases, limit, allowed)
    ids = [i for i, _ in found]
    held: Counter[int] = Counter()
    informative = 0
    documents = index.size()
    for part in words.parts:
        matches = index.document_frequency(part)
        if matches == 0 or matches > COMMON_SHARE * documents:
            continue  # a word most images hold ("photos" in every path) tells none apart
        informative += 1
        held.update(index.matching(part, ids))
    if informative == 0:
        return []
    hits = [KeywordHit(i, score, held[i] / informative) for i, score in found]
    return [h for h in hits if h.coverage >= MIN_COVERAGE]


def rrf(semantic: Sequence[int], keyword: Sequence[int]) -> list[int]:
    """Ids by fused reciprocal-rank score, best first (ties: semantic rank, then keyword)."""
    score: dict[int, float] = {}
    first: dict[int, tuple[int, int]] = {}
    never = len(semantic) + len(keyword) + 1
    for rank, i in enumerate(semantic, 1):
        score[i] = score.get(i, 0.0) + SEMANTIC_WEIGHT / (RRF_K + rank)
        first[i] = (rank, never)
    for rank, i in enumerate(keyword, 1):
        score[i] = score.get(i, 0.0) + KEYWORD_WEIGHT / (RRF_K + rank)
        first[i] = (first.get(i, (never, never))[0], rank)
    return sorted(score, key=lambda i: (-score[i], *first[i], i))


@dataclass(frozen=True)
class Found:
    """A search's hits and, for the images that matched by words, their keyword hit."""

    hits: list[Hit]
    keyword: dict[int, KeywordHit]


def search(
    host: HybridHost,
    query: Query,
    mode: Mode,
    k: int,
    filters: Any = None,
    rerankers: Sequence[Reranker] = (),
    explain: bool = False,
) -> Found:
    words = query_words(query)
    if words.empty and mode == "keyword":
        raise QueryError("a keyword search needs words; give a text query")
    allowed = host.filter_ids(filters)
    depth = max(MIN_DEPTH, DEPTH_PER_HIT * k)
    keyword: list[KeywordHit] = []
    if mode != "semantic" and not words.empty:
        keyword = keyword_hits(
            host.keyword_index(), words, depth if mode == "hybrid" else k, allowed
        )
    if mode == "keyword":
        return Found(_keyword_only(host, keyword[:k]), {h.id: h for h in keyword[:k]})

    vector = host.embed_query(query=without_quotes(query))
    semantic = host.search_vectors(
        vector[None, :], depth if keyword else k, None, rerankers, explain, allowed
    )[0]
    if not keyword:
        return Found(semantic[:k], {})
    by_id = {h.id: h for h in semantic}
    fused = rrf([h.id for h in semantic], [h.id for h in keyword])[:k]
    missing = [i for i in fused if i not in by_id]
    if missing:
        found, labels, vectors = host.image_table().vectors_for(missing)
        scores = np.asarray(vectors, dtype=np.float32) @ vector
        adapter = semantic[0].adapter if semantic else None
        for i, label, score in zip(found, labels, scores, strict=True):
            by_id[i] = Hit(int(i), label, float(score), adapter=adapter)
    matched = {h.id: h for h in keyword}
    hits = [_with_keyword(by_id[i], matched.get(i)) for i in fused if i in by_id]
    return Found(hits, {i: matched[i] for i in fused if i in matched})


def _with_keyword(hit: Hit, keyword: KeywordHit | None) -> Hit:
    return hit if keyword is None else replace(hit, keyword_score=round(keyword.bm25, 4))


def _keyword_only(host: HybridHost, keyword: list[KeywordHit]) -> list[Hit]:
    """Keyword-mode hits: their score is the BM25 score (no model is loaded)."""
    found, labels = host.image_table().labels_for([h.id for h in keyword])
    label_of = dict(zip(found, labels, strict=True))
    return [
        Hit(h.id, label_of[h.id], round(h.bm25, 4), keyword_score=round(h.bm25, 4))
        for h in keyword
        if h.id in label_of
    ]
