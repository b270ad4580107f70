"""A vector table seen through an adapter: what FAISS is built from and what exact rescoring
reads when an adapter is active."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from clipsearch.arrays import IdArray, Matrix
from clipsearch.storage.vectors import VectorTable


class AdaptedStore:
    """`inner`'s rows with `transform` applied to every vector read."""

    def __init__(self, inner: VectorTable, transform: Callable[[Matrix], Matrix]) -> None:
        self.inner = inner
        self.transform = transform

    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Matrix]:
        found, labels, matrix = self.inner.vectors_for(ids)
        return found, labels, self.transform(matrix) if found else matrix

    def labels_for(self, ids: Sequence[int]) -> tuple[list[int], list[str]]:
        return self.inner.labels_for(ids)

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Matrix]]:
        for ids, vectors in self.inner.iter_vectors(chunk):
            yield ids, self.transform(vectors)

    def generation(self) -> int:
        return self.inner.generation()

    def count(self) -> int:
        return self.inner.count()
