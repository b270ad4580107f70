"""Reading texts to index: captions CSV, JSONL records, tag vocabularies, sidecar files.

Each reader returns `TextEntry`s (text, optional key, image it describes, metadata) or raises
`TextSourceError` listing the bad lines, so that a broken file changes nothing in the index.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from clipsearch.errors import TextSourceError
from clipsearch.names import is_text
from clipsearch.regular_files import read_named, read_regular

CAPTIONS, JSONL, VOCABULARY, SIDECAR = "captions", "jsonl", "vocabulary", "sidecar"
KINDS = (CAPTIONS, JSONL, VOCABULARY)
_BY_SUFFIX = {".csv": CAPTIONS, ".jsonl": JSONL, ".ndjson": JSONL, ".txt": VOCABULARY}
_MAX_SHOWN = 10


@dataclass(frozen=True)
class TextEntry:
    text: str
    key: str | None = None
    image_path: str | None = None  # absolute path of the image this text describes
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SidecarContent:
    texts: list[TextEntry]
    keywords: list[str]  # XMP dc:subject, stored as tags on the image


def detect_kind(path: Path) -> str:
    kind = _BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise TextSourceError(
            f"{path}: cannot tell the kind of text file from its name; pass --kind "
            f"({', '.join(KINDS)}): .csv = captions, .jsonl = records, .txt = vocabulary"
        )
    return kind


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: At most this much text is read from a pipe named as a source (`<(cmd)`).
MAX_PIPED = 1 << 30


def read_bytes(path: Path) -> bytes:
    """A file found in a folder (a sidecar): a regular file only."""
    try:
        return read_regular(path)
    except OSError as exc:
        raise TextSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_source(path: Path) -> bytes:
    """A file the user named: a regular file, or a pipe such as `<(cmd)`."""
    try:
        return read_named(path, MAX_PIPED)
    except OSError as exc:
        raise TextSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextSourceError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def _complain(path: Path, what: str, lines: Sequence[int]) -> TextSourceError:
    shown = ", ".join(map(str, lines[:_MAX_SHOWN])) + (" ..." if len(lines) > _MAX_SHOWN else "")
    return TextSourceError(f"{path}: {what} on line(s) {shown}; nothing was added")


def _resolve(base: Path, image: str) -> str:
    return os.path.abspath(base / os.path.expanduser(image))


def read_entries(path: Path, kind: str, data: bytes, images: Path | None = None) -> list[TextEntry]:
    """The entries of one source file of the given kind; image paths in it are relative to
    `images`, or else to the file's own folder."""
    content = decode_utf8(path, data)
    base = images if images is not None else path.parent
    if kind == CAPTIONS:
        return [
            TextEntry(caption, key=image, image_path=_resolve(base, image))
            for image, caption in parse_captions(path, content)
        ]
    if kind == JSONL:
        return _jsonl(path, content, base)
    if kind == VOCABULARY:
        return [TextEntry(term, key=term) for term in parse_vocabulary(content)]
    raise TextSourceError(f"unknown kind of text file {kind!r}; one of {', '.join(KINDS)}")


def parse_captions(path: Path, content: str) -> list[tuple[str, str]]:
    """(image, caption) rows of a CSV with an `image,caption` header."""
    reader = csv.DictReader(content.splitlines())
    if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
        raise TextSourceError(f"{path}: needs a header with 'image' and 'caption' columns")
    rows = [((r["image"] or "").strip(), (r["caption"] or "").strip()) for r in reader]
    empty = [i + 2 for i, (image, caption) in enumerate(rows) if not image or not caption]
    if empty:
        raise _complain(path, "empty image or caption", empty)
    if not rows:
        raise TextSourceError(f"{path}: no captions")
    return rows


def read_captions(path: Path) -> list[tuple[str, str]]:
    """(image, caption) rows of a CSV with an `image,caption` header; bad rows are an error."""
    return parse_captions(path, decode_utf8(path, read_source(path)))


def _jsonl(path: Path, content: str, base: Path) -> list[TextEntry]:
    entries, bad = [], []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            bad.append(number)
            continue
        extra = {k: v for k, v in record.items() if k not in ("id", "text", "image")}
        image = record.get("image")
        # JSON can escape a lone surrogate ("\ud800"): valid JSON, not storable text.
        if not all(is_text(v) for v in (text, image, record.get("id")) if isinstance(v, str)):
            bad.append(number)
            continue
        entries.append(
            TextEntry(
                text.strip(),
                key=None if record.get("id") is None else str(record["id"]),
                image_path=_resolve(base, image) if isinstance(image, str) else None,
                metadata=extra,
            )
        )
    if bad:
        raise _complain(path, 'not a JSON object with a non-empty, valid "text"', bad)
    if not entries:
        raise TextSourceError(f"{path}: no records")
    return entries


def builtin_vocabulary() -> bytes:
    """The tag vocabulary shipped with clipsearch (`clipsearch/data/vocabulary.txt`)."""
    return resources.files("clipsearch").joinpath("data/vocabulary.txt").read_bytes()


def parse_vocabulary(content: str) -> list[str]:
    """One term per line; blank lines and `#` comments skipped; first occurrence kept."""
    seen: dict[str, None] = {}
    for line in content.splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            seen.setdefault(term, None)
    return list(seen)


# -- sidecars -----------------------------------------------------------------------------


def match_sidecars(images: Iterable[str], candidates: Iterable[str]) -> dict[str, str]:
    """Sidecar path -> image path, for `photo.jpg.txt`, `photo.txt`, `photo.xmp` and
    `photo.jpg.xmp` beside `photo.jpg`. A sidecar two images could claim goes to the first
    by path."""
    by_stem: dict[str, str] = {}
    for image in sorted(images):
        by_stem.setdefault(image, image)
        by_stem.setdefault(os.path.splitext(image)[0], image)
    out = {}
    for sidecar in candidates:
        stem = os.path.splitext(sidecar)[0]
        if stem in by_stem:
            out[sidecar] = by_stem[stem]
    return out


_NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def read_sidecar(path: Path, image_path: str, data: bytes) -> SidecarContent:
    """A `.txt` sidecar is one description; an `.xmp` one gives dc:title and dc:description
    as texts and dc:subject keywords as tags."""
    content = decode_utf8(path, data)
    if path.suffix.lower() == ".txt":
        text = " ".join(content.split())
        return SidecarContent([TextEntry(text, image_path=image_path)] if text else [], [])
    try:
        described, keywords = xmp_fields(content)
    except ElementTree.ParseError as exc:
        raise TextSourceError(f"{path}: not valid XMP/XML ({exc})") from exc
    texts = [TextEntry(value, key=name, image_path=image_path) for name, value in described]
    return SidecarContent(texts, keywords)


def xmp_fields(content: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(("title" or "description", text) pairs, keywords) of an XMP packet (dc:title,
    dc:description, dc:subject); raises `ElementTree.ParseError` for malformed XML."""
    root = ElementTree.fromstring(content)
    described = []
    for field_name in ("title", "description"):
        for item in root.iterfind(f".//dc:{field_name}//rdf:li", _NS):
            value = " ".join((item.text or "").split())
            if value:
                described.append((field_name, value))
    keywords = [
        " ".join((li.text or "").split()) for li in root.iterfind(".//dc:subject//rdf:li", _NS)
    ]
    return described, [k for k in keywords if k]
