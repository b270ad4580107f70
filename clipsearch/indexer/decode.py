"""Read one image file and turn it into the model's input tensor, or say why not.

Runs in decoding worker processes. The file is read once: the same bytes are hashed (for
change and move detection) and decoded.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO
from xml.etree import ElementTree

from PIL import Image, IptcImagePlugin, UnidentifiedImageError

from clipsearch.errors import ImageDecodeError
from clipsearch.indexer import png_strips
from clipsearch.indexer.text_sources import xmp_fields
from clipsearch.models.base import Pixels
from clipsearch.regular_files import open_regular, sha256_of

#: Refuse images above this many pixels (decompression-bomb guard); ~150 MP is larger than
#: any camera or phone panorama, far smaller than a crafted 50,000 x 50,000 PNG.
DEFAULT_MAX_PIXELS = 150_000_000

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_MAKE = 271
_MODEL = 272
_ORIENTATION = 274
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageFacts:
    sha256: str
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str | None
    taken_at: str | None
    camera: str | None = None  # EXIF make and model
    #: Titles, descriptions and keywords embedded in the file (IPTC, XMP), one text.
    embedded: str | None = None


#: How every "over the pixel limit" reason starts (a server answers those with 413).
TOO_LARGE = "image too large"
#: The models see the central square of a picture (short side resized to the input size,
#: then centre-cropped). A strip longer than this many squares is cropped to its centre
#: first: the pixels cut away were never seen, and resizing a 100000x1 strip to a 224-pixel
#: short side would need 22 million x 224 pixels of memory.
MAX_ASPECT = 4


@dataclass(frozen=True)
class DecodedImage:
    pixels: Pixels
    facts: ImageFacts


def register_heif() -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def decode_image(
    path: str,
    preprocess: Callable[[Image.Image], Pixels],
    input_size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """The model's input tensor for an image file, and the facts stored with it."""
    image, facts = load_upright(path, input_size, max_pixels)
    try:
        pixels = preprocess(central_strip(image))
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(path, f"corrupt or truncated image data: {exc}") from exc
    return DecodedImage(pixels, facts)


def load_upright(
    path: str, draft_size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, ImageFacts]:
    """An image file decoded to RGB the right way up (EXIF orientation applied) and no
    larger than it needs to be: JPEGs at the smallest DCT scale, other large images reduced
    by a whole factor (PNGs strip by strip), never below `draft_size` on the short side.
    Every way it can fail is an `ImageDecodeError` with a reason. A file of up to
    `READ_WHOLE` bytes is read once for its hash and its pixels; a larger one is hashed as
    it is read, then decoded from the file, never held whole in memory."""
    try:
        with open_regular(path) as (f, size):
            if size == 0:
                raise ImageDecodeError(path, "empty file (0 bytes)")
            # No more bytes than an uncompressed 16-bit RGBA image at the limit could take.
            limit = max(max_pixels, 1 << 20) * 8
            if size > limit:
                raise ImageDecodeError(
                    path, f"unreadable: too large to read ({size:,} bytes, the limit is "
                    f"{limit:,}); raise --max-pixels to read it"
                )  # fmt: skip
            if size <= READ_WHOLE:  # one read feeds the hash and the decode, as photos are
                data = f.read(size)
                sha256 = hashlib.sha256(data).hexdigest()
                return _decode(path, io.BytesIO(data), sha256, draft_size, max_pixels)
            sha256 = sha256_of(f, size)
            f.seek(0)
            return _decode(path, f, sha256, draft_size, max_pixels)
    except OSError as exc:
        raise ImageDecodeError(path, f"unreadable: {exc.strerror or exc}") from exc


#: Files up to this size are read once into memory, hashed and decoded from there (every
#: photo); larger ones are hashed as they are read, then decoded from the file.
READ_WHOLE = 64 << 20


def _decode(
    path: str, f: BinaryIO, sha256: str, draft_size: int, max_pixels: int
) -> tuple[Image.Image, ImageFacts]:
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # the caller asked for more than Pillow's default
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(f)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(path, _too_large(width, height, max_pixels))
        exif = _exif(image)
        orientation = exif.get(_ORIENTATION)
        if orientation in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        fmt = image.format
        upright = _transposed(_small(image, f, draft_size), orientation).convert("RGB")
        embedded = embedded_words(image)  # after decoding: a PNG's text may follow its pixels
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own wording names its limit, not ours: say it in the same words as above.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} MP " if found else ""
        raise ImageDecodeError(
            path,
            f"{TOO_LARGE}: {size}exceeds the {max_pixels / 1e6:.0f} MP limit "
            "(decompression-bomb guard); raise it with --max-pixels",
        ) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, zlib.error, struct.error) as exc:
        raise ImageDecodeError(path, f"corrupt or truncated image data: {exc}") from exc
    facts = ImageFacts(sha256, width, height, fmt, _taken_at(exif), _camera(exif), embedded)
    return upright, facts


#: Above this many pixels, an image other than a JPEG is reduced right after decoding (a
#: PNG while decoding), before any copy: the copies, not the decode, made a 144 MP PNG
#: peak at 1.6 GB.
REDUCE_ABOVE = 16_000_000
#: Modes reduced as they are; others go to RGB first (reducing RGBA premultiplies by alpha:
#: transparent areas would turn black, where dropping alpha keeps their colour).
_REDUCIBLE = frozenset({"L", "RGB"})


def _small(image: Image.Image, f: BinaryIO, draft_size: int) -> Image.Image:
    """The image decoded at the smallest size at least `draft_size` on the short side that
    its format allows cheaply."""
    if image.format == "JPEG":
        # Decode straight from the DCT at 1/2, 1/4 or 1/8 scale when the photo is much
        # larger than the target, never below the target itself (so what follows still
        # only shrinks). 1x rather than a 2x margin: a 3000x2000 photo for a 224 model
        # then decodes at 1/8 instead of 1/4, which is cheaper again.
        image.draft("RGB", (draft_size, draft_size))
        return image
    factor = min(image.size) // max(draft_size, 1)
    if factor < 2 or image.size[0] * image.size[1] <= REDUCE_ABOVE:
        return image
    if image.format == "PNG":
        strips = png_strips.reduced(f, factor)
        if strips is not None:
            return strips
    image.load()
    if image.mode not in _REDUCIBLE:
        image = image.convert("RGB")  # alpha dropped before reducing, as before
    return image.reduce(factor)


def _exif(image: Image.Image) -> Image.Exif:
    """The image's EXIF, without decoding a large PNG's pixels to find an eXIf chunk placed
    after them (Pillow would, for 432 MB at 144 MP); one before them is read."""
    large = image.size[0] * image.size[1] > REDUCE_ABOVE
    if image.format == "PNG" and large and "exif" not in image.info:
        return Image.Exif()
    return image.getexif()


#: EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip


def _transposed(image: Image.Image, orientation: object) -> Image.Image:
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def central_strip(image: Image.Image, max_aspect: int = MAX_ASPECT) -> Image.Image:
    """The image, or its centre `max_aspect` squares long if it is a longer strip."""
    width, height = image.size
    short = min(width, height)
    if max(width, height) <= max_aspect * short:
        return image
    keep = max_aspect * short
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"{TOO_LARGE}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the "
        f"{max_pixels / 1e6:.0f} MP limit (decompression-bomb guard); raise it with --max-pixels"
    )


#: IPTC-IIM datasets read as words: 2:05 object name (title), 2:25 keywords, 2:120 caption.
_IPTC_WORDS = ((2, 5), (2, 120), (2, 25))
_MAX_EMBEDDED = 10_000  # characters kept of a file's embedded words


def embedded_words(image: Image.Image) -> str | None:
    """The titles, descriptions and keywords a file carries inside it: IPTC-IIM (JPEG,
    TIFF) and an XMP packet (dc:title, dc:description, dc:subject). Malformed metadata is
    passed over: it never stops a photo from being indexed."""
    words: list[str] = []
    try:
        iptc = IptcImagePlugin.getiptcinfo(image) or {}  # type: ignore[arg-type]
    except (OSError, ValueError, SyntaxError, IndexError, TypeError):
        iptc = {}
    for key in _IPTC_WORDS:
        values = iptc.get(key, [])
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, bytes):
                words.append(" ".join(value.decode("utf-8", "replace").split()))
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(packet, bytes):
        packet = packet.decode("utf-8", "replace")
    if isinstance(packet, str) and packet.strip():
        try:
            described, keywords = xmp_fields(packet.strip().strip("\x00"))
        except ElementTree.ParseError:
            described, keywords = [], []
        words += [value for _, value in described] + keywords
    unique = " ; ".join(dict.fromkeys(w for w in words if w))
    return unique[:_MAX_EMBEDDED] or None


def _camera(exif: Image.Exif) -> str | None:
    """EXIF make and model, as one string ("Canon Canon EOS 5D" keeps both words)."""
    parts = []
    for tag in (_MAKE, _MODEL):
        raw = exif.get(tag)
        if isinstance(raw, str) and raw.strip("\x00 "):
            parts.append(" ".join(raw.strip("\x00 ").split())[:100])
    return " ".join(parts) or None


def _taken_at(exif: Image.Exif) -> str | None:
    raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
