"""The index's text collection: texts embedded in the images' space and searched like them
(image→text "retrieval captioning", text→text), from captions CSVs, JSONL files, tag
vocabularies and sidecar descriptions next to images.

Texts live in the same database as the images (source of truth) with their own FAISS cache
(`texts.faiss`), rebuilt from the stored vectors whenever the texts change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.arrays import Matrix
from clipsearch.errors import QueryError, TextSourceError
from clipsearch.facts import SidecarSummary, Skip
from clipsearch.indexer import text_sources as ts
from clipsearch.indexer.scan import FileStat
from clipsearch.search.prompts import TAG_TEMPLATES, prompt_vectors
from clipsearch.search.searcher import Match, Searcher, positions_of
from clipsearch.storage import vector_index as vi
from clipsearch.storage.schema import XMP, TextSource
from clipsearch.storage.texts import SourceFile, TextRecord, TextTable

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from clipsearch.adapters.space import SearchSpace
    from clipsearch.models.base import ModelInfo
    from clipsearch.storage.db import Database


class TextsHost(Protocol):
    """What the text collection needs of the index it belongs to (an `Index`)."""

    db: Database

    @property
    def model_info(self) -> ModelInfo | None: ...

    @property
    def cache_dir(self) -> Path: ...

    def writing(self, shared: bool = False) -> AbstractContextManager[None]: ...

    def space(self) -> SearchSpace: ...

    def record_model(self) -> ModelInfo: ...

    def encode_raw_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]: ...


#: The path recorded for the vocabulary shipped with clipsearch.
BUILTIN_VOCABULARY = "builtin:vocabulary"
#: With `distinct`, how many more hits to fetch than asked, to fill k after merging repeats.
DISTINCT_OVERSAMPLE = 4


@dataclass(frozen=True)
class TextHit:
    """One text found by a search."""

    id: int
    text: str
    score: float
    kind: str  # captions | jsonl | vocabulary | sidecar
    source: str  # the file it came from
    key: str | None = None  # JSONL id, vocabulary term, XMP field
    image_path: str | None = None  # the image it describes, if any
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextSummary:
    """What adding one text source did."""

    source: str
    kind: str
    texts: int
    encoded: int  # texts that went through the model (the rest were unchanged)
    unchanged: bool  # the file was already indexed as it is
    #: Texts naming an image file that does not exist (wrong base folder? see `images`).
    missing_images: int = 0
    first_missing: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best_of_each_text(row: list[Match]) -> list[Match]:
    """The first (best, since rows come best first) match of each distinct text, in order."""
    best: dict[str, Match] = {}
    for match in row:
        best.setdefault(match.label, match)
    return list(best.values())


class TextCollection:
    """The texts of one `Index` (reached as `index.texts`)."""

    def __init__(self, index: TextsHost) -> None:
        self.index = index
        self.table = TextTable(index.db)
        self._faiss: vi.IdIndex | None = None
        self._faiss_identity = ""

    # -- adding ---------------------------------------------------------------------------

    def add(
        self,
        path: str | os.PathLike[str],
        kind: str | None = None,
        images: str | os.PathLike[str] | None = None,
    ) -> TextSummary:
        """Index a captions CSV, a JSONL file or a vocabulary (kind from the file name unless
        given). Re-adding an unchanged file does nothing; a changed one replaces its texts,
        re-encoding only texts that are new. Image paths in the file are relative to
        `images` if given, else to the file's folder; the summary counts those that name
        no existing file."""
        source_path = Path(os.path.abspath(Path(path).expanduser()))
        kind = kind or ts.detect_kind(source_path)
        data = ts.read_source(source_path)
        st = source_path.stat()
        base = Path(os.path.abspath(Path(images).expanduser())) if images is not None else None
        # The image folder is part of what was read: a re-add with another one is a change.
        digest = ts.file_digest(data if base is None else data + b"\0images=" + bytes(base))
        source = SourceFile(kind, str(source_path), digest, st.st_size, st.st_mtime_ns)
        entries = ts.read_entries(source_path, kind, data, base)
        summary = self._replace_locked(source, entries)
        missing = [
            e.image_path for e in entries if e.image_path and not os.path.exists(e.image_path)
        ]
        if missing:
            summary = replace(summary, missing_images=len(missing), first_missing=missing[0])
        return summary

    def add_builtin_vocabulary(self) -> TextSummary:
        data = ts.builtin_vocabulary()
        source = SourceFile(ts.VOCABULARY, BUILTIN_VOCABULARY, ts.file_digest(data), len(data), 0)
        content = ts.decode_utf8(Path(BUILTIN_VOCABULARY), data)
        entries = [ts.TextEntry(t, key=t) for t in ts.parse_vocabulary(content)]
        return self._replace_locked(source, entries)

    def _replace_locked(self, source: SourceFile, entries: Sequence[ts.TextEntry]) -> TextSummary:
        """`_replace` under the writer lock, which an unchanged source does not need (a
        server tagging during an indexing job must not wait for the job)."""
        unchanged = self._unchanged(source, self.table.source(source.path))
        if unchanged is not None:
            return unchanged
        with self.index.writing():
            return self._replace(source, entries)

    def _unchanged(self, source: SourceFile, known: TextSource | None) -> TextSummary | None:
        """The summary of a source stored as it is now, or None if it changed (or is new)."""
        if known is not None and known.sha256 == source.sha256 and known.kind == source.kind:
            count = len(self.table.ids_of(source=source.path))
            return TextSummary(source.path, source.kind, count, 0, True)
        return None

    def _replace(self, source: SourceFile, entries: Sequence[ts.TextEntry]) -> TextSummary:
        known = self.table.source(source.path)  # read again: another writer may have been first
        unchanged = self._unchanged(source, known)
        if unchanged is not None:
            return unchanged
        self.index.record_model()
        reuse = self.table.vectors_by_text(source.path) if known is not None else {}
        fresh = list(dict.fromkeys(e.text for e in entries if e.text not in reuse))
        if fresh:
            reuse.update(zip(fresh, self._embed(fresh, source.kind), strict=True))
        records = [
            TextRecord(e.text, reuse[e.text], e.key, e.image_path, e.metadata) for e in entries
        ]
        self.table.replace_source(source, records)
        self._faiss = None
        return TextSummary(source.path, source.kind, len(records), len(fresh), False)

    def _embed(self, texts: list[str], kind: str) -> Matrix:
        encode = self.index.encode_raw_texts  # with a progress bar when there are many
        if kind == ts.VOCABULARY:  # bare terms: prompt-ensembled, as in zero-shot CLIP
            return prompt_vectors(encode, texts, TAG_TEMPLATES)
        return np.asarray(encode(texts), dtype=np.float32)

    def remove(self, path: str) -> int:
        """Drop a text source (as listed by `sources()`) and its texts."""
        target = path if path == BUILTIN_VOCABULARY else os.path.abspath(os.path.expanduser(path))
        with self.index.writing():
            removed = self.table.remove_sources([target])
        if not removed:
            raise TextSourceError(f"no text source {target} in this index")
        self._faiss = None
        return removed

    def sync_sidecars(
        self, roots: Sequence[Path], images: Sequence[str], sidecars: Sequence[FileStat]
    ) -> SidecarSummary:
        """Index the `.txt` / `.xmp` descriptions beside these images, drop those of sidecar
        files that left the given roots, and keep XMP keywords as tags on their images."""
        summary = SidecarSummary()
        matched = ts.match_sidecars(images, [s.path for s in sidecars])
        stats = {s.path: s for s in sidecars}
        ids_by_path = self.index.db.ids_by_path()
        known = self.table.file_stats(ts.SIDECAR)  # one query, not one per sidecar
        for sidecar_path, image_path in sorted(matched.items()):
            st = stats[sidecar_path]
            if known.get(sidecar_path) == (st.size, st.mtime_ns):
                continue
            try:
                data = ts.read_bytes(Path(sidecar_path))
                content = ts.read_sidecar(Path(sidecar_path), image_path, data)
            except TextSourceError as exc:
                summary.skipped.append(Skip(sidecar_path, str(exc).split(": ", 1)[-1]))
                continue
            source = SourceFile(
                ts.SIDECAR, sidecar_path, ts.file_digest(data), st.size, st.mtime_ns
            )
            self._replace(source, content.texts)
            if image_path in ids_by_path:
                keywords = {k: 1.0 for k in content.keywords}
                self.table.set_tags({ids_by_path[image_path]: list(keywords.items())}, XMP)
            summary.added += 1
        prefixes = tuple(str(r).rstrip(os.sep) + os.sep for r in roots)
        root_files = {str(r) for r in roots}
        gone = [
            path
            for path in known
            if (path.startswith(prefixes) or path in root_files) and path not in matched
        ]
        summary.removed = self.table.remove_sources(gone)
        if summary.added or summary.removed:
            self._faiss = None
        return summary

    # -- searching ------------------------------------------------------------------------

    def vector_index(self) -> vi.IdIndex:
        if self.index.model_info is None or self.table.count() == 0:
            raise QueryError(
                "this index holds no texts; add some with `clipsearch texts add FILE` "
                "(captions CSV, JSONL or vocabulary), or sidecar .txt/.xmp files"
            )
        space = self.index.space()
        stale = self._faiss is not None and self._faiss.generation != self.table.generation()
        if self._faiss is None or stale or self._faiss_identity != space.identity:
            self._faiss = vi.FaissBackend(
                space.text_store(self.table), self.index.cache_dir, space.identity, space.dim,
                vi.TEXTS, vi.choose_index("auto", self.table.count()),
            ).open()  # fmt: skip
            self._faiss_identity = space.identity
        return self._faiss

    def vectors_in_space(self, ids: Sequence[int]) -> Matrix:
        """These texts' vectors in the search space (through the active adapter), in order."""
        store = self.index.space().text_store(self.table)
        found, _, vectors = store.vectors_for(list(ids))
        rows = positions_of(found, np.asarray(ids))
        if (rows < 0).any():
            raise QueryError("some texts are gone from the index; run the command again")
        ordered: Matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[rows])
        return ordered

    def ids_of(self, kind: str | None = None, source: str | None = None) -> np.ndarray[Any, Any]:
        return self.table.ids_of(kind=kind, source=source)

    def search_vectors(
        self,
        queries: Matrix,
        k: int = 10,
        kind: str | None = None,
        source: str | None = None,
        distinct: bool = False,
    ) -> list[list[TextHit]]:
        """Texts nearest to each unit query vector (Q, dim), best first; `kind` / `source`
        restrict to texts of that kind or from that source file; `distinct` keeps only the
        best of identical texts (five images captioned "a dog" give one hit)."""
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        faiss_index = self.vector_index()
        allowed = None
        if kind is not None or source is not None:
            allowed = self.ids_of(kind=kind, source=source)
        depth = k * DISTINCT_OVERSAMPLE if distinct else k
        store = self.index.space().text_store(self.table)
        matches = Searcher(store, faiss_index).search_many(
            np.asarray(queries, dtype=np.float32), depth, allowed
        )
        if distinct:
            matches = [_best_of_each_text(row)[:k] for row in matches]
        rows = self.table.rows([m.id for row in matches for m in row])
        return [[self._hit(m.id, m.score, rows) for m in row] for row in matches]

    @staticmethod
    def _hit(text_id: int, score: float, rows: dict[int, Any]) -> TextHit:
        text, source = rows[text_id]
        metadata = json.loads(text.metadata_json) if text.metadata_json else None
        return TextHit(
            text_id, text.text, score, source.kind, source.path, text.key, text.image_path,
            metadata,
        )  # fmt: skip
