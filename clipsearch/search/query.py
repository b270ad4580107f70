"""Queries made of several parts, fused early, in the embedding space.

A query is a set of positive and negative parts: texts, example images (files), or items
already in the index (by id). Each part is embedded and L2-normalised to `ẑ`; the query
vector is

    z = normalise( Σ_pos w_i · ẑ_i  -  Σ_neg v_j · ẑ_j )

so weights are relative (scaling all of them changes nothing), a negative part pushes the
query away from what it describes, and the result is again a unit vector searched like any
other. A query whose parts cancel out (say, the same text as positive and negative) is an
error rather than a random ranking.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.names import is_text, readable

PartKind = Literal["text", "image", "item"]
#: Default weight of a negative part ("--not"): strong enough to move the ranking, not so
#: strong that the query mostly means "anything but this".
DEFAULT_NEGATIVE_WEIGHT = 0.5
_CANCELLED = 1e-6


@dataclass(frozen=True)
class QueryPart:
    kind: PartKind
    value: str | int  # the text, the image path, or the indexed item's id
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind == "text" and "\x00" in str(self.value):
            # Searched without them, as the stores keep texts (`storage.dialect.without_nul`):
            # then the model and the query cache see the same words.
            object.__setattr__(self, "value", str(self.value).replace("\x00", ""))
        if not np.isfinite(self.weight) or self.weight <= 0:
            raise QueryError(
                f"weights must be positive numbers, got {self.weight} for {self.value!r}"
            )
        if self.kind == "text" and not str(self.value).strip():
            raise QueryError("a text part of the query is empty")
        if self.kind == "text" and not is_text(str(self.value)):
            raise QueryError(
                f'the query "{readable(str(self.value))}" is not valid UTF-8 text; '
                "pass the words in UTF-8"
            )


@dataclass(frozen=True)
class Query:
    positive: tuple[QueryPart, ...] = ()
    negative: tuple[QueryPart, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.positive:
            raise QueryError("give a text query, an image query, or both")

    @classmethod
    def of(
        cls,
        text: str | None = None,
        image: str | Any | None = None,
        *,
        image_weight: float = 1.0,
        like: Iterable[str | Any] = (),
        unlike: Iterable[str | Any] = (),
        not_text: Iterable[str] = (),
        negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
    ) -> Query:
        """The usual shapes: a text and/or an example image (weighted against the text),
        more examples to be like or unlike, and texts to avoid."""
        positive = []
        if text is not None:
            positive.append(QueryPart("text", text))
        if image is not None:
            positive.append(QueryPart("image", _file(image), image_weight))
        positive += [QueryPart("image", _file(p), image_weight) for p in like]
        negative = [QueryPart("text", t, negative_weight) for t in not_text]
        negative += [QueryPart("image", _file(p), negative_weight) for p in unlike]
        return cls(tuple(positive), tuple(negative))

    @property
    def parts(self) -> tuple[QueryPart, ...]:
        return self.positive + self.negative


def _file(path: str | Any) -> str:
    """An example image's path, `~` expanded as `clipsearch.open` and `Index.add` do."""
    return os.path.expanduser(str(path))


def fuse(
    positive: Sequence[tuple[np.ndarray[Any, Any], float]],
    negative: Sequence[tuple[np.ndarray[Any, Any], float]] = (),
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The unit query vector from (vector, weight) pairs; see the module docstring."""
    if not positive:
        raise QueryError("a query needs at least one positive part")
    total = np.zeros_like(np.asarray(positive[0][0], dtype=np.float64))
    for vector, weight in positive:
        total += weight * _unit(vector)
    for vector, weight in negative:
        total -= weight * _unit(vector)
    norm = float(np.linalg.norm(total))
    if norm < _CANCELLED:
        raise QueryError("the query's positive and negative parts cancel out")
    return np.asarray(total / norm, dtype=np.float32)


def _unit(vector: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    v = np.asarray(vector, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)
