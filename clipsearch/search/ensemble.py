"""Late fusion of several models: the same photos indexed by two (or more) models, searched by
each, their ranked lists fused into one.

Each member index embeds the query with its own model and returns its exactly rescored
candidates. Images are matched across members by path, and the first member's ids and paths
are the ones returned. Two fusions:

- `score`:  s(g) = Σ_m w_m · cos_m(q, g), with cos_m computed exactly from member m's stored
  vector for every candidate any member found (weights are relative; they are normalised).
- `rrf` (reciprocal-rank fusion, Cormack et al. 2009):  s(g) = Σ_m w_m / (60 + rank_m(g)),
  rank over member m's candidate list; a candidate a member did not return adds nothing.
  Rank-based, so models whose cosines live on different scales mix fairly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from clipsearch.arrays import Matrix
from clipsearch.errors import QueryError
from clipsearch.search.filters import Filter
from clipsearch.search.query import Query, QueryPart
from clipsearch.search.searcher import Hit

if TYPE_CHECKING:
    import os

    from clipsearch.search.rerank import Reranker
    from clipsearch.storage.db import Database
    from clipsearch.storage.vectors import VectorTable

Fusion = Literal["score", "rrf"]
RRF_K = 60


def parse_fusion(value: str) -> Fusion:
    if value not in ("score", "rrf"):
        raise QueryError(f"fusion must be 'score' or 'rrf', not {value!r}")
    return value  # type: ignore[return-value]  # checked just above


class Searchable(Protocol):
    """What an ensemble needs of each member (an `Index`): to embed a query in its own
    space, search there, and read its stored vectors by path."""

    db: Database

    def embed_query(
        self,
        text: str | None = None,
        image: str | os.PathLike[str] | None = None,
        *,
        query: Query | None = None,
    ) -> np.ndarray[Any, Any]: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]: ...

    def search_vectors(
        self,
        queries: np.ndarray[Any, Any],
        k: int = 10,
        filters: Filter | None = None,
        rerankers: Sequence[Reranker] = (),
        explain: bool = False,
    ) -> list[list[Hit]]: ...

    def image_table(self) -> VectorTable: ...


@dataclass(frozen=True)
class Member:
    index: Searchable
    weight: float = 1.0


class Ensemble:
    """Several indexes of the same photos, searched as one (see the module docstring)."""

    def __init__(
        self, members: Sequence[Member], fusion: Fusion = "score", depth_factor: int = 4
    ) -> None:
        if len(members) < 2:
            raise QueryError("an ensemble needs at least two indexes")
        if any(not np.isfinite(m.weight) or m.weight <= 0 for m in members):
            raise QueryError("ensemble weights must be positive numbers")
        self.members = list(members)
        self.fusion = parse_fusion(fusion)
        self.depth_factor = depth_factor
        total = sum(m.weight for m in members)
        self.weights = [m.weight / total for m in members]

    def search(
        self, query: Query, k: int = 10, filters: Filter | None = None, explain: bool = False
    ) -> list[Hit]:
        vectors = [
            m.index.embed_query(query=self._in_member(query, m.index))[None, :]
            for m in self.members
        ]
        return self.search_vectors(vectors, k, filters, explain)[0]

    def _in_member(self, query: Query, member: Searchable) -> Query:
        """`query` as `member` reads it: an indexed item (an id of the first member) becomes
        the member's own id for the same photo, or, where it lacks the photo, the file."""
        primary = self.members[0].index
        items = [int(p.value) for p in query.parts if p.kind == "item"]
        if member is primary or not items:
            return query
        found, paths = primary.db.labels_for(items)
        path_of = dict(zip(found, paths, strict=True))
        theirs = member.db.ids_for_paths(paths)

        def moved(part: QueryPart) -> QueryPart:
            if part.kind != "item" or int(part.value) not in path_of:
                return part  # an unknown id: the first member's embedding says so
            path = path_of[int(part.value)]
            if path in theirs:
                return QueryPart("item", theirs[path], part.weight)
            return QueryPart("image", path, part.weight)

        return Query(tuple(map(moved, query.positive)), tuple(map(moved, query.negative)))

    def search_vectors(
        self,
        queries: Sequence[Matrix],
        k: int = 10,
        filters: Filter | None = None,
        explain: bool = False,
    ) -> list[list[Hit]]:
        """`queries[m]`: the (Q, dim_m) query vectors in member m's space, same Q for all."""
        if len(queries) != len(self.members):
            raise QueryError("give one query matrix per ensemble member")
        depth = k * self.depth_factor
        member_hits = [
            m.index.search_vectors(q, depth, filters)
            for m, q in zip(self.members, queries, strict=True)
        ]
        paths = sorted({h.path for hits in member_hits for row in hits for h in row})
        lookups = [_PathLookup(m.index, paths) for m in self.members]
        out = []
        for q in range(len(queries[0])):
            rows = [hits[q] for hits in member_hits]
            out.append(self._fuse(q, queries, rows, lookups, k, explain))
        return out

    def _fuse(
        self,
        q: int,
        queries: Sequence[Matrix],
        rows: list[list[Hit]],
        lookups: list[_PathLookup],
        k: int,
        explain: bool,
    ) -> list[Hit]:
        candidates = list(dict.fromkeys(h.path for row in rows for h in row))
        primary = lookups[0]
        candidates = [p for p in candidates if p in primary.ids]
        if not candidates:
            return []
        fused = np.zeros(len(candidates))
        notes: list[dict[str, float]] = [{} for _ in candidates]
        for m, (row, lookup, weight) in enumerate(zip(rows, lookups, self.weights, strict=True)):
            rank = {h.path: r for r, h in enumerate(row, start=1)}
            if self.fusion == "rrf":
                part = np.array([1.0 / (RRF_K + rank[p]) if p in rank else 0.0 for p in candidates])
            else:
                floor = min((h.score for h in row), default=-1.0)  # -1: it found none
                part = lookup.scores(queries[m][q], candidates, floor=floor)
            fused += weight * part
            for note, p, value in zip(notes, candidates, part, strict=True):
                note[f"model{m + 1}_{self.fusion}"] = float(value)
                if p in rank:
                    note[f"model{m + 1}_rank"] = float(rank[p])
        order = sorted(
            range(len(candidates)), key=lambda i: (-fused[i], primary.ids[candidates[i]])
        )
        return [
            Hit(
                primary.ids[candidates[i]],
                candidates[i],
                float(fused[i]),
                notes[i] if explain else None,
            )
            for i in order[:k]
        ]


class _PathLookup:
    """One member's ids and stored vectors for the candidate paths of a batch of queries."""

    def __init__(self, index: Searchable, paths: Sequence[str]) -> None:
        self.ids = index.db.ids_for_paths(paths)
        _, found_paths, matrix = index.image_table().vectors_for(list(self.ids.values()))
        self.vectors = {p: matrix[i] for i, p in enumerate(found_paths)}

    def scores(self, query: Matrix, paths: Sequence[str], floor: float) -> np.ndarray[Any, Any]:
        """Exact cosines; a path this member does not hold gets `floor` (its worst candidate)."""
        return np.array(
            [float(self.vectors[p] @ query) if p in self.vectors else floor for p in paths]
        )
