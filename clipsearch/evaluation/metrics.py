"""Ranking metrics over ranked id lists. Ranks are 1-based; a relevant item never retrieved
has rank infinity (it counts as a miss for every Recall@k and sorts last for the median).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

Ranks = np.ndarray[Any, np.dtype[np.float64]]


def first_relevant_rank(
    ranked: Sequence[Sequence[int]], relevant: Sequence[Collection[int]]
) -> Ranks:
    """For each query, the rank of its best-placed relevant item."""
    out = np.full(len(ranked), np.inf)
    for q, (ids, wanted) in enumerate(zip(ranked, relevant, strict=True)):
        for position, item in enumerate(ids, start=1):
            if item in wanted:
                out[q] = position
                break
    return out


def recall_at(ranks: Ranks, k: int) -> float:
    """Share of queries with a relevant item in the top k."""
    return float(np.mean(ranks <= k)) if len(ranks) else 0.0


def median_rank(ranks: Ranks) -> float:
    return float(np.median(ranks)) if len(ranks) else float("nan")


def precision_at(ranked: Sequence[int], relevant: Collection[int], k: int) -> float:
    """Share of the top k that is relevant (missing positions count as not relevant)."""
    return sum(1 for item in ranked[:k] if item in relevant) / k


def average_precision(ranked: Sequence[int], relevant: Collection[int]) -> float:
    """Mean of precision@i over the positions i of relevant items, divided by all relevant."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            hits += 1
            total += hits / position
    return total / len(relevant)


def average_precision_at(ranked: Sequence[int], relevant: Collection[int], k: int) -> float:
    """AP over the top k only, divided by min(|relevant|, k): comparable between a full
    ranking and a re-ranked top-k list. With one relevant item it is 1/rank (0 beyond k)."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for position, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / position
    return total / min(len(relevant), k)
