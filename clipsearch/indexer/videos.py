"""Indexing videos: each new or changed video is decoded, its keyframes chosen and embedded
(`clipsearch.video.keyframes`), and stored with them in one transaction, one video at a
time in this process (FFmpeg decodes on every core; memory stays that of one batch of
keyframes however long the video). A video that cannot be read is skipped with the reason,
and a changed one that no longer reads loses its old entry, as a photo does.
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
from clipsearch.storage.db import Database, ImageRecord
from clipsearch.storage.frames import frame_keys_of
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
        video = embed_video(
            path, encoder, settings, batch_size=options.batch_size, max_pixels=options.max_pixels
        )
    except ImageDecodeError as exc:
        counts.skipped.append(Skip(path, exc.reason + _DROPPED * bool(old)))
        if old:
            dropped = frame_keys_of(db, old)
            db.write_items([], drop=old)
            counts.removed += 1
            on_commit(np.zeros(0, np.int64), np.zeros((0, 0), np.float32),
                      np.asarray([*old, *dropped], dtype=np.int64))  # fmt: skip
        return 0
    facts = video.facts
    record = ImageRecord(
        path=path, size=job.file.size, mtime_ns=job.file.mtime_ns, sha256=facts.sha256,
        width=facts.width, height=facts.height, format=facts.format, taken_at=facts.taken_at,
        vector=video.vector, camera=facts.camera, duration=video.duration,
        frames=video.keyframes,
    )  # fmt: skip
    written = db.write_items([record])
    ids = np.asarray([*written.ids, *written.frame_keys], dtype=np.int64)
    vectors = np.vstack([video.vector[None, :], video.keyframes.vectors])
    on_commit(ids, vectors, np.asarray([*old, *written.dropped_keys], dtype=np.int64))
    counts.updated += len(old)
    counts.added += 1 - len(old)
    counts.encoded += video.candidates
    return len(video.keyframes.times)
