"""The words an index holds about each image, as one document per image for the keyword
index: its file and folder names (split into words), the captions and sidecar texts that
describe it, its XMP sidecar keywords and the titles and keywords embedded in the file (IPTC,
XMP), its stored zero-shot tags, its camera, and text read in it.

Everything here is read from the store, so the keyword index is a cache like FAISS: `stamp`
changes whenever any of these words can have changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from pathlib import PurePath

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipsearch.storage.db import WORDS_GENERATION, Database
from clipsearch.storage.schema import ROOTS_KEY, XMP, ImageRow, ImageTag, TextRow
from clipsearch.storage.texts import TEXT_GENERATION

#: The document's fields, in the keyword index's column order.
FIELDS = ("name", "folder", "caption", "keywords", "tags", "camera", "ocr")
#: Folders above a file that count as its words (".../2021/Paris trip/IMG_1.jpg").
FOLDER_DEPTH = 3

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Document:
    name: str = ""
    folder: str = ""
    caption: str = ""
    keywords: str = ""
    tags: str = ""
    camera: str = ""
    ocr: str = ""

    def fields(self) -> tuple[str, ...]:
        return astuple(self)


def split_words(text: str) -> str:
    """ "golden_gate-bridgeAtNight" -> "golden gate bridge At Night"."""
    return " ".join(_NOT_WORD.sub(" ", _CAMEL.sub(" ", text)).split())


def path_words(path: str, roots: Sequence[str] = ()) -> tuple[str, str]:
    """(the file name's words without its extension, the words of the nearest folders
    below the indexed folder that holds it: "photos" in every path says nothing)."""
    pure = PurePath(path)
    parts = pure.parent.parts
    below = [len(PurePath(r).parts) for r in roots if pure.is_relative_to(r)]
    if below:
        parts = parts[max(below) :]
    folders = parts[-FOLDER_DEPTH:]
    return split_words(pure.stem), " ".join(split_words(f) for f in folders if f != "/")


def _roots(meta: dict[str, str]) -> list[str]:
    try:
        return [str(r) for r in json.loads(meta.get(ROOTS_KEY, "[]"))]
    except ValueError:
        return []


def stamp(db: Database) -> str:
    """Changes whenever an image's words can have changed (images, texts, tags, OCR, the
    indexed folders)."""
    meta = db.get_meta()
    counters = [meta.get(k, "0") for k in ("generation", TEXT_GENERATION, WORDS_GENERATION)]
    roots = hashlib.sha1(meta.get(ROOTS_KEY, "").encode()).hexdigest()[:8]
    return ".".join([*counters, roots])


def documents(db: Database, after: int = 0) -> Iterator[tuple[int, str, Callable[[], Document]]]:
    """(image id, digest, the document) for every image (with `after`: every image whose
    id is above it, those added since), in id order. The digest is taken from what the
    document is made of, so an unchanged image costs a hash and no more; the document
    itself is made only when asked for."""
    roots = _roots(db.get_meta())
    roots_key = "\x1e".join(roots)
    columns = (ImageRow.id, ImageRow.path, ImageRow.camera, ImageRow.ocr, ImageRow.embedded)
    with Session(db.engine) as session:
        captions: dict[str, list[str]] = defaultdict(list)
        for image_path, text in session.execute(
            select(TextRow.image_path, TextRow.text).where(TextRow.image_path.is_not(None))
        ):
            if image_path is not None:
                captions[image_path].append(text)
        keywords: dict[int, list[str]] = defaultdict(list)
        tags: dict[int, list[str]] = defaultdict(list)
        held_tags = select(ImageTag.image_id, ImageTag.tag, ImageTag.origin)
        for image_id, tag, origin in session.execute(held_tags.where(ImageTag.image_id > after)):
            (keywords if origin == XMP else tags)[image_id].append(tag)
        rows = session.execute(select(*columns).where(ImageRow.id > after).order_by(ImageRow.id))
        for image_id, path, camera, ocr, embedded in rows:
            held = sorted(keywords.get(image_id, [])) + ([embedded] if embedded else [])
            parts = (
                path, roots_key, " \n".join(dict.fromkeys(captions.get(path, []))),
                " ; ".join(held), " ; ".join(sorted(tags.get(image_id, []))), camera or "",
                ocr or "",
            )  # fmt: skip
            digest = hashlib.sha1("\x1f".join(parts).encode()).hexdigest()
            yield image_id, digest, functools.partial(_document, parts, roots)


def _document(parts: tuple[str, ...], roots: list[str]) -> Document:
    path, _, caption, keywords, tags, camera, ocr = parts
    name, folder = path_words(path, roots)
    return Document(name, folder, caption, keywords, tags, camera, ocr)


def changed_documents(
    docs: Iterator[tuple[int, str, Callable[[], Document]]], held: dict[int, str]
) -> Iterator[tuple[int, str, Document]]:
    """(id, digest, document) of the images whose digest differs from the one a keyword
    index `held`; each image seen is taken out of `held`, so once this is exhausted `held`
    names the images that are gone."""
    for image_id, digest, make in docs:
        if held.pop(image_id, None) != digest:
            yield image_id, digest, make()
