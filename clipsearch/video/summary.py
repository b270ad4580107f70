"""A video in k frames: the keyframes that best cover it (`select.choose_frames`), and a
contact sheet of them with their times."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw

from clipsearch.errors import QueryError
from clipsearch.models.base import Encoder
from clipsearch.storage.db import Database
from clipsearch.storage.frames import frames_of
from clipsearch.storage.keyframes import Keyframes
from clipsearch.storage.vectors import VectorTable
from clipsearch.video import clock
from clipsearch.video.decode import picture_at
from clipsearch.video.keyframes import VideoOptions, embed_video
from clipsearch.video.select import choose_frames

SHEET_TILE = 320  # pixels, the longest side of each frame on a contact sheet
SHEET_COLUMNS = 4


@dataclass(frozen=True)
class Summary:
    path: str
    duration: float
    times: list[float]  # the chosen keyframes' times, in order
    keyframes: int  # the keyframes they were chosen from
    query: str | None = None
    scores: list[float] = field(default_factory=list)  # with a query: each frame's cosine

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "duration": round(self.duration, 3),
            "keyframes": self.keyframes,
            "frames": [
                {"time": round(t, 3), "clock": clock(t)}
                | ({"score": round(s, 4)} if self.scores else {})
                for t, s in zip(self.times, self.scores or [0.0] * len(self.times), strict=True)
            ],
        }
        if self.query is not None:
            out["query"] = self.query
        return out


def summarize(
    path: str,
    times: np.ndarray[Any, Any],
    vectors: np.ndarray[Any, Any],
    duration: float,
    k: int,
    query: tuple[str, np.ndarray[Any, Any]] | None = None,
) -> Summary:
    """The k frames of a video (its keyframes' times and vectors) that stand for it; with
    `query` (its text and unit vector), drawn towards what matches it."""
    vector = query[1] if query is not None else None
    chosen = choose_frames(times, vectors, k, duration, vector)
    scores = [] if vector is None else [float(vectors[c] @ vector) for c in chosen]
    return Summary(
        path, duration, [float(times[c]) for c in chosen], len(times),
        query[0] if query is not None else None, scores,
    )  # fmt: skip


def contact_sheet(summary: Summary, out: Path, max_pixels: int) -> Path:
    """A JPEG grid of the summary's frames, each labelled with its time."""
    pictures = [picture_at(summary.path, t, SHEET_TILE, max_pixels) for t in summary.times]
    columns = min(SHEET_COLUMNS, max(1, len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    width = max(p.width for p in pictures)
    height = max(p.height for p in pictures)
    sheet = Image.new("RGB", (columns * (width + 8) + 8, rows * (height + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (picture, time) in enumerate(zip(pictures, summary.times, strict=True)):
        x = 8 + (n % columns) * (width + 8)
        y = 8 + (n // columns) * (height + 8)
        sheet.paste(picture, (x, y))
        label = clock(time)
        box = draw.textbbox((x + 4, y + 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill="black")
        draw.text((x + 4, y + 4), label, fill="white")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, "JPEG", quality=90)
    return out


class VideoSettings(Protocol):
    """The indexing settings that decoding a video reads (`PipelineOptions`)."""

    @property
    def batch_size(self) -> int: ...

    @property
    def max_pixels(self) -> int: ...

    @property
    def max_frames_per_video(self) -> int: ...


class VideoHost(Protocol):
    """What summarising a video needs of an index (an `Index`)."""

    db: Database

    @property
    def options(self) -> VideoSettings: ...

    @property
    def encoder(self) -> Encoder: ...

    def image_table(self) -> VectorTable: ...

    def space(self) -> ImageSpace: ...

    def embed_query(self, text: str | None = None) -> np.ndarray[Any, Any]: ...


class ImageSpace(Protocol):
    def images(self, raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]: ...


def video_frames(
    host: VideoHost, video: int | str | os.PathLike[str]
) -> tuple[str, Keyframes, float]:
    """A video's (path, keyframes in the search space, duration): stored ones for an indexed
    video (by id or path), else decoded and embedded now."""
    if isinstance(video, int):
        item_id: int | None = video
        found = host.db.rows([video])
        if not found:
            raise QueryError(f"no item with id {video} in the index")
        path = found[0].path
    else:
        path = os.path.abspath(Path(video).expanduser())
        item_id = host.db.ids_for_paths([path]).get(path)
    if item_id is not None:
        stored = frames_of(host.db, [item_id]).get(item_id)
        if stored is None:
            raise QueryError(f"{path} is a photo, not a video")
        keys, _, vectors = host.image_table().vectors_for(stored.keys)
        time_of = dict(zip(stored.keys, stored.times, strict=True))
        order = np.argsort([time_of[k] for k in keys])
        times = np.asarray([time_of[keys[o]] for o in order], dtype=np.float64)
        return path, Keyframes(times, vectors[order]), stored.duration
    if not os.path.isfile(path):
        raise QueryError(f"no such video file: {path}")
    options = VideoOptions(max_frames=host.options.max_frames_per_video)
    embedded = embed_video(
        path, host.encoder, options, batch_size=host.options.batch_size,
        max_pixels=host.options.max_pixels,
    )  # fmt: skip
    frames = embedded.keyframes
    return path, Keyframes(frames.times, host.space().images(frames.vectors)), embedded.duration
