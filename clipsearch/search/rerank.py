"""Re-rankers: stages after exact rescoring that reorder or thin the candidate list.

Each is a one-method protocol implementation: given the query, the candidates (best first,
with exact scores) and their vectors, return the positions to keep, in the new order. A stage
keeps every candidate it does not mean to drop (the searcher cuts to k after the last
stage), so stages compose: each later one still has the whole list to choose from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from clipsearch.arrays import Matrix
from clipsearch.errors import QueryError


class Reranker(Protocol):
    def rerank(self, query: Matrix, scores: Sequence[float], vectors: Matrix, k: int) -> list[int]:
        """Positions into the candidate list (sorted best first), in the new order; `k` is how
        many the caller will show, for stages whose choices depend on it."""
        ...


@dataclass(frozen=True)
class MMR:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998): pick, one at a time, the
    candidate maximising  λ·score - (1-λ)·(its highest similarity to those already picked),
    so the top-k covers more than one look-alike cluster. λ = 1 is plain ranking."""

    diversity_weight: float = 0.3  # 1 - λ

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity_weight <= 1.0:
            raise QueryError("diversity must be between 0 and 1")

    def rerank(self, query: Matrix, scores: Sequence[float], vectors: Matrix, k: int) -> list[int]:
        relevance = np.asarray(scores, dtype=np.float64)
        picked: list[int] = []
        redundancy = np.full(len(relevance), -np.inf)
        available = np.ones(len(relevance), dtype=bool)
        while available.any():
            penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
            value = (1 - self.diversity_weight) * relevance - self.diversity_weight * penalty
            value[~available] = -np.inf
            best = int(np.argmax(value))  # ties: the earlier, better-scored candidate
            picked.append(best)
            available[best] = False
            redundancy = np.maximum(redundancy, vectors @ vectors[best])
        return picked


@dataclass(frozen=True)
class CollapseNearDuplicates:
    """Keep the best of each group of near-identical images (burst shots, re-saved copies):
    a candidate whose cosine to an already kept one is at least `threshold` is dropped."""

    threshold: float = 0.95

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise QueryError("the duplicate threshold is a cosine, between -1 and 1")

    def rerank(self, query: Matrix, scores: Sequence[float], vectors: Matrix, k: int) -> list[int]:
        kept: list[int] = []
        for position in range(len(scores)):
            if kept and float(np.max(vectors[kept] @ vectors[position])) >= self.threshold:
                continue
            kept.append(position)
        return kept


class InvertedSoftmax:
    """Hubness correction for cross-modal queries (inverted softmax, Smith et al. 2017; the
    non-dynamic form of QB-Norm, Bogolin et al. 2022). Some images ("hubs") sit near many
    queries and crowd every top-k. With a bank of typical queries B (e.g. captions), each
    candidate g is rescored as  β·s(q, g) - log Σ_b exp(β·s(b, g)):  its similarity to this
    query, relative to how similar it is to queries in general."""

    def __init__(self, bank: Matrix, beta: float = 20.0) -> None:
        if len(bank) == 0:
            raise QueryError("the query bank for hubness correction is empty")
        if beta <= 0:
            raise QueryError("beta must be positive")
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.beta = beta

    def rerank(self, query: Matrix, scores: Sequence[float], vectors: Matrix, k: int) -> list[int]:
        logits = self.beta * (self.bank @ vectors.T).astype(np.float64)  # (bank, candidates)
        peak = logits.max(axis=0)
        log_norm = peak + np.log(np.exp(logits - peak).sum(axis=0))
        adjusted = self.beta * np.asarray(scores, dtype=np.float64) - log_norm
        return [int(i) for i in np.argsort(-adjusted, kind="stable")]
