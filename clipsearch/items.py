"""Indexed images as records (`Item`), the folders an index was built from, and the rule
for which indexed files may be handed out (a server serves only files inside those folders).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.storage.db import Database
from clipsearch.storage.schema import ROOTS_KEY
from clipsearch.storage.texts import TextTable


@dataclass(frozen=True)
class Item:
    """One indexed image or video and what the index knows about it."""

    id: int
    path: str
    size: int
    mtime: float  # unix time of the file's last change when it was indexed
    sha256: str
    width: int
    height: int
    format: str | None
    taken_at: str | None  # ISO 8601 from EXIF, if the photo records it
    indexed_at: float
    tags: list[tuple[str, float]] = field(default_factory=list)  # best first
    camera: str | None = None  # EXIF make and model
    #: Words read in the photo (`index --ocr`): None if not read, "" if none were found.
    text_in_photo: str | None = None
    duration: float | None = None  # a video's, in seconds (None for a photo)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = [{"tag": t, "score": s} for t, s in self.tags]
        return out


def read_items(db: Database, ids: Sequence[int]) -> list[Item]:
    """The items with these ids that exist, in the order asked."""
    rows = {r.id: r for r in db.rows(ids)}
    tags = TextTable(db).tags_for(list(rows))
    found = [rows[i] for i in ids if i in rows]
    return [
        Item(
            id=r.id,
            path=r.path,
            size=r.size,
            mtime=r.mtime_ns / 1e9,
            sha256=r.sha256,
            width=r.width,
            height=r.height,
            format=r.format,
            taken_at=r.taken_at,
            indexed_at=r.indexed_at,
            tags=tags.get(r.id, []),
            camera=r.camera,
            text_in_photo=r.ocr,
            duration=r.duration,
        )
        for r in found
    ]


def record_roots(db: Database, roots: Iterable[Path]) -> None:
    """Remember the folders (and single files) an `add` was given."""
    known = set(json.loads(db.get_meta().get(ROOTS_KEY, "[]")))
    new = known | {str(r) for r in roots}
    if new != known:
        db.set_meta(**{ROOTS_KEY: json.dumps(sorted(new))})


def indexed_roots(db: Database) -> list[Path]:
    """The folders and files the index was built from. Indexes written before roots were
    recorded fall back to the folders that hold indexed images."""
    recorded = db.get_meta().get(ROOTS_KEY)
    if recorded is not None:
        return [Path(p) for p in json.loads(recorded)]
    return sorted({Path(p).parent for p in db.ids_by_path()})


def inside_roots(path: str | os.PathLike[str], roots: Sequence[Path]) -> Path | None:
    """The file's real path if it lies inside one of `roots` once every symlink is resolved
    (so `../` tricks and links that lead elsewhere are refused), else None."""
    real = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real.is_relative_to(real_root):
            return real
    return None
