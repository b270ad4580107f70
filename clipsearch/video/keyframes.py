"""A video's keyframes, embedded: candidates from the scene cutter go through the model in
batches as they are decoded; consecutive near-identical ones (by their embeddings) are
dropped; above `max_frames`, the frames that best cover the video are kept (`select`). The
video's own vector is the mean of its keyframes', normalised.

The model sees a square (its preprocessing crops the centre), so a wide frame would lose its
sides: a frame that is not square is embedded as three squares along its long side (left,
centre, right) and their vectors averaged (`frame_crops`). On the Flickr test videos this
lifted moment retrieval R@1 from 0.083 to 0.097 (benchmarks/video.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.models.base import Encoder, stack_pixels
from clipsearch.storage.keyframes import Keyframes
from clipsearch.video.decode import Candidate, VideoFacts, VideoReader
from clipsearch.video.scenes import SceneRules
from clipsearch.video.select import choose_frames

if TYPE_CHECKING:
    from PIL import Image

#: A frame whose long side is at least this many times its short side is seen as three
#: squares (4:3 and wider; a square one as it is).
CROP_ASPECT = 1.1


@dataclass(frozen=True)
class VideoOptions:
    max_frames: int = 64  # keyframes kept per video at most
    #: A keyframe this similar (cosine) to the one kept before it adds nothing: dropped ...
    duplicate_cosine: float = 0.95
    #: ... unless its picture changed this much (a cut to another picture is always kept:
    #: how similar two different pictures embed depends on the model).
    distinct_change: float = 0.3
    rules: SceneRules = field(default_factory=SceneRules)


@dataclass(frozen=True)
class EmbeddedVideo:
    facts: VideoFacts
    duration: float  # seconds, as decoded
    keyframes: Keyframes
    vector: np.ndarray[Any, Any]  # the mean of the keyframes' vectors, unit length
    candidates: int  # keyframes the scene cutter proposed (before duplicates and the cap)


def drop_repeats(
    vectors: np.ndarray[Any, Any], changes: Sequence[float], options: VideoOptions
) -> list[int]:
    """Positions to keep: each frame unless it is at least `duplicate_cosine` similar to the
    last one kept and its picture changed less than `distinct_change`."""
    kept: list[int] = []
    for n, vector in enumerate(vectors):
        repeat = float(vector @ vectors[kept[-1]]) >= options.duplicate_cosine if kept else False
        if not repeat or changes[n] >= options.distinct_change:
            kept.append(n)
    return kept


def frame_crops(picture: Image.Image) -> list[Image.Image]:
    """What the model is shown of a frame: itself if square, else three squares along its
    long side (start, centre, end), so none of it is cut away."""
    width, height = picture.size
    side, long = min(width, height), max(width, height)
    if long < CROP_ASPECT * side:
        return [picture]
    starts = (0, (long - side) // 2, long - side)
    if width > height:
        return [picture.crop((x, 0, x + side, side)) for x in starts]
    return [picture.crop((0, y, side, y + side)) for y in starts]


def _means(vectors: np.ndarray[Any, Any], counts: Sequence[int]) -> np.ndarray[Any, Any]:
    """Consecutive groups of `counts` rows averaged and normalised: one vector per frame."""
    out = np.stack([group.mean(axis=0) for group in np.split(vectors, np.cumsum(counts)[:-1])])
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def embed_video(
    path: str,
    encoder: Encoder,
    options: VideoOptions,
    *,
    batch_size: int = 32,
    max_pixels: int,
    sha256: str | None = None,
    preprocess: Callable[[Any], Any] | None = None,
) -> EmbeddedVideo:
    """Decode, choose and embed a video's keyframes (raises `ImageDecodeError` with the
    reason for a file that is not a whole, readable video)."""
    preprocess = preprocess or encoder.preprocess
    times: list[float] = []
    changes: list[float] = []
    parts: list[np.ndarray[Any, Any]] = []
    batch: list[Candidate] = []

    def flush() -> None:
        if batch:
            crops = [frame_crops(c.picture) for c in batch]
            pixels = stack_pixels([preprocess(crop) for each in crops for crop in each])
            encoded = np.asarray(encoder.encode_images(pixels), dtype=np.float32)
            parts.append(_means(encoded, [len(each) for each in crops]))
            times.extend(c.time for c in batch)
            changes.extend(c.change for c in batch)
            batch.clear()

    with VideoReader(path, max_pixels, sha256) as reader:
        for candidate in reader.candidates(options.rules, 2 * encoder.input_size):
            batch.append(candidate)
            if len(batch) >= batch_size:
                flush()
        flush()
        duration = reader.duration
    vectors = np.concatenate(parts)
    kept = drop_repeats(vectors, changes, options)
    if len(kept) > options.max_frames:
        chosen = choose_frames(np.asarray(times)[kept], vectors[kept], options.max_frames, duration)
        kept = [kept[c] for c in chosen]
    frames = Keyframes(np.asarray(times, dtype=np.float64)[kept], vectors[kept])
    mean = frames.vectors.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return EmbeddedVideo(reader.facts, duration, frames, mean.astype(np.float32), len(times))
