"""Relevance for one index: its calibration (measured once, cached beside its FAISS files)
applied to a search's hits. The arithmetic and the reasoning are in `search.relevance`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.indexer.text_sources import builtin_vocabulary, parse_vocabulary
from clipsearch.search import relevance as rel
from clipsearch.search.query import Query
from clipsearch.search.searcher import Hit

if TYPE_CHECKING:
    from clipsearch.adapters.space import SearchSpace
    from clipsearch.models import Encoder
    from clipsearch.storage.db import Database

NO_GOOD_MATCH = "no good match"
UNKNOWN_WORDS = "the model does not know most of the words of this query"


class JudgeHost(Protocol):
    """What relevance needs of an index (an `Index`)."""

    db: Database

    @property
    def cache_dir(self) -> Path: ...

    @property
    def encoder(self) -> Encoder: ...

    def space(self) -> SearchSpace: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]: ...

    def image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]: ...


@dataclass(frozen=True)
class Judged:
    """A ranked list after the relevance cut: the hits kept, how many weaker hits were cut,
    and why nothing was kept (None when something was)."""

    hits: list[Hit]
    weaker: int = 0
    note: str | None = None


class RelevanceJudge:
    def __init__(self, host: JudgeHost) -> None:
        self.host = host
        self._calibration: rel.Calibration | None = None
        self._measuring = threading.Lock()

    def calibration(self) -> rel.Calibration:
        """The index's calibration for its current space and size, measured if the cached
        one is missing or stale (a model call over the 512-prompt bank), by one thread: the
        others meanwhile use the stale one if there is one, else wait for it."""
        space = self.host.space()
        images = self.host.db.count()
        held = self._calibration
        if held is not None and held.fresh_for(space.identity, images):
            return held
        usable = held is not None and held.space == space.identity
        if usable and not self._measuring.acquire(blocking=False):
            assert held is not None
            return held  # another thread measures: go on with the last measure meanwhile
        if not usable:
            self._measuring.acquire()
        try:
            file = rel.CalibrationFile(self.host.cache_dir)
            for known in (self._calibration, file.load()):
                if known is not None and known.fresh_for(space.identity, images):
                    self._calibration = known
                    return known
            self._calibration = self._measure(space.identity, images)
            file.save(self._calibration)
            return self._calibration
        finally:
            self._measuring.release()

    def _measure(self, space: str, images: int) -> rel.Calibration:
        terms = parse_vocabulary(builtin_vocabulary().decode("utf-8"))
        bank = self.host.encode_texts(rel.bank_terms(terms))
        ids = rel.sample_ids(self.host.db.all_ids())
        return rel.measure(space, self.host.image_vectors(ids), bank, images)

    def judge(
        self,
        query: Query,
        hits: list[Hit],
        rule: rel.MinRelevance,
        keyword_coverage: dict[int, float] | None = None,
        semantic: bool = True,
    ) -> Judged:
        """The hits with their relevance, cut by `rule`; `off` measures nothing.
        `keyword_coverage`: for hits that matched by words, the share of the query's words
        their words hold: such a hit is a good match (relevance 0.75 to 1). `semantic`:
        False for keyword-mode hits, whose score is no cosine (only their words count)."""
        if rule == "off" or not hits:
            return Judged(hits)
        relevance = np.zeros(len(hits))
        note = None
        if semantic:
            null = self.calibration().null(_modality(query))
            relevance = null.relevance(np.array([h.score for h in hits]))
            if _modality(query) == "text" and self._unknown_words(query):
                relevance = np.zeros_like(relevance)
                note = f"{NO_GOOD_MATCH}: {UNKNOWN_WORDS}"
        for n, hit in enumerate(hits):
            coverage = (keyword_coverage or {}).get(hit.id)
            if coverage is not None:
                relevance[n] = max(relevance[n], rel.keyword_relevance(coverage))
        scored = [h.but(relevance=round(float(r), 4)) for h, r in zip(hits, relevance, strict=True)]
        kept = rel.cut([h.relevance or 0.0 for h in scored], rule)
        if kept == 0 and note is None:
            note = NO_GOOD_MATCH
        return Judged(scored[:kept], len(scored) - kept, note if kept == 0 else None)

    def _unknown_words(self, query: Query) -> bool:
        knows = getattr(self.host.encoder, "knows_word", None)
        if knows is None:
            return False
        texts = " ".join(str(p.value) for p in query.positive if p.kind == "text")
        return rel.known_share(texts, lambda w: bool(knows(w))) < rel.MIN_KNOWN_SHARE


def _modality(query: Query) -> rel.Modality:
    return "text" if any(p.kind == "text" for p in query.positive) else "image"
