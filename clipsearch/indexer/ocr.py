"""Text in photos (`clipsearch index --ocr`): Tesseract reads the words in signs, labels and
screenshots, and they go to the keyword index like any other words of the image.

Tesseract is slow (a few tenths of a second per photo here) and most photos hold no text, so
a cheap pre-check looks first (`text_layout`, a few milliseconds): it finds glyph-like blobs
(dark on light or light on dark, against the local background), strings those of a similar
height that sit side by side into lines, and keeps the lines that look like text (even
heights, a straight baseline, tight spacing). Only a photo with such a line is read, and the
lines tell how: the photo is cropped to them (with a margin), turned level by their slant
and scaled so that letters are about `TARGET_HEIGHT` pixels tall, the size Tesseract reads
best.

An image's text is stored with it (`images.ocr`): NULL until read, '' when the pre-check or
Tesseract found none; a changed file is read again.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from clipsearch.errors import ConfigError, ImageDecodeError
from clipsearch.facts import Skip
from clipsearch.indexer.decode import load_upright
from clipsearch.storage.db import Database

#: The pre-check works on the photo shrunk to this long side.
CHECK_SIDE = 800
#: Local contrast (0-255) a pixel needs against its neighbourhood to count as ink.
INK_CONTRAST = 28
#: Letters are scaled to about this height (pixels) before Tesseract reads them.
TARGET_HEIGHT = 32
MIN_GLYPHS = 4  # blobs in a row for a text line (a four-letter word)
#: The most a line's letter heights may vary (standard deviation over mean): lower case
#: with ascenders and descenders ("shooting") spreads more than capitals.
HEIGHT_SPREAD = 0.45
#: JPEGs decode at the smallest DCT scale that keeps at least this many pixels a side.
OCR_DRAFT = 2048
OCR_BATCH = 32  # images read between two commits
#: Around a text line, this many letter heights are kept for Tesseract (sideways, up/down).
LINE_MARGIN = (1.0, 0.6)
REGION_MARGIN = (2.0, 2.0)
MAX_LINES = 12  # lines read per photo, the longest first
_WORD = re.compile(r"\w{2,}", re.UNICODE)


@dataclass(frozen=True)
class TextLine:
    """One text-like line the pre-check saw: its letters' height, its slant (degrees,
    positive when it rises to the right) and its box (left, top, right, bottom), in the
    photo's pixels, and how many glyphs it strings together."""

    glyphs: int
    height: float
    angle: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class TextLayout:
    """The text-like lines of a photo, most glyphs first."""

    lines: list[TextLine]

    @property
    def height(self) -> float:
        return self.lines[0].height

    @property
    def angle(self) -> float:
        return self.lines[0].angle


def require_tesseract() -> None:
    """Fail with what to install when Tesseract or its Python binding is missing."""
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--ocr needs pytesseract: pip install 'clipsearch[ocr]' (and Tesseract itself: "
            "apt install tesseract-ocr)"
        ) from None
    if shutil.which("tesseract") is None:
        raise ConfigError(
            "--ocr needs the tesseract program: apt install tesseract-ocr (Debian/Ubuntu) "
            "or brew install tesseract (macOS)"
        )


def text_layout(image: Image.Image) -> TextLayout | None:
    """The text-like lines in a photo, or None when it shows none (the cheap pre-check)."""
    gray = ImageOps.grayscale(image)
    scale = min(1.0, CHECK_SIDE / max(gray.size))
    if scale < 1:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))))
    lines = [
        TextLine(n, height / scale, angle, (box[0] / scale, box[1] / scale, box[2] / scale,
                                           box[3] / scale))
        for n, height, angle, box in _text_lines(np.asarray(gray, dtype=np.float32))
    ]  # fmt: skip
    if not lines:
        return None
    return TextLayout(sorted(lines, key=lambda line: -line.glyphs))


def read_text(image: Image.Image, layout: TextLayout) -> str:
    """The words Tesseract reads in a photo's text lines: each of the `MAX_LINES` longest
    lines cut out with a margin, turned level by its own slant, scaled so that its letters
    are about `TARGET_HEIGHT` pixels tall, and read as one line of text. A line of letters
    on a plate, alone, is what Tesseract reads best; the whole photo around it (a dark or
    busy scene) throws its page-wide binarisation off."""
    import pytesseract

    gray = ImageOps.grayscale(image)
    words: dict[str, None] = {}
    lines = _merged(layout.lines)
    # The region of all the lines, read as a page (blocks, else sparse text), and each line.
    region = TextLine(
        sum(line.glyphs for line in lines), layout.height, layout.angle,
        (min(line.box[0] for line in lines), min(line.box[1] for line in lines),
         max(line.box[2] for line in lines), max(line.box[3] for line in lines)),
    )  # fmt: skip
    readings = [(_level(gray, region, REGION_MARGIN), psm) for psm in ("3", "11")]
    readings += [(_level(gray, line, LINE_MARGIN), "7") for line in lines[:MAX_LINES]]
    for n, (piece, psm) in enumerate(readings):
        if n == 1 and words:
            continue  # sparse text only where reading the region as a page found nothing
        text = pytesseract.image_to_string(piece, config=f"--psm {psm}")
        words.update(dict.fromkeys(_WORD.findall(text)))
    return " ".join(words)


def _merged(lines: list[TextLine]) -> list[TextLine]:
    """Pieces of one line (words the pre-check strung apart) joined: lines of about the
    same height whose boxes overlap vertically and lie side by side; most glyphs first."""
    out: list[TextLine] = []
    for line in sorted(lines, key=lambda item: item.box[0]):
        for n, kept in enumerate(out):
            same_row = abs((kept.box[1] + kept.box[3]) - (line.box[1] + line.box[3])) / 2 < (
                0.5 * max(kept.height, line.height)
            )
            near = line.box[0] - kept.box[2] < 3 * max(kept.height, line.height)
            if (
                same_row
                and near
                and max(kept.height, line.height) / min(kept.height, line.height) < 1.5
            ):
                box = (min(kept.box[0], line.box[0]), min(kept.box[1], line.box[1]),
                       max(kept.box[2], line.box[2]), max(kept.box[3], line.box[3]))  # fmt: skip
                glyphs = kept.glyphs + line.glyphs
                longer = kept if kept.glyphs >= line.glyphs else line
                out[n] = TextLine(glyphs, longer.height, longer.angle, box)
                break
        else:
            out.append(line)
    return sorted(out, key=lambda item: -item.glyphs)


def _level(gray: Image.Image, line: TextLine, margin: tuple[float, float]) -> Image.Image:
    """One line (or region) cut out with a margin (in letter heights: sideways, up and
    down), levelled and scaled for Tesseract."""
    left, top, right, bottom = line.box
    margin_x, margin_y = margin[0] * line.height, margin[1] * line.height
    # A slanted line's box is taller than its letters: keep what the slant adds, too.
    rise = abs(np.tan(np.radians(line.angle))) * (right - left) / 2
    piece = gray.crop((
        int(max(0, left - margin_x)), int(max(0, top - margin_y - rise)),
        int(min(gray.width, right + margin_x)), int(min(gray.height, bottom + margin_y + rise)),
    ))  # fmt: skip
    background = int(np.median(np.asarray(piece)))
    if abs(line.angle) > 1:
        piece = piece.rotate(
            -line.angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=background
        )
    scale = float(np.clip(TARGET_HEIGHT / max(line.height, 1.0), 0.5, 4.0))
    if abs(scale - 1) > 0.1:
        size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
        piece = piece.resize(size, Image.Resampling.LANCZOS)
    return piece


# -- the pre-check -------------------------------------------------------------------------


def _glyphs(gray: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """(centre y, centre x, height, width) of glyph-like blobs, dark and light ones."""
    from scipy import ndimage

    image = Image.fromarray(gray.astype(np.uint8))
    local = np.asarray(image.filter(ImageFilter.BoxBlur(12)), dtype=np.float32)
    out = []
    for ink in (gray < local - INK_CONTRAST, gray > local + INK_CONTRAST):
        labels, count = ndimage.label(ink)
        if count == 0:
            continue
        sizes = ndimage.sum_labels(ink, labels, index=np.arange(1, count + 1))
        for box, pixels in zip(ndimage.find_objects(labels), sizes, strict=True):
            if box is None:
                continue
            sy, sx = box
            h, w = sy.stop - sy.start, sx.stop - sx.start
            if (
                8 <= h <= 150
                and pixels >= 20
                and 0.08 <= w / h <= 2.5
                and (0.12 <= pixels / (h * w) <= 0.95)
            ):
                out.append(((sy.start + sy.stop) / 2, (sx.start + sx.stop) / 2, h, w))
    return np.array(out, dtype=np.float32).reshape(-1, 4)


def _rows(glyphs: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """Glyphs joined with neighbours of a similar height beside them, in left-to-right
    order; groups of at least MIN_GLYPHS."""
    n = len(glyphs)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = np.argsort(glyphs[:, 1])
    for position, a in enumerate(order):
        ya, xa, ha, wa = glyphs[a]
        for b in order[position + 1 :]:
            yb, xb, hb, wb = glyphs[b]
            if xb - xa > (wa + wb) / 2 + 1.2 * max(ha, hb):
                break
            if max(ha, hb) / min(ha, hb) <= 1.6 and abs(ya - yb) <= 0.45 * max(ha, hb):
                parent[root(int(a))] = root(int(b))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [glyphs[sorted(g, key=lambda i: glyphs[i, 1])] for g in groups.values()
            if len(g) >= MIN_GLYPHS]  # fmt: skip


def _text_lines(
    gray: np.ndarray[Any, Any],
) -> list[tuple[int, float, float, tuple[float, float, float, float]]]:
    """(glyphs, letter height, slant in degrees, box) of each row that looks like text."""
    out = []
    for row in _rows(_glyphs(gray)):
        heights = row[:, 2]
        if np.std(heights) / np.mean(heights) > HEIGHT_SPREAD:
            continue  # letters of a line are about as tall as each other
        slope, intercept = np.polyfit(row[:, 1], row[:, 0], 1)
        off_line = np.abs(row[:, 0] - (slope * row[:, 1] + intercept))
        if np.median(off_line) > 0.12 * np.median(heights):
            continue  # and sit on one straight line
        gaps = np.diff(row[:, 1]) - (row[1:, 3] + row[:-1, 3]) / 2
        if np.median(gaps) > 0.6 * np.median(heights):
            continue  # close together
        box = (
            float(np.min(row[:, 1] - row[:, 3] / 2)), float(np.min(row[:, 0] - row[:, 2] / 2)),
            float(np.max(row[:, 1] + row[:, 3] / 2)), float(np.max(row[:, 0] + row[:, 2] / 2)),
        )  # fmt: skip
        slant = -float(np.degrees(np.arctan(slope)))
        out.append((len(row), float(np.median(heights)), slant, box))
    return out


# -- reading a collection --------------------------------------------------------------------


@dataclass
class OcrSummary:
    """What one `--ocr` pass did: images read by Tesseract, images the pre-check passed
    over, images with words found, and those that could not be opened."""

    read: int = 0
    prechecked_out: int = 0
    with_text: int = 0
    failed: list[Skip] = field(default_factory=list)
    seconds: float = 0.0


def image_text(path: str, max_pixels: int) -> tuple[str, bool]:
    """(the words in one image file, whether Tesseract read it: False when the pre-check
    found no text). Raises `ImageDecodeError` for a file that cannot be opened."""
    image, _ = load_upright(path, OCR_DRAFT, max_pixels)
    layout = text_layout(image)
    if layout is None:
        return "", False
    return read_text(image, layout), True


def read_texts(
    db: Database,
    roots: Sequence[Path],
    max_pixels: int,
    workers: int,
    report: Callable[[int, int], None] = lambda done, total: None,
) -> OcrSummary:
    """Read the text of every image under `roots` not read yet, `workers` at a time (each
    one a Tesseract process); stored a batch at a time, so an interrupted pass goes on
    where it stopped."""
    require_tesseract()
    prefixes = [str(r).rstrip(os.sep) + os.sep for r in roots]
    pending = [(i, p) for i, p in db.unread_texts()
               if any(p.startswith(x) or p == x[:-1] for x in prefixes)]  # fmt: skip
    summary = OcrSummary()
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(pending), OCR_BATCH):
            batch = pending[start : start + OCR_BATCH]
            found = list(pool.map(lambda item: _one(item[1], max_pixels), batch))
            texts = {}
            for (image_id, path), (text, read, reason) in zip(batch, found, strict=True):
                if reason is not None:
                    summary.failed.append(Skip(path, reason))
                    continue
                texts[image_id] = text
                summary.read += read
                summary.prechecked_out += not read
                summary.with_text += bool(text)
            db.set_texts_read(texts)
            report(start + len(batch), len(pending))
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _one(path: str, max_pixels: int) -> tuple[str, bool, str | None]:
    try:
        text, read = image_text(path, max_pixels)
    except ImageDecodeError as exc:
        return "", False, exc.reason
    return text, read, None
