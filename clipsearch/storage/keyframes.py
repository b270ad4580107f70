"""A video's keyframes as the store writes them, and the keys they go by in the vector
index (`FRAME_KEY_BASE + frames.id`; see `frames`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from clipsearch.arrays import Matrix
from clipsearch.storage.schema import FrameRow

#: Keys of keyframes in the vector index start here (image ids stay far below it; 2^48
#: is still exact as a float64, should an id ever pass through one).
FRAME_KEY_BASE = 1 << 48


@dataclass(frozen=True)
class Keyframes:
    """A video's keyframes as indexed: times in seconds (ascending) and their vectors."""

    times: np.ndarray[Any, np.dtype[np.float64]]
    vectors: Matrix


def replace_frames(
    session: Session, image_id: int, frames: Keyframes, dtype: np.dtype[Any]
) -> tuple[list[int], list[int]]:
    """Store a video's keyframes in the caller's transaction, replacing any it had; returns
    (the new keys, the keys that were dropped)."""
    old = list(session.scalars(select(FrameRow.id).where(FrameRow.image_id == image_id)))
    if old:
        session.execute(delete(FrameRow).where(FrameRow.image_id == image_id))
    rows = [
        {"image_id": image_id, "time": float(t), "vector": np.ascontiguousarray(v, dtype).tobytes()}
        for t, v in zip(frames.times, frames.vectors, strict=True)
    ]
    new: list[int] = []
    if rows:
        new = list(session.scalars(insert(FrameRow).returning(FrameRow.id), rows))
    return [FRAME_KEY_BASE + i for i in new], [FRAME_KEY_BASE + i for i in old]
