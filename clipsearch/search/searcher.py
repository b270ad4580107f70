"""Two-stage search: ANN candidates from the vector index, then exact rescoring.

The vector index may be approximate (and later quantised); the final order is always the
exact cosine on the vectors stored in SQLite, so ANN error can drop a far candidate but never
reorders the top-k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clipsearch.storage.db import Database
from clipsearch.storage.vector_index import VectorIndex

DEFAULT_OVERSAMPLE = 4


@dataclass(frozen=True)
class Hit:
    id: int
    path: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_exact(
    query: np.ndarray[Any, Any],
    ids: list[int],
    paths: list[str],
    vectors: np.ndarray[Any, Any],
    k: int,
) -> list[Hit]:
    """The k best of the given rows by exact inner product; ties broken by id."""
    if not ids:
        return []
    scores = vectors @ query.astype(np.float32)
    order = np.lexsort((np.asarray(ids), -scores))[:k]
    return [Hit(id=ids[i], path=paths[i], score=float(scores[i])) for i in order]


class Searcher:
    def __init__(
        self, db: Database, index: VectorIndex, oversample: int = DEFAULT_OVERSAMPLE
    ) -> None:
        self.db = db
        self.index = index
        self.oversample = oversample

    def search(self, query: np.ndarray[Any, Any], k: int) -> list[Hit]:
        """`query`: one unit vector (dim,). Returns up to k hits, best first."""
        _, candidate_ids = self.index.search(query[None, :], k * self.oversample)
        candidates = [int(i) for i in candidate_ids[0] if i >= 0]
        ids, paths, vectors = self.db.vectors_for(candidates)
        return rank_exact(query, ids, paths, vectors, k)
