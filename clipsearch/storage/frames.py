"""Videos' keyframes in the store, and the image vectors searches run on.

A video is one row of `images` (its vector the mean of its keyframes') with many rows in
`frames`, each a keyframe's time and vector. The vector index holds both kinds: an image
row under its id, a keyframe under its *key*, `FRAME_KEY_BASE + frames.id`, so one FAISS
index (or one set of shards) finds a video by its best moment. `ImageVectors` is that
space as a `VectorTable`; `owners` maps keys back to their video so a search can count a
video once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clipsearch.arrays import IdArray, Matrix
from clipsearch.storage.blobs import (
    decode_rows,
    iter_vectors,
    labels_for,
    stored_widths,
    vectors_for,
)
from clipsearch.storage.db import Database, chunked
from clipsearch.storage.keyframes import FRAME_KEY_BASE, Keyframes
from clipsearch.storage.schema import FrameRow, ImageRow


def is_frame_key(key: int) -> bool:
    return key >= FRAME_KEY_BASE


def split_keys(keys: Sequence[int]) -> tuple[list[int], list[int]]:
    """(image ids, frame row ids) of a mixed list of keys."""
    images = [int(k) for k in keys if k < FRAME_KEY_BASE]
    frames = [int(k) - FRAME_KEY_BASE for k in keys if k >= FRAME_KEY_BASE]
    return images, frames


def frame_keys_of(db: Database, image_ids: Sequence[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The keys of every keyframe of these items (none for photos)."""
    out: list[int] = []
    with Session(db.engine) as session:
        for chunk in chunked(list(image_ids)):
            stmt = select(FrameRow.id).where(FrameRow.image_id.in_(chunk))
            out.extend(FRAME_KEY_BASE + i for i in session.scalars(stmt))
    return np.asarray(sorted(out), dtype=np.int64)


@dataclass(frozen=True)
class VideoTwin:
    """An indexed video with the same content as a file about to be indexed: its row's
    facts and keyframes, to be stored again for the copy instead of decoding it."""

    row: ImageRow
    vector: np.ndarray[Any, Any]  # the video's (the mean of its keyframes')
    frames: Keyframes


def video_twin(db: Database, sha256: str) -> VideoTwin | None:
    """The first indexed video with this content hash and its keyframes, if any."""
    with Session(db.engine, expire_on_commit=False) as session:
        stmt = select(ImageRow).where(ImageRow.sha256 == sha256, ImageRow.duration.is_not(None))
        row = session.scalars(stmt.order_by(ImageRow.id).limit(1)).first()
        if row is None:
            return None
        times, blobs = [], []
        query = select(FrameRow.time, FrameRow.vector).where(FrameRow.image_id == row.id)
        for time, blob in session.execute(query.order_by(FrameRow.time)):
            times.append(float(time))
            blobs.append(blob)
        session.expunge(row)
    vectors, ok = decode_rows([row.vector, *blobs], db.vector_dtype)
    if not times or not all(ok):
        return None  # no keyframes, or a damaged vector: no template, the copy is decoded
    return VideoTwin(row, vectors[0], Keyframes(np.asarray(times, dtype=np.float64), vectors[1:]))


def video_count(db: Database) -> int:
    """Items that are videos (they have a duration)."""
    with db.engine.connect() as conn:
        stmt = select(func.count(ImageRow.id)).where(ImageRow.duration.is_not(None))
        return int(conn.scalar(stmt) or 0)


@dataclass(frozen=True)
class VideoFrames:
    """A video's keyframes as the search reads them: their keys and times (in time order)
    and the video's duration."""

    duration: float
    keys: list[int]
    times: list[float]


def frames_of(db: Database, image_ids: Sequence[int]) -> dict[int, VideoFrames]:
    """The keyframes of those of these items that are videos."""
    out: dict[int, VideoFrames] = {}
    if not image_ids:
        return out
    stmt = (
        select(FrameRow.image_id, FrameRow.id, FrameRow.time, ImageRow.duration)
        .join(ImageRow, ImageRow.id == FrameRow.image_id)
        .where(FrameRow.image_id.in_(list(image_ids)))
        .order_by(FrameRow.image_id, FrameRow.time)
    )
    with db.engine.connect() as conn:
        for image_id, frame_id, time, duration in conn.execute(stmt):
            video = out.setdefault(int(image_id), VideoFrames(float(duration or 0.0), [], []))
            video.keys.append(FRAME_KEY_BASE + int(frame_id))
            video.times.append(float(time))
    return out


class ImageVectors:
    """The searchable image space as one `VectorTable`: every image row by its id (a video's
    under its mean vector) and every keyframe by its key, labelled with its file's path."""

    def __init__(self, db: Database, shard: tuple[int, int] | None = None) -> None:
        self.db = db
        self.shard = shard  # (s, n): only the keys equal to s modulo n
        self._frames: tuple[int, int] | None = None  # (generation, count) last counted

    def vectors_for(self, ids: Sequence[int]) -> tuple[list[int], list[str], Matrix]:
        images, frames = split_keys(ids)
        found, labels, matrix = self.db.vectors_for(images)
        if not frames:
            return found, labels, matrix
        frame_ids, paths, decoded = vectors_for(
            self.db.engine, FrameRow.id, _path_of_frame(), FrameRow.vector, frames,
            self.db.vector_dtype,
        )  # fmt: skip
        parts = [m for m in (matrix, decoded) if m.shape[0]]
        return (
            [*found, *(FRAME_KEY_BASE + i for i in frame_ids)],
            [*labels, *paths],
            np.concatenate(parts) if parts else decoded,
        )

    def labels_for(self, ids: Sequence[int]) -> tuple[list[int], list[str]]:
        images, frames = split_keys(ids)
        found, labels = self.db.labels_for(images)
        if frames:
            widths = stored_widths(self.db.dim())
            frame_ids, paths = labels_for(
                self.db.engine, FrameRow.id, _path_of_frame(), frames, FrameRow.vector, widths
            )
            found += [FRAME_KEY_BASE + i for i in frame_ids]
            labels += paths
        return found, labels

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[IdArray, Matrix]]:
        yield from self.db.iter_vectors(chunk, self.shard)
        # Keys are the frame ids shifted, so keys modulo n is (id + base) modulo n.
        shard = None
        if self.shard is not None:
            s, n = self.shard
            shard = ((s - FRAME_KEY_BASE) % n, n)
        for ids, vectors in iter_vectors(
            self.db.engine, FrameRow.id, FrameRow.vector, chunk, self.db.vector_dtype, shard
        ):
            yield ids + FRAME_KEY_BASE, vectors

    def generation(self) -> int:
        return self.db.generation()

    def count(self) -> int:
        """Vectors in the space: image rows and keyframes (a shard's share, if sharded)."""
        total = self.db.count() + self.frame_count()
        return total if self.shard is None else max(1, total // self.shard[1])

    def frame_count(self) -> int:
        generation = self.db.generation()
        if self._frames is None or self._frames[0] != generation:
            with self.db.engine.connect() as conn:
                counted = int(conn.scalar(select(func.count(FrameRow.id))) or 0)
            self._frames = (generation, counted)
        return self._frames[1]

    def owners(self, keys: Sequence[int]) -> dict[int, int]:
        """For each key: the image row it belongs to (itself for an image row)."""
        images, frames = split_keys(keys)
        out = {i: i for i in images}
        if frames:
            stmt = select(FrameRow.id, FrameRow.image_id).where(FrameRow.id.in_(frames))
            with self.db.engine.connect() as conn:
                out.update({FRAME_KEY_BASE + f: int(i) for f, i in conn.execute(stmt)})
        return out


def _path_of_frame() -> Any:
    """The path of a keyframe's video, as a column expression (a correlated subquery)."""
    return (
        select(ImageRow.path).where(ImageRow.id == FrameRow.image_id).scalar_subquery().label("p")
    )
