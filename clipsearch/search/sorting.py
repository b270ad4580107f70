"""The order hits are shown in: by relevance (the search's own order), or by the date the
photo was taken, newest first, within the hits the relevance cut kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from clipsearch.errors import QueryError
from clipsearch.search.searcher import Hit

Sort = Literal["relevance", "date"]
SORTS: tuple[Sort, ...] = ("relevance", "date")


def parse_sort(sort: str) -> Sort:
    if sort not in SORTS:
        raise QueryError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    return sort


def dated(hits: list[Hit], taken_at: Mapping[int, str | None]) -> list[Hit]:
    """The hits with the date each photo was taken (EXIF), where it records one."""
    return [h.but(taken_at=taken_at.get(h.id)) for h in hits]


def ordered(hits: list[Hit], sort: Sort) -> list[Hit]:
    """`date`: newest first, photos without a date after the dated ones (each group in
    relevance order); `relevance`: as ranked."""
    if sort == "relevance":
        return hits
    with_date = sorted((h for h in hits if h.taken_at), key=lambda h: h.taken_at or "",
                       reverse=True)  # fmt: skip
    return with_date + [h for h in hits if not h.taken_at]
