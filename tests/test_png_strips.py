"""Large PNGs decoded strip by strip: the same pixels as Pillow's whole decode reduced by
the same factor, for every colour type read this way, and bounded memory at 144 MP."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.indexer import png_strips
from tests.test_hostile_files import STRIP_PEAK


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Noise over gradients: every PNG filter type gets used by the encoder."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    rgb = np.stack([x, y, (x + y) / 2], axis=-1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _as(image: Image.Image, mode: str) -> Image.Image:
    if mode == "P":
        return image.quantize(64)
    if mode == "P+tRNS":
        quantized = image.quantize(64)
        quantized.info["transparency"] = 3
        return quantized
    if mode == "LA":
        return Image.merge("LA", (image.convert("L"), image.getchannel("G")))
    if mode == "RGBA":
        return Image.merge("RGBA", (*image.split(), image.getchannel("B")))
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P+tRNS"])
@pytest.mark.parametrize("factor", [2, 7, 53])
def test_strips_give_pillows_pixels(mode: str, factor: int) -> None:
    image = _as(_photo((1203, 917)), mode)  # neither side a multiple of a strip or a box
    data = _png(image, optimize=False, compress_level=6)
    got = png_strips.reduced(io.BytesIO(data), factor)
    assert got is not None
    whole = Image.open(io.BytesIO(data))
    want = whole.convert("RGB").reduce(factor)  # alpha dropped first, as before strips
    assert got.size == want.size == (-(-1203 // factor), -(-917 // factor))
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_pngs_it_does_not_read_are_left_to_pillow() -> None:
    plain = bytearray(_png(_photo((300, 200))))
    plain[28] = 1  # IHDR's interlace method: Adam7 (Pillow writes none; the header is enough)
    plain[29:33] = struct.pack(">I", zlib.crc32(bytes(plain[12:29])))
    assert Image.open(io.BytesIO(bytes(plain))).info.get("interlace") == 1
    assert png_strips.reduced(io.BytesIO(bytes(plain)), 2) is None
    sixteen = _png(Image.new("I;16", (120, 100), 4000))
    assert png_strips.reduced(io.BytesIO(sixteen), 2) is None
    assert png_strips.reduced(io.BytesIO(b"GIF89a not a png"), 2) is None


def test_a_truncated_png_is_an_error_not_a_partial_picture() -> None:
    data = _png(_photo((800, 600)), compress_level=1)
    with pytest.raises(ValueError, match="ends at row"):
        png_strips.reduced(io.BytesIO(data[: len(data) // 2]), 4)


def _huge_png(path: Path, width: int, height: int) -> None:
    """A width x height RGB PNG written row by row (never whole in memory)."""
    rows = zlib.compressobj(9)
    pattern = np.tile(np.arange(width * 3, dtype=np.uint8), 1)
    with path.open("wb") as f:
        f.write(png_strips.SIGNATURE)
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        for kind, data in ((b"IHDR", ihdr),):
            f.write(struct.pack(">I", len(data)) + kind + data)
            f.write(struct.pack(">I", zlib.crc32(kind + data)))
        compressed = bytearray()
        for y in range(height):
            compressed += rows.compress(b"\x01" + np.roll(pattern, y).tobytes())  # Sub filter
        compressed += rows.flush()
        for kind, data in ((b"IDAT", bytes(compressed)), (b"IEND", b"")):
            f.write(struct.pack(">I", len(data)) + kind + data)
            f.write(struct.pack(">I", zlib.crc32(kind + data)))


def test_a_144_megapixel_png_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """It peaked at 1.6 GB (the decode, then copies of the whole picture); measured in a
    fresh process, the decoder's own peak growth now stays under 150 MB."""
    path = tmp_path / "big.png"
    _huge_png(path, 12_000, 12_000)
    done = subprocess.run(
        [sys.executable, "-c", STRIP_PEAK, str(path)], capture_output=True, text=True, check=True
    )
    assert int(done.stdout) < 150, f"peak grew by {done.stdout.strip()} MB"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_data_after_the_end_of_the_image_stream_is_ignored() -> None:
    """Trailing IDAT data after a complete zlib stream (crafted: it made every later piece
    pile up, quadratic in time and memory) is left unread, as Pillow leaves it."""
    data = _png(_photo((600, 400)))
    end = data.rindex(b"IEND") - 4
    crafted = data[:end] + _chunk(b"IDAT", bytes(4 << 20)) + data[end:]
    got = png_strips.reduced(io.BytesIO(crafted), 4)
    assert got is not None
    want = Image.open(io.BytesIO(data)).convert("RGB").reduce(4)
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_a_large_png_with_a_long_header_chunk_decodes_or_is_one_error(tmp_path: Path) -> None:
    """An IHDR one byte longer than 13: Pillow reads it; the strip reader once raised a raw
    struct.error that stopped the whole indexing run."""
    from clipsearch.indexer.decode import load_upright

    data = _png(Image.new("L", (4100, 4100), 128), compress_level=1)
    ihdr_end = 8 + 8 + 13
    ihdr = data[16:ihdr_end] + b"\x00"
    crafted = data[:8] + _chunk(b"IHDR", ihdr) + data[ihdr_end + 4 :]
    assert Image.open(io.BytesIO(crafted)).size == (4100, 4100)
    path = tmp_path / "long-ihdr.png"
    path.write_bytes(crafted)
    image, facts = load_upright(str(path), 224)
    assert (facts.width, facts.height) == (4100, 4100) and min(image.size) >= 224
