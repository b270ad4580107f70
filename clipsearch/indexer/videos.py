"""Indexing videos: each new or changed video is decoded, its keyframes chosen and embedded
(`clipsearch.video.keyframes`), and stored with them in one transaction, one video at a
time in this process (FFmpeg decodes on every core; memory stays that of one batch of
keyframes however long the video). A copy of a video already indexed (the same content
hash) takes that video's keyframes without being decoded. A video that cannot be read is
skipped with the reason, and a changed one that no longer reads loses its old entry, as a
photo does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from clipsearch.errors import ImageDecodeError
from clipsearch.facts import Skip
from clipsearch.indexer.options import PipelineOptions
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.runners import OnProgress
from clipsearch.indexer.sinks import EmbedCounts, OnCommit
from clipsearch.models.base import Encoder
from clipsearch.regular_files import sha256_regular
from clipsearch.storage.db import Database, ImageRecord
from clipsearch.storage.frames import frame_keys_of, video_twin
from clipsearch.video.keyframes import VideoOptions, embed_video

_DROPPED = " (it was indexed before: its old entry is removed)"


def embed_videos(
    db: Database,
    jobs: Sequence[EmbedJob],
    encoder: Encoder,
    options: PipelineOptions,
    on_commit: OnCommit,
    counts: EmbedCounts,
    on_progress: OnProgress | None = None,
) -> tuple[int, int]:
    """Index the video jobs into `db`; returns the videos and the keyframes stored."""
    settings = VideoOptions(max_frames=options.max_frames_per_video)
    videos = keyframes = 0
    bar = tqdm(total=len(jobs), unit="video", desc="videos", file=sys.stderr,
               disable=not options.progress)  # fmt: skip
    try:
        for done, job in enumerate(jobs, 1):
            stored = _one(db, job, encoder, options, settings, on_commit, counts)
            videos += stored > 0
            keyframes += stored
            bar.update(1)
            if on_progress is not None:
                on_progress(done, len(jobs))
    finally:
        bar.close()
    return videos, keyframes


def _one(
    db: Database,
    job: EmbedJob,
    encoder: Encoder,
    options: PipelineOptions,
    settings: VideoOptions,
    on_commit: OnCommit,
    counts: EmbedCounts,
) -> int:
    path = job.file.path
    old = [job.replaces] if job.replaces is not None else []
    try:
        digest = sha256_regular(path)
    except OSError as exc:
        return _drop(db, path, old, f"cannot read the file ({exc.strerror or exc})", on_commit,
                     counts)  # fmt: skip
    twin = video_twin(db, digest)
    if twin is not None:  # a copy of an indexed video: its keyframes, not decoded again
        row = twin.row
        record = ImageRecord(
            path=path, size=job.file.size, mtime_ns=job.file.mtime_ns, sha256=digest,
            width=row.width, height=row.height, format=row.format, taken_at=row.taken_at,
            vector=twin.vector, camera=row.camera, duration=row.duration, frames=twin.frames,
        )  # fmt: skip
        return _store(db, record, old, on_commit, counts)
    try:
        video = embed_video(
            path, encoder, settings, batch_size=options.batch_size, max_pixels=options.max_pixels,
            sha256=digest,
        )  # fmt: skip
    except ImageDecodeError as exc:
        return _drop(db, path, old, exc.reason, on_commit, counts)
    facts = video.facts
    record = ImageRecord(
        path=path, size=job.file.size, mtime_ns=job.file.mtime_ns, sha256=facts.sha256,
        width=facts.width, height=facts.height, format=facts.format, taken_at=facts.taken_at,
        vector=video.vector, camera=facts.camera, duration=video.duration,
        frames=video.keyframes,
    )  # fmt: skip
    counts.encoded += video.candidates
    return _store(db, record, old, on_commit, counts)


def _store(
    db: Database, record: ImageRecord, old: list[int], on_commit: OnCommit, counts: EmbedCounts
) -> int:
    """Write a video and its keyframes (replacing its old entry, if any); the keyframes
    stored."""
    frames = record.frames
    if frames is None:
        raise ValueError(f"{record.path}: a video's record needs its keyframes")
    written = db.write_items([record])
    ids = np.asarray([*written.ids, *written.frame_keys], dtype=np.int64)
    vectors = np.vstack([record.vector[None, :], frames.vectors])
    on_commit(ids, vectors, np.asarray([*old, *written.dropped_keys], dtype=np.int64))
    counts.updated += len(old)
    counts.added += 1 - len(old)
    return len(frames.times)


def _drop(
    db: Database, path: str, old: list[int], reason: str, on_commit: OnCommit,
    counts: EmbedCounts,
) -> int:  # fmt: skip
    """Skip an unreadable video with the reason; a changed one loses its old entry."""
    counts.skipped.append(Skip(path, reason + _DROPPED * bool(old)))
    if old:
        dropped = frame_keys_of(db, old)
        db.write_items([], drop=old)
        counts.removed += 1
        on_commit(np.zeros(0, np.int64), np.zeros((0, 0), np.float32),
                  np.asarray([*old, *dropped], dtype=np.int64))  # fmt: skip
    return 0
