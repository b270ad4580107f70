"""One search, as every face asks for it: the CLI's options, the HTTP API's parameters and
body, and the Python keywords each only fill in a `SearchRequest`, and the index runs it
(`Index.find`). A field added here is offered by all three, or a test
(tests/test_search_request.py) says which face lacks it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clipsearch.errors import QueryError
from clipsearch.search.ensemble import Fusion, parse_fusion
from clipsearch.search.filters import Filter
from clipsearch.search.hybrid import Mode, parse_mode
from clipsearch.search.query import DEFAULT_NEGATIVE_WEIGHT, Query
from clipsearch.search.relevance import MinRelevance, parse_min_relevance
from clipsearch.search.rerank import MMR, CollapseNearDuplicates, Reranker
from clipsearch.search.sorting import Sort, parse_sort


@dataclass(frozen=True)
class SearchRequest:
    """What to find (`query`: texts, example images, indexed items, with weights, and what
    to avoid), which page of it, among what (`filters`), how ranked and cut."""

    query: Query
    k: int = 10
    offset: int = 0
    filters: Filter | None = None
    #: hybrid (words and meaning), semantic, or keyword; see `clipsearch.search.hybrid`
    mode: Mode = "hybrid"
    #: "auto", "off", or a calibrated relevance from 0 to 1; see `search.relevance`
    min_relevance: MinRelevance = "off"
    #: relevance, or date (taken, newest first) among the hits kept
    sort: Sort = "relevance"
    #: MMR's diversity weight, 0 to 1 (0.3 is a good start): fewer look-alikes on top
    diverse: float | None = None
    #: drop hits whose cosine to a better one is at least this (e.g. 0.95)
    collapse: float | None = None
    #: other indexes of the same photos (folders or URLs, other models) to fuse with
    ensemble: tuple[str, ...] = ()
    #: the weight of each `ensemble` index against this one's 1.0
    ensemble_weight: float = 1.0
    #: how the ensemble's rankings are fused: score or rrf
    fusion: Fusion = "score"
    #: each hit's rank at every stage of the pipeline
    explain: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise QueryError(f"k must be at least 1, got {self.k}")
        if self.offset < 0:
            raise QueryError(f"offset must be 0 or more, got {self.offset}")
        set_ = object.__setattr__  # frozen: the checked, parsed values replace the given
        set_(self, "mode", parse_mode(self.mode))
        set_(self, "min_relevance", parse_min_relevance(self.min_relevance))
        set_(self, "sort", parse_sort(self.sort))
        set_(self, "ensemble", tuple(str(e) for e in self.ensemble))
        set_(self, "fusion", parse_fusion(self.fusion))
        if not (math.isfinite(self.ensemble_weight) and self.ensemble_weight > 0):
            raise QueryError(f"ensemble_weight must be positive, got {self.ensemble_weight}")
        self.rerankers()  # their own checks (diverse and collapse in range)
        if self.ensemble:
            self._check_ensemble()

    def _check_ensemble(self) -> None:
        """An ensemble fuses the models' rankings of the images (semantic): what works on
        one index's list or scores is refused rather than quietly left out."""
        if self.min_relevance != "off":
            raise QueryError("min_relevance applies to one index's scores, not to an ensemble")
        if self.mode == "keyword":
            raise QueryError("an ensemble fuses the models' rankings; keyword mode has none")
        if self.rerankers() or self.sort != "relevance":
            raise QueryError(
                "diverse, collapse and sort=date work on one index's list, not on an ensemble's"
            )

    @classmethod
    def of(
        cls,
        text: str | None = None,
        image: str | Any | None = None,
        *,
        like: Iterable[str | Any] = (),
        unlike: Iterable[str | Any] = (),
        not_text: Iterable[str] = (),
        image_weight: float = 1.0,
        negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
        **rest: Any,
    ) -> SearchRequest:
        """A request from the usual query shapes (`Query.of`) and the other fields."""
        query = Query.of(
            text=text, image=image, image_weight=image_weight, like=like, unlike=unlike,
            not_text=not_text, negative_weight=negative_weight,
        )  # fmt: skip
        return cls(query=query, **rest)

    def rerankers(self) -> list[Reranker]:
        """The stages after exact rescoring this request asks for, in their order."""
        stages: list[Reranker] = []
        if self.collapse is not None:
            stages.append(CollapseNearDuplicates(self.collapse))
        if self.diverse is not None:
            stages.append(MMR(self.diverse))
        return stages

    def but(self, **changes: Any) -> SearchRequest:
        return dataclasses.replace(self, **changes)
