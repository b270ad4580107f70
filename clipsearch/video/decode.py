"""Read a video with PyAV (FFmpeg inside): its facts, and its candidate keyframes as they
are decoded, one at a time, so a two-hour film costs no more memory than a clip.

Every frame is decoded (a scene can change on any of them) but only `ANALYSIS_FPS` a second
are looked at, through a 32x18 thumbnail FFmpeg's scaler makes; the few frames taken as
keyframes are scaled once more, to about twice the model's input size. A file that does not
open, holds no video stream, breaks off while decoding or ends well before its stated
duration is refused with the reason (`ImageDecodeError`), and nothing of it is stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from clipsearch.errors import ImageDecodeError
from clipsearch.regular_files import sha256_regular
from clipsearch.video.scenes import SIGNATURE_SIZE, SceneCutter, SceneRules

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
#: Frames a second looked at for scene changes (all are decoded).
ANALYSIS_FPS = 6.0
#: A video whose last frame comes this much before its stated end is taken as truncated.
TRUNCATION_SLACK = (2.0, 0.1)  # seconds, or this share of the duration if more
#: The metadata keys phones and cameras record their make and model under.
_MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
_MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")
#: How every "not a video PyAV can read" reason starts.
NO_PYAV = "videos need PyAV: pip install av"


def is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class VideoFacts:
    sha256: str
    width: int  # as stored in the stream (before any display rotation)
    height: int
    format: str  # the file's extension: mp4, mov, ...
    duration: float  # seconds
    taken_at: str | None  # ISO 8601, from the container's creation time
    camera: str | None


@dataclass(frozen=True)
class Candidate:
    time: float
    picture: Image.Image
    change: float  # its thumbnail's distance from the previous candidate's (1.0: the first)


def _taken_at(metadata: dict[str, str]) -> str | None:
    raw = metadata.get("creation_time") or metadata.get("com.apple.quicktime.creationdate")
    if not raw or len(raw) < 19 or raw.startswith("1970") or raw.startswith("1904"):
        return None  # unset dates come out as the epoch of the format
    return raw[:10] + "T" + raw[11:19]


def _camera(metadata: dict[str, str]) -> str | None:
    make = next((metadata[k] for k in _MAKE_KEYS if metadata.get(k)), "")
    model = next((metadata[k] for k in _MODEL_KEYS if metadata.get(k)), "")
    if model.lower().startswith(make.lower()):
        make = ""
    return " ".join(p.strip() for p in (make, model) if p.strip()) or None


class VideoReader:
    """One video file, open: `facts`, then `candidates()` once."""

    def __init__(self, path: str, max_pixels: int, sha256: str | None = None) -> None:
        try:
            import av
        except ImportError as exc:
            raise ImageDecodeError(path, NO_PYAV) from exc
        self.path = path
        try:
            # Hashed first: that refuses a pipe or device at once, which FFmpeg would block
            # on or read forever.
            sha256 = sha256 or sha256_regular(path)
        except OSError as exc:
            raise ImageDecodeError(path, f"unreadable: {exc.strerror or exc}") from exc
        try:
            self.container: Any = av.open(path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise ImageDecodeError(path, f"not a readable video ({_short(exc)})") from exc
        try:
            self.facts = self._facts(sha256, max_pixels)
        except BaseException:
            self.container.close()
            raise

    def _facts(self, sha256: str, max_pixels: int) -> VideoFacts:
        if not self.container.streams.video:
            raise ImageDecodeError(self.path, "no video stream in the file (audio only?)")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # FFmpeg decodes on every core
        codec = self.stream.codec_context
        width, height = int(codec.width or 0), int(codec.height or 0)
        if width <= 0 or height <= 0:
            raise ImageDecodeError(self.path, "the video stream states no picture size (damaged?)")
        if width * height > max_pixels:
            raise ImageDecodeError(
                self.path,
                f"image too large: {width}x{height} video frames are over the "
                f"{max_pixels:,}-pixel limit",
            )
        metadata = {str(k).lower(): str(v) for k, v in self.container.metadata.items()}
        metadata.update({str(k).lower(): str(v) for k, v in self.stream.metadata.items()})
        return VideoFacts(
            sha256=sha256, width=width, height=height,
            format=os.path.splitext(self.path)[1].lower().lstrip(".") or "video",
            duration=self._stated_duration(), taken_at=_taken_at(metadata),
            camera=_camera(metadata),
        )  # fmt: skip

    def _stated_duration(self) -> float:
        if self.container.duration:
            return float(self.container.duration) / 1_000_000
        if self.stream.duration and self.stream.time_base:
            return float(self.stream.duration * self.stream.time_base)
        return 0.0  # not stated (some streamed WebM): the last frame's time will do

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def candidates(self, rules: SceneRules, side: int) -> Iterator[Candidate]:
        """The candidate keyframes in time order, each scaled so its short side is about
        `side` pixels. Sets `self.duration` to the time actually decoded when done."""
        import av

        cutter = SceneCutter(rules)
        step = 1.0 / ANALYSIS_FPS
        next_time = 0.0
        last = -1.0
        rate = float(self.stream.average_rate or 25)
        try:
            for n, frame in enumerate(self.container.decode(self.stream)):
                time = float(frame.time) if frame.time is not None else n / rate
                last = max(last, time)
                if time < next_time:
                    continue
                next_time = time + step
                small = frame.to_ndarray(
                    width=SIGNATURE_SIZE[0], height=SIGNATURE_SIZE[1], format="rgb24"
                )
                if cutter.take(time, small.astype(np.float32) / 255.0):
                    yield Candidate(time, self._picture(frame, side), cutter.change)
        except av.FFmpegError as exc:
            raise ImageDecodeError(
                self.path,
                f"damaged video: decoding failed at {max(last, 0):.1f} s of "
                f"{self.facts.duration:.1f} s ({_short(exc)})",
            ) from exc
        if last < 0:
            raise ImageDecodeError(self.path, "damaged video: no frame could be decoded")
        stated = self.facts.duration
        slack = max(TRUNCATION_SLACK[0], TRUNCATION_SLACK[1] * stated)
        if stated and last + slack < stated:
            raise ImageDecodeError(
                self.path,
                f"truncated video: frames end at {last:.1f} s of the {stated:.1f} s it states",
            )
        self.duration = stated or last

    def _picture(self, frame: Any, side: int) -> Image.Image:
        width, height = frame.width, frame.height
        scale = min(1.0, side / max(1, min(width, height)))
        picture: Image.Image = frame.to_image(
            width=max(1, round(width * scale)), height=max(1, round(height * scale))
        )
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        if rotation:  # the display matrix turns the picture counter-clockwise
            picture = picture.rotate(rotation, expand=True)
        return picture


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def picture_at(path: str, time: float, side: int, max_pixels: int) -> Image.Image:
    """The frame shown at `time` seconds (the last one, past the end), its longest side
    scaled to at most `side` pixels; `ImageDecodeError` if the video cannot be read."""
    import av

    with VideoReader(path, max_pixels, sha256="-") as reader:
        stream = reader.stream
        try:
            if time > 0 and stream.time_base:
                offset = int(time / stream.time_base) + int(stream.start_time or 0)
                reader.container.seek(offset, stream=stream, backward=True)
            shown = None
            for frame in reader.container.decode(stream):
                shown = frame
                if frame.time is None or float(frame.time) >= time - 1e-3:
                    break
        except av.FFmpegError as exc:
            raise ImageDecodeError(path, f"damaged video ({_short(exc)})") from exc
        if shown is None:
            raise ImageDecodeError(path, "damaged video: no frame could be decoded")
        scale = min(1.0, side / max(shown.width, shown.height))
        return reader._picture(shown, round(scale * min(shown.width, shown.height)))
