"""Texts and tags in the database: the text collection (captions, JSONL records, vocabulary
terms, sidecar descriptions) with its vectors, and tags attached to images.

Texts arrive a source file at a time; re-adding a source replaces all of its texts in one
transaction, and bumps `text_generation`, the counter the texts' FAISS cache is stamped with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from clipsearch.arrays import IdArray, Vector
from clipsearch.storage import dialect
from clipsearch.storage.blobs import iter_vectors, labels_for, stored_widths, vectors_for
from clipsearch.storage.db import WORDS_GENERATION, Database, bump, chunked
from clipsearch.storage.schema import ImageTag, TextRow, TextSource

TEXT_GENERATION = "text_generation"


@dataclass(frozen=True)
class SourceFile:
    """A text source as found on disk."""

    kind: str
    path: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class TextRecord:
    """One text, embedded, ready to be written."""

    text: str
    vector: Vector
    key: str | None = None
    image_path: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceSummary:
    kind: str
    path: str
    texts: int


class TextTable:
    """The texts (and image tags) of one index database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine

    # -- the VectorStore / rebuild protocol ----------------------------------------------

    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Vector]:
        return vectors_for(self.engine, TextRow.id, TextRow.text, TextRow.vector, ids)

    def labels_for(self, ids: Sequence[int]) -> tuple[list[int], list[str]]:
        widths = stored_widths(self.db.dim())
        return labels_for(self.engine, TextRow.id, TextRow.text, ids, TextRow.vector, widths)

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Vector]]:
        return iter_vectors(self.engine, TextRow.id, TextRow.vector, chunk)

    def generation(self) -> int:
        return self.db.generation(TEXT_GENERATION)

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count(TextRow.id))) or 0)

    # -- sources -------------------------------------------------------------------------

    def source(self, path: str) -> TextSource | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalar(select(TextSource).where(TextSource.path == path))

    def sources(self, kind: str | None = None) -> list[SourceSummary]:
        stmt = (
            select(TextSource.kind, TextSource.path, func.count(TextRow.id))
            .outerjoin(TextRow, TextRow.source_id == TextSource.id)
            .group_by(TextSource.id)
            .order_by(TextSource.path)
        )
        if kind is not None:
            stmt = stmt.where(TextSource.kind == kind)
        with Session(self.engine) as session:
            return [SourceSummary(k, p, n) for k, p, n in session.execute(stmt)]

    def ids_of(self, kind: str | None = None, source: str | None = None) -> IdArray:
        """Ids of the texts of one kind and/or from one source file, ascending."""
        stmt = select(TextRow.id).join(TextSource, TextRow.source_id == TextSource.id)
        if kind is not None:
            stmt = stmt.where(TextSource.kind == kind)
        if source is not None:
            stmt = stmt.where(TextSource.path == source)
        with Session(self.engine) as session:
            return np.fromiter(session.scalars(stmt.order_by(TextRow.id)), dtype=np.int64)

    def file_stats(self, kind: str) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every source file of one kind, by path."""
        stmt = select(TextSource.path, TextSource.size, TextSource.mtime_ns).where(
            TextSource.kind == kind
        )
        with Session(self.engine) as session:
            return {path: (size, mtime) for path, size, mtime in session.execute(stmt)}

    def vectors_by_text(self, source_path: str) -> dict[str, Vector]:
        """The vectors a source holds now, by text: a changed file re-encodes only new texts."""
        stmt = (
            select(TextRow.text, TextRow.vector)
            .join(TextSource, TextRow.source_id == TextSource.id)
            .where(TextSource.path == source_path)
        )
        with Session(self.engine) as session:
            return {t: np.frombuffer(v, dtype=np.float32) for t, v in session.execute(stmt)}

    def replace_source(self, source: SourceFile, records: Sequence[TextRecord]) -> int:
        """Make `source` hold exactly `records` (one transaction, run again if a concurrent
        writer replaced the same source meanwhile); returns the source id."""
        return dialect.retrying(
            lambda: self._replace_source(source, records), dialect.RETRYABLE_REPLACE
        )

    def _replace_source(self, source: SourceFile, records: Sequence[TextRecord]) -> int:
        now = time.time()
        with Session(self.engine) as session, session.begin():
            session.execute(delete(TextSource).where(TextSource.path == source.path))
            row = TextSource(
                kind=source.kind,
                path=source.path,
                sha256=source.sha256,
                size=source.size,
                mtime_ns=source.mtime_ns,
                added_at=now,
            )
            session.add(row)
            session.flush()
            session.add_all(
                TextRow(
                    source_id=row.id,
                    key=r.key,
                    text=r.text,
                    image_path=r.image_path,
                    metadata_json=json.dumps(dict(r.metadata)) if r.metadata else None,
                    vector=np.ascontiguousarray(r.vector, dtype="<f4").tobytes(),
                )
                for r in records
            )
            bump(session, TEXT_GENERATION)
            return row.id

    def remove_sources(self, paths: Iterable[str]) -> int:
        """Drop these sources and their texts; returns how many sources went."""
        wanted = list(paths)
        if not wanted:
            return 0
        with Session(self.engine) as session, session.begin():
            gone = session.execute(delete(TextSource).where(TextSource.path.in_(wanted)))
            removed = int(gone.rowcount or 0)  # type: ignore[attr-defined]
            if removed:
                bump(session, TEXT_GENERATION)
            return removed

    def rows(self, ids: Sequence[int]) -> dict[int, tuple[TextRow, TextSource]]:
        """The texts with these ids (repeats allowed: many queries' hits) and their sources."""
        found: dict[int, tuple[TextRow, TextSource]] = {}
        with Session(self.engine, expire_on_commit=False) as session:
            for part in chunked(sorted(set(ids))):
                stmt = (
                    select(TextRow, TextSource)
                    .join(TextSource, TextRow.source_id == TextSource.id)
                    .where(TextRow.id.in_(part))
                )
                found.update({t.id: (t, s) for t, s in session.execute(stmt)})
        return found

    # -- tags on images ------------------------------------------------------------------

    def set_tags(self, tags: Mapping[int, Sequence[tuple[str, float]]], origin: str) -> None:
        """Replace the `origin` tags of each given image with the given (tag, score) pairs."""
        if not tags:
            return
        with Session(self.engine) as session, session.begin():
            existing: set[tuple[int, str]] = set()
            for ids in chunked(list(tags)):
                session.execute(
                    delete(ImageTag).where(ImageTag.image_id.in_(ids), ImageTag.origin == origin)
                )
                # A tag from another origin on the same image wins (primary key image+tag).
                found = select(ImageTag.image_id, ImageTag.tag).where(ImageTag.image_id.in_(ids))
                existing.update((i, t) for i, t in session.execute(found))
            session.add_all(
                ImageTag(image_id=image_id, tag=tag, score=float(score), origin=origin)
                for image_id, pairs in tags.items()
                for tag, score in dict(pairs).items()
                if (image_id, tag) not in existing
            )
            bump(session, WORDS_GENERATION)

    def tags_for(self, ids: Sequence[int]) -> dict[int, list[tuple[str, float]]]:
        """Each image's tags, best score first."""
        stmt = (
            select(ImageTag.image_id, ImageTag.tag, ImageTag.score)
            .where(ImageTag.image_id.in_(list(ids)))
            .order_by(ImageTag.image_id, ImageTag.score.desc(), ImageTag.tag)
        )
        out: dict[int, list[tuple[str, float]]] = {}
        with Session(self.engine) as session:
            for image_id, tag, score in session.execute(stmt):
                out.setdefault(image_id, []).append((tag, score))
        return out
