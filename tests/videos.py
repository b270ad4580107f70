"""Test videos made from still pictures with PyAV: each picture is a scene of a few seconds
(still, panned or zoomed), joined by cuts or cross-fades, with optional noise, in any codec
FFmpeg can write. The scenes' time spans come back with the file, so keyframe recall and
moment retrieval can be scored. Used by the tests and by `benchmarks/video.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Encoder settings that keep generation fast (the content, not the compression, is tested).
FAST = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "mpeg4": {},
}
CONTAINER = {"libx264": ".mp4", "libx265": ".mp4", "libvpx-vp9": ".webm", "mpeg4": ".avi"}


@dataclass(frozen=True)
class Scene:
    picture: Image.Image
    seconds: float = 3.0
    motion: str = "still"  # still | pan | zoom


@dataclass(frozen=True)
class Span:
    """Where a scene lies in the video: from the middle of the transition into it to the
    middle of the transition out of it."""

    start: float
    end: float

    def holds(self, time: float) -> bool:
        return self.start <= time < self.end


def _fit(picture: Image.Image, size: tuple[int, int], scale: float) -> Image.Image:
    """The picture covering `size` times `scale` (cropped to the aspect, not distorted)."""
    width, height = size
    ratio = max(width * scale / picture.width, height * scale / picture.height)
    resized = picture.convert("RGB").resize(
        (max(width, round(picture.width * ratio)), max(height, round(picture.height * ratio))),
        Image.Resampling.BILINEAR,
    )
    return resized


def _frame(scene: Scene, big: Image.Image, size: tuple[int, int], progress: float) -> np.ndarray:
    """The scene's picture at `progress` (0-1) of its motion, as an RGB array of `size`."""
    width, height = size
    if scene.motion == "pan":  # a window sliding left to right across a wider picture
        x = round((big.width - width) * progress)
        y = (big.height - height) // 2
        return np.asarray(big.crop((x, y, x + width, y + height)))
    if scene.motion == "zoom":  # a window closing in on the centre, to 70% of the picture
        zoom = 1.0 - 0.3 * progress
        w, h = big.width * zoom, big.height * zoom
        x, y = (big.width - w) / 2, (big.height - h) / 2
        crop = big.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))
        return np.asarray(crop)
    return np.asarray(big.crop((0, 0, width, height)))


def write_video(
    path: Path,
    scenes: Sequence[Scene],
    *,
    size: tuple[int, int] = (320, 240),
    fps: int = 12,
    codec: str = "libx264",
    fade: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
) -> list[Span]:
    """Write the scenes as one video; `fade`: seconds of cross-fade between scenes (0: cuts);
    `noise`: the standard deviation of added grain, in 8-bit levels; `metadata`: container
    tags (creation_time, make, model ...). Returns each scene's span in seconds."""
    import av

    rng = np.random.default_rng(seed)
    grain = [rng.normal(0, noise, (size[1], size[0], 3)).astype(np.float32) for _ in range(4)]
    bigs = [_fit(s.picture, size, 1.4 if s.motion == "pan" else 1.0) for s in scenes]
    frames_of = [max(1, round(s.seconds * fps)) for s in scenes]
    # A cross-fade is centred on the cut, so scenes meet where the cut would have been.
    bounds = np.cumsum([0, *frames_of]) / fps
    spans = [Span(float(a), float(b)) for a, b in itertools.pairwise(bounds)]
    fade_frames = round(fade * fps)
    options = {"movflags": "use_metadata_tags"} if metadata and path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=options) as container:
        container.metadata.update(metadata or {})
        stream: Any = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = FAST.get(codec, {})
        index = 0
        for n, scene in enumerate(scenes):
            count = frames_of[n]
            for i in range(count):
                picture = _frame(scene, bigs[n], size, i / max(1, count - 1)).astype(np.float32)
                ahead = count - i
                if fade_frames and n + 1 < len(scenes) and ahead <= fade_frames // 2:
                    other = _frame(scenes[n + 1], bigs[n + 1], size, 0.0).astype(np.float32)
                    mix = 0.5 - ahead / fade_frames
                    picture = picture * (1 - mix) + other * mix
                elif fade_frames and n > 0 and i < fade_frames - fade_frames // 2:
                    other = _frame(scenes[n - 1], bigs[n - 1], size, 1.0).astype(np.float32)
                    mix = 0.5 - (i + 1) / fade_frames
                    picture = picture * (1 - mix) + other * mix
                if noise:
                    picture = picture + grain[index % len(grain)]
                pixels = np.clip(picture, 0, 255).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                index += 1
        for packet in stream.encode():
            container.mux(packet)
    return spans


def repeat_video(source: Path, dest: Path, times: int) -> None:
    """`dest`: `source`'s packets `times` over, without re-encoding (a long video, fast)."""
    import av

    with av.open(str(dest), "w") as out:
        out_stream: Any = None
        shift = 0
        for _ in range(times):
            with av.open(str(source)) as inp:
                in_stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                end = 0
                for packet in inp.demux(in_stream):
                    if not packet.size:
                        continue
                    end = max(end, (packet.pts or 0) + (packet.duration or 0))
                    if packet.pts is not None:
                        packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                    packet.stream = out_stream
                    out.mux(packet)
                shift += end


def turn_for_display(path: Path) -> None:
    """Mark an MP4 as a phone does when it records upright: the pictures are stored lying
    on their side and the track header's matrix asks players to turn them 90 degrees
    clockwise (FFmpeg reads it as a display rotation of -90)."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4
    if data[at] != 0:
        raise ValueError(f"{path}: expected a version-0 track header")
    # version+flags, created, modified, track id, reserved, duration, reserved x2, layer,
    # alternate group, volume, reserved: then the 3x3 matrix (16.16 and 2.30 fixed point).
    matrix = at + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2
    height = struct.unpack(">I", data[matrix + 40 : matrix + 44])[0]  # 16.16 fixed point
    turned = (0, 1 << 16, 0, -(1 << 16), 0, 0, height, 0, 1 << 30)
    data[matrix : matrix + 36] = struct.pack(">9i", *turned)
    path.write_bytes(bytes(data))
