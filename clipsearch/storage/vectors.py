"""The one vector-table protocol: what a vector backend is built from and what exact
rescoring reads. The images and texts tables implement it, an adapter's view of either does,
and so does an in-memory collection (`search.searcher.InMemoryStore`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from clipsearch.arrays import IdArray, Matrix


class VectorTable(Protocol):
    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Matrix]:
        """The rows that exist among `ids`, as (ids, labels, float32 matrix), in any order."""
        ...

    def labels_for(self, ids: Sequence[int]) -> tuple[list[int], list[str]]:
        """The rows that exist among `ids`, as (ids, labels), in any order; what a search
        reads when its vector index scores exactly (no vectors fetched)."""
        ...

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Matrix]]:
        """Every (ids, vectors) in id order, `chunk` rows at a time."""
        ...

    def generation(self) -> int:
        """A counter every write to the table advances (the stamp of a cache built from it)."""
        ...

    def count(self) -> int: ...
