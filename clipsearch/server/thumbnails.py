"""Thumbnails, made on first request and kept on disk beside the index.

A thumbnail is named by the image's content hash, so a changed photo gets a new one and
identical photos share one. Files are written under a temporary name and renamed into place,
so concurrent requests for the same thumbnail never see half a file.
"""

from __future__ import annotations

import os
import tempfile
from enum import IntEnum
from pathlib import Path

from clipsearch.indexer.decode import DEFAULT_MAX_PIXELS, load_upright, register_heif
from clipsearch.video.decode import is_video, picture_at


class ThumbnailSize(IntEnum):
    """The sizes offered (longest side, pixels): a grid cell, a large grid cell, a preview."""

    SMALL = 128
    MEDIUM = 256
    LARGE = 512


SIZES = tuple(int(s) for s in ThumbnailSize)
FOLDER = "thumbnails"


class Thumbnails:
    def __init__(self, index_directory: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = index_directory / FOLDER
        self.max_pixels = max_pixels
        register_heif()

    def path_for(self, sha256: str, size: int, time: float | None = None) -> Path:
        name = sha256 if time is None else f"{sha256}@{round(time * 1000)}"
        return self.root / str(size) / sha256[:2] / f"{name}.jpg"

    def get(self, source: Path, sha256: str, size: int, time: float | None = None) -> Path:
        """The cached thumbnail of `source` (whose content hash is `sha256`), made if missing;
        of a video, the frame at `time` seconds (default: the first). Raises
        `ImageDecodeError` when the source cannot be decoded."""
        if size not in SIZES:
            raise ValueError(f"thumbnail size must be one of {SIZES}, got {size}")
        video = is_video(str(source))
        target = self.path_for(sha256, size, (time or 0.0) if video else None)
        if target.exists():
            return target
        if video:
            image = picture_at(str(source), time or 0.0, size, self.max_pixels)
        else:
            image, _facts = load_upright(str(source), size, self.max_pixels)
        image.thumbnail((size, size))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, "JPEG", quality=85, optimize=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
