"""A large PNG decoded in strips of rows, each reduced as soon as it is decoded.

Pillow decodes a PNG whole: a 144 MP photo is 432 MB of pixels before anything can shrink
it, and JPEG's draft mode has no PNG counterpart. Here the compressed rows are inflated a
strip at a time; each strip is handed to Pillow as a small PNG of its own (its first row
the previous strip's last, unfiltered, since a row's filter may refer to the row above),
reduced by a whole factor (a box filter), and pasted into the small result. Memory is a
strip and the result, whatever the photo's size.

Non-interlaced PNGs of 8 bits a sample (every colour type) are read this way; others
(16-bit, interlaced, fewer than 8 bits) are left to Pillow.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Samples a pixel by colour type: grey, RGB, palette, grey + alpha, RGBA.
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_CARRIED = (b"PLTE", b"tRNS")  # chunks before the image data each strip needs too
_STRIP_ROWS = 256  # about; a whole number of reduction boxes
_PIECE = 1 << 20  # compressed bytes read at a time


class _Header:
    def __init__(self, ihdr: bytes, carried: list[tuple[bytes, bytes]]) -> None:
        (self.width, self.height, self.depth, self.colour, _compression, _filter,
         self.interlace) = struct.unpack(">IIBBBBB", ihdr[:13])  # fmt: skip
        self.ihdr = ihdr
        self.carried = carried

    @property
    def streamable(self) -> bool:
        return self.depth == 8 and self.interlace == 0 and self.colour in _SAMPLES

    @property
    def row_bytes(self) -> int:
        return int(self.width) * _SAMPLES[self.colour]


def reduced(f: BinaryIO, factor: int) -> Image.Image | None:
    """The PNG in `f`, reduced `factor` times each way, in RGB (alpha dropped before
    reducing, as a whole decode's `convert("RGB")` drops it), or None when it is not one
    this module reads (then decode it whole). Raises `ValueError` for truncated or corrupt
    data."""
    f.seek(0)
    header = _read_header(f)
    if header is None or not header.streamable:
        return None
    mode = "RGB"
    result = Image.new(mode, (-(-header.width // factor), -(-header.height // factor)))
    rows_per_strip = factor * max(1, _STRIP_ROWS // factor)
    stride = 1 + header.row_bytes
    above = bytes(header.row_bytes)  # the row above the first is zeros
    done = 0
    pending = bytearray()
    inflate = zlib.decompressobj()
    for piece in _image_data(f):
        if inflate.eof:
            break  # data after the end of the zlib stream: ignored, as Pillow does
        data = piece
        while data and not inflate.eof:
            wanted = rows_per_strip * stride - len(pending)
            pending += inflate.decompress(data, wanted)
            data = inflate.unconsumed_tail
            if len(pending) == rows_per_strip * stride:
                above = _paste_strip(result, header, bytes(pending), above, done, factor, mode)
                done += rows_per_strip
                pending.clear()
            if done >= header.height:
                return result
    pending += inflate.flush()
    left = header.height - done
    if len(pending) < left * stride:
        raise ValueError(f"image data ends at row {done + len(pending) // stride} of "
                         f"{header.height}")  # fmt: skip
    _paste_strip(result, header, bytes(pending[: left * stride]), above, done, factor, mode)
    return result


def _paste_strip(
    result: Image.Image, header: _Header, rows: bytes, above: bytes, top: int, factor: int,
    mode: str,
) -> bytes:  # fmt: skip
    """Decode `rows` (filtered, with `above` the reconstructed row before them), reduce them,
    paste them in place; returns the strip's last row, reconstructed."""
    count = len(rows) // (1 + header.row_bytes)
    png = _png(header, count + 1, b"\x00" + above + rows)
    with Image.open(png) as strip:
        strip.load()
        last = strip.crop((0, count, header.width, count + 1)).tobytes()
        pixels = strip.crop((0, 1, header.width, count + 1))
    if pixels.mode != mode:
        pixels = pixels.convert(mode)
    result.paste(pixels.reduce(factor), (0, top // factor))
    return last


def _png(header: _Header, height: int, filtered: bytes) -> BinaryIO:
    import io

    ihdr = struct.pack(">I", header.width) + struct.pack(">I", height) + header.ihdr[8:]
    chunks = [(b"IHDR", ihdr), *header.carried, (b"IDAT", zlib.compress(filtered, 0)),
              (b"IEND", b"")]  # fmt: skip
    out = io.BytesIO()
    out.write(SIGNATURE)
    for kind, data in chunks:
        out.write(struct.pack(">I", len(data)) + kind + data)
        out.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    out.seek(0)
    return out


def _read_header(f: BinaryIO) -> _Header | None:
    """IHDR and the chunks each strip needs; `f` is left at the first IDAT's data."""
    if f.read(8) != SIGNATURE:
        return None
    ihdr, carried = None, []
    while True:
        head = f.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I", head[:4])[0], head[4:]
        if kind == b"IDAT":
            f.seek(-8, 1)
            return None if ihdr is None or len(ihdr) < 13 else _Header(ihdr, carried)
        data = f.read(length)
        f.read(4)  # the CRC: Pillow checks it on each strip's copy
        if kind == b"IHDR":
            ihdr = data
        elif kind in _CARRIED:
            carried.append((kind, data))


def _image_data(f: BinaryIO) -> Iterator[bytes]:
    """The compressed image data of consecutive IDAT chunks, a piece at a time."""
    while True:
        head = f.read(8)
        if len(head) < 8 or head[4:] != b"IDAT":
            return
        left = struct.unpack(">I", head[:4])[0]
        while left > 0:
            piece = f.read(min(_PIECE, left))
            if not piece:
                return
            left -= len(piece)
            yield piece
        f.read(4)  # CRC
