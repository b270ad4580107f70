"""Metadata filters as SQL on the images table. `search.filters.Filter` (the public, plain
filter) checks and resolves what a user gave into an `ImageConditions`; this module alone
turns that into SQL, for both stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, select, true

from clipsearch.storage.dialect import glob_escape, glob_match
from clipsearch.storage.schema import ImageRow, ImageTag


@dataclass(frozen=True)
class ImageConditions:
    """Resolved conditions, all of which must hold: a folder as an absolute path prefix
    (ending in the separator), dates as comparable ISO strings, formats as Pillow's names,
    and for each asked tag the lower-case names that satisfy it."""

    folder_prefix: str | None = None
    path_glob: str | None = None
    taken_after: str | None = None
    taken_before: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    orientation: Literal["landscape", "portrait", "square"] | None = None
    formats: tuple[str, ...] = ()
    tags: tuple[tuple[str, ...], ...] = ()


def where(c: ImageConditions) -> Any:
    """One SQL condition on the images table (`true` when nothing is asked)."""
    return and_(true(), *_parts(c))


def _parts(c: ImageConditions) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if c.folder_prefix:
        # A prefix match both stores answer from the path index.
        out.append(glob_match(ImageRow.path, glob_escape(c.folder_prefix) + "*"))
    if c.path_glob:
        out.append(glob_match(ImageRow.path, c.path_glob))
    if c.taken_after:
        out.append(ImageRow.taken_at >= c.taken_after)
    if c.taken_before:
        out.append(ImageRow.taken_at < c.taken_before)
    if c.min_width:
        out.append(ImageRow.width >= c.min_width)
    if c.min_height:
        out.append(ImageRow.height >= c.min_height)
    if c.orientation == "landscape":
        out.append(ImageRow.width > ImageRow.height)
    elif c.orientation == "portrait":
        out.append(ImageRow.width < ImageRow.height)
    elif c.orientation == "square":
        out.append(ImageRow.width == ImageRow.height)
    if c.formats:
        out.append(ImageRow.format.in_(c.formats))
    for names in c.tags:
        tagged = select(ImageTag.image_id).where(func.lower(ImageTag.tag).in_(names))
        out.append(ImageRow.id.in_(tagged))
    return out
