"""Hybrid search: the keyword index's ranking and the semantic ranking, fused.

For a text query, `hybrid` (the default) ranks the collection twice: by the model (exact
cosine, as `semantic` does) and by the words the index holds about each image (`keyword`:
BM25 over file and folder names, captions and sidecars, XMP keywords, tags, camera, text in
the photo). Each list goes `DEPTH_PER_HIT` x k deep (at least `MIN_DEPTH`). A keyword hit
must hold at least half of the query's words and phrases (`MIN_COVERAGE`), so one common
word alone does not push a photo up; words that more than half of the images hold
(`COMMON_SHARE`) count for nothing. With no keyword hit the fused order is the semantic
order.

The fusion weighs evidence in the model's calibrated units (see `search.relevance`): an
image's fused score is

    z + KEYWORD_BONUS x share x coverage²

where z is its cosine over the model's null (how many null standard deviations above an
unrelated pair), `coverage` the share of the query's words its words hold, and `share` its
part of the keyword evidence: its keyword score to the power `SHARE_POWER` over the sum of
those of all keyword hits (scale-free, so FTS5's BM25 and PostgreSQL's ts_rank_cd weigh
alike). Words that single out one image (one keyword hit, or one far ahead of the rest)
lift it by up to `KEYWORD_BONUS` null deviations, above any semantic hit; words that many
images share split the bonus and barely reorder the model's ranking. This replaced
reciprocal-rank fusion (Σ 1/(60 + rank)), under which any keyword hit that also sat in the
model's list outranked the model's best image even when the words fit dozens of images
(measured in benchmarks/trust.py: RRF fell below keyword search at Recall@1 and below the
model on photos without words; the constants here were chosen on one half of the
validation photos and checked on the other).

"Quoted phrases" must match as phrases: a keyword hit must hold every phrase of the query,
words in that order (so in `keyword` mode only such images come back; in `hybrid` they come
first, and the model's ranking fills the rest). Image queries have no words: `hybrid` is
`semantic` for them.
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
from clipsearch.search.relevance import Null
from clipsearch.search.rerank import Reranker
from clipsearch.search.searcher import Hit
from clipsearch.storage.keyword_index import KeywordIndex
from clipsearch.storage.vectors import VectorTable

Mode = Literal["hybrid", "semantic", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "keyword")
#: The most a keyword hit is lifted, in null standard deviations of the model's scores.
KEYWORD_BONUS = 12.0
#: How sharply the keyword evidence goes to the hit that out-scores the others.
SHARE_POWER = 8
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

    def text_null(self) -> Null: ...

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


def evidence(keyword: Sequence[KeywordHit]) -> dict[int, float]:
    """Each keyword hit's weight: its share of the keyword evidence x its coverage²."""
    if not keyword:
        return {}
    scores = np.array([max(h.bm25, 0.0) for h in keyword], dtype=np.float64)
    top = scores.max()
    share = (scores / top) ** SHARE_POWER if top > 0 else np.ones_like(scores)
    share /= share.sum()
    return {h.id: float(s) * h.coverage**2 for h, s in zip(keyword, share, strict=True)}


def fuse(
    semantic: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float, float]]
) -> list[int]:
    """Ids best first by z + KEYWORD_BONUS x weight. `semantic`: (id, z) in the model's
    order (re-rankers included: the i-th image gets the i-th best z, so their order holds);
    `keyword`: (id, z, weight) in keyword order. Ties: semantic rank, then keyword rank."""
    best_z = sorted((z for _, z in semantic), reverse=True)
    score: dict[int, float] = {}
    first: dict[int, tuple[int, int]] = {}
    never = len(semantic) + len(keyword) + 1
    for rank, ((i, _), z) in enumerate(zip(semantic, best_z, strict=True), 1):
        score[i] = z
        first[i] = (rank, never)
    for rank, (i, z, weight) in enumerate(keyword, 1):
        score[i] = score.get(i, z) + KEYWORD_BONUS * weight
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
    missing = [h.id for h in keyword if h.id not in by_id]
    if missing:
        found, labels, vectors = host.image_table().vectors_for(missing)
        scores = np.asarray(vectors, dtype=np.float32) @ vector
        adapter = semantic[0].adapter if semantic else None
        for i, label, score in zip(found, labels, scores, strict=True):
            by_id[i] = Hit(int(i), label, float(score), adapter=adapter)
    scored = list(by_id.values())
    z = dict(zip(by_id, host.text_null().z(np.array([h.score for h in scored])).tolist(),
                 strict=True))  # fmt: skip
    weight = evidence(keyword)
    fused = fuse(
        [(h.id, z[h.id]) for h in semantic],
        [(h.id, z[h.id], weight[h.id]) for h in keyword if h.id in by_id],
    )[:k]
    matched = {h.id: h for h in keyword}
    hits = [_with_keyword(by_id[i], matched.get(i)) for i in fused]
    return Found(hits, {i: matched[i] for i in fused if i in matched})


def _with_keyword(hit: Hit, keyword: KeywordHit | None) -> Hit:
    return hit if keyword is None else hit.but(keyword_score=round(keyword.bm25, 4))


def _keyword_only(host: HybridHost, keyword: list[KeywordHit]) -> list[Hit]:
    """Keyword-mode hits: their score is the BM25 score (no model is loaded)."""
    found, labels = host.image_table().labels_for([h.id for h in keyword])
    label_of = dict(zip(found, labels, strict=True))
    return [
        Hit(h.id, label_of[h.id], round(h.bm25, 4), keyword_score=round(h.bm25, 4))
        for h in keyword
        if h.id in label_of
    ]
