"""Metadata filters, applied with the vector search rather than after it.

A filter selects row ids in the store (its SQL: `storage.filtering`); the searcher then
ranks only those (exactly, when few, or through FAISS with an id selector), so a filtered
search still returns k hits whenever k images match. `Filter` is a plain dataclass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Literal

from clipsearch.errors import QueryError
from clipsearch.names import is_text, readable
from clipsearch.search import tag_tree
from clipsearch.storage.filtering import ImageConditions

Orientation = Literal["landscape", "portrait", "square"]
#: Bounds a size filter (SQLite integers stop at 2**63; no image is wider than this).
MAX_PIXELS_PER_SIDE = 1_000_000_000
_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}


@dataclass(frozen=True)
class Filter:
    """All given conditions must hold (AND). Dates are ISO (`2021-07` or `2021-07-14`)."""

    folder: str | None = None  # images under this folder, recursively
    path_glob: str | None = None  # shell-style pattern on the full path, e.g. "*/2021/*"
    taken_after: str | None = None  # EXIF date taken on or after (images without a date drop)
    taken_before: str | None = None  # EXIF date taken before
    min_width: int | None = None
    min_height: int | None = None
    orientation: Orientation | None = None
    formats: tuple[str, ...] = ()  # Pillow format names, e.g. ("JPEG", "PNG")
    #: Images carrying every one of these tags, or a tag below it (`search.tag_tree`), any case.
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("folder", "path_glob"):
            value = getattr(self, name)
            if value is not None and not is_text(value):
                raise QueryError(f"{name} {readable(value)!r} is not valid UTF-8 text")
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_PIXELS_PER_SIDE:
                raise QueryError(
                    f"{name} must be between 0 and {MAX_PIXELS_PER_SIDE:,} pixels, got {value}"
                )

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) in (None, ()) for f in fields(self))

    def resolved(self) -> ImageConditions:
        """The conditions as the store applies them (checked; a folder made absolute, dates
        made comparable, format aliases and tags below a tag resolved)."""
        if self.orientation not in (None, "landscape", "portrait", "square"):
            raise QueryError(
                f"orientation must be landscape, portrait or square, not {self.orientation!r}"
            )
        folder = None
        if self.folder:
            folder = os.path.abspath(os.path.expanduser(self.folder)).rstrip(os.sep) + os.sep
        return ImageConditions(
            folder_prefix=folder,
            path_glob=self.path_glob or None,
            taken_after=_iso(self.taken_after, "taken_after") if self.taken_after else None,
            taken_before=_iso(self.taken_before, "taken_before") if self.taken_before else None,
            min_width=self.min_width or None,
            min_height=self.min_height or None,
            orientation=self.orientation,
            formats=tuple(_FORMAT_ALIASES.get(f.upper(), f.upper()) for f in self.formats),
            # A tag also matches every tag below it: --tag dog finds a stored "beagle".
            tags=tuple(tuple(sorted(tag_tree.shipped().below(tag))) for tag in self.tags),
        )


def _iso(value: str, name: str) -> str:
    """A comparable ISO prefix: '2021', '2021-07', '2021-07-14' or a full timestamp."""
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return (
            parsed.isoformat()
            if fmt.endswith("%S")
            else date(parsed.year, parsed.month, parsed.day).isoformat()
        )
    raise QueryError(f"{name} must be an ISO date like 2021-07-14, got {value!r}")
