"""`clipsearch verify`: check an index end to end without changing it.

Reads the database with plain `sqlite3`, read-only, so that a damaged file is described
rather than crashing on the way in. Checks, in order: the file opens and SQLite's own
integrity check passes; the tables are there; every image and text vector has the right
length and finite values; each FAISS cache that vouches for the current data (its stamp
matches the generation) has the bytes its stamp describes and exactly the database's ids;
tags and texts point at rows that exist; the indexed files are still on disk as indexed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.storage.db import DB_FILENAME
from clipsearch.storage.dialect import read_only_uri
from clipsearch.storage.keyframes import FRAME_KEY_BASE
from clipsearch.storage.schema import SCHEMA_VERSION

#: Tables every current index has.
TABLES = (
    "meta", "images", "frames", "text_sources", "texts", "image_tags", "adapters", "query_cache",
)  # fmt: skip
#: At most this many problems of one kind are listed; the rest are counted.
LIST_LIMIT = 20
#: Less free space than this on the index's disk is reported as a full disk.
FULL_BELOW = 1 << 20


@dataclass(frozen=True)
class Problem:
    kind: str  # database | vector | cache | text | tag | file
    where: str  # a path, "image 12", "texts.faiss"
    detail: str


@dataclass
class VerifyReport:
    directory: str
    images: int = 0
    texts: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Problems beyond `LIST_LIMIT` per kind, counted only.
    unlisted: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, where: str, detail: str) -> None:
        if sum(p.kind == kind for p in self.problems) < LIST_LIMIT:
            self.problems.append(Problem(kind, where, detail))
        else:
            self.unlisted[kind] = self.unlisted.get(kind, 0) + 1

    def count(self, kind: str) -> int:
        return sum(p.kind == kind for p in self.problems) + self.unlisted.get(kind, 0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection that never creates, migrates or checkpoints anything."""
    conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=30)
    conn.execute("PRAGMA query_only=ON")
    return conn


def verify(directory: str | os.PathLike[str], *, files: bool = True) -> VerifyReport:
    """Check the index in `directory`; `files`: also stat every indexed file."""
    root = Path(directory).expanduser()
    report = VerifyReport(str(root))
    path = root / DB_FILENAME
    if not path.is_file():
        report.add("database", str(path), "no index database here")
        return report
    if path.stat().st_size == 0:
        report.add("database", str(path), "the database file is empty (0 bytes)")
        return report
    try:
        with contextlib.closing(connect_read_only(path)) as conn:
            _check(conn, root, report, files)
    except sqlite3.DatabaseError as exc:
        report.add("database", str(path), f"cannot be read: {exc}")
    _check_room(root, report)
    return report


def _check_room(root: Path, report: VerifyReport) -> None:
    """A folder that cannot be written is fine for searching (a note); a full disk makes
    every change fail (a problem)."""
    if not os.access(root, os.W_OK):
        report.notes.append(
            f"{root} is read-only: searches work, changes (index, texts, repair) do not"
        )
        return
    free = shutil.disk_usage(root).free
    if free < FULL_BELOW:
        report.add("disk", str(root), f"only {free:,} bytes free: writes to the index will fail")


def _check(conn: sqlite3.Connection, root: Path, report: VerifyReport, files: bool) -> None:
    path = str(root / DB_FILENAME)
    integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
    if integrity != ["ok"]:
        for line in integrity:
            report.add("database", path, f"integrity check: {line}")
    present = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
    missing = [t for t in TABLES if t not in present]
    if missing:
        report.add("database", path, f"missing tables: {', '.join(missing)}")
    if "meta" not in present:
        return
    meta = {str(k): str(v) for k, v in _rows(conn, "SELECT key, value FROM meta", report)}
    version = int(meta.get("schema_version", "0") or 0)
    if version != SCHEMA_VERSION:
        report.notes.append(f"schema version {version} (this clipsearch writes {SCHEMA_VERSION})")
    dim = int(meta.get("dim", "0") or 0)
    if "images" in present:
        image_ids = _check_vectors(conn, report, "images", "path", dim)
        report.images = len(image_ids)
        searched = image_ids  # the images' FAISS cache holds keyframes too, under their keys
        if "frames" in present:
            frame_ids = _check_vectors(conn, report, "frames", "image_id", dim)
            searched = np.concatenate([image_ids, frame_ids + FRAME_KEY_BASE])
        _check_cache(root, "vectors", meta, searched, report)
        if files:
            _check_files(conn, report)
    if "texts" in present:
        text_ids = _check_vectors(conn, report, "texts", "text", dim)
        report.texts = len(text_ids)
        _check_cache(root, "texts", meta, text_ids, report, key="text_generation")
        _check_orphans(conn, report, present)


def _rows(conn: sqlite3.Connection, sql: str, report: VerifyReport) -> Iterator[Any]:
    try:
        yield from conn.execute(sql)
    except sqlite3.DatabaseError as exc:
        report.add("database", sql.split(" FROM ")[-1].split()[0], f"unreadable: {exc}")


def _check_vectors(
    conn: sqlite3.Connection, report: VerifyReport, table: str, label: str, dim: int
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Every row's vector: the right length (float32 or float16 of `dim`) and finite;
    returns the ids of all rows."""
    ids: list[int] = []
    kind = "text" if table == "texts" else "vector"
    for row_id, name, blob in _rows(conn, f"SELECT id, {label}, vector FROM {table}", report):
        ids.append(int(row_id))
        fault = vector_fault(blob, dim)
        if fault:
            report.add(kind, f"{table[:-1]} {row_id} ({str(name)[:80]})", fault)
    return np.asarray(sorted(ids), dtype=np.int64)


def vector_fault(blob: Any, dim: int) -> str | None:
    """What is wrong with a stored vector blob (`repair` quarantines such rows), or None."""
    if not isinstance(blob, bytes):
        return "no vector stored"
    if not dim or len(blob) not in (4 * dim, 2 * dim):
        return f"vector of {len(blob)} bytes; {dim} values expected"
    vector = np.frombuffer(blob, dtype="<f4" if len(blob) == 4 * dim else "<f2")
    if not np.isfinite(vector).all():
        return "vector holds NaN or infinite values"
    if not vector.any():
        return "vector is all zeros"
    return None


def _check_cache(
    root: Path,
    name: str,
    meta: dict[str, str],
    ids: np.ndarray[Any, np.dtype[np.int64]],
    report: VerifyReport,
    key: str = "generation",
) -> None:
    """A cache that vouches for the current generation must hold exactly these ids, in the
    bytes its stamp describes. An older stamp is only stale: the next search rebuilds it."""
    from clipsearch.storage import vector_index as vi

    stamp = vi.read_stamp(root, name)
    index_path = root / f"{name}.faiss"
    generation = int(meta.get(key, "0") or 0)
    if stamp is None:
        if len(ids):
            report.notes.append(f"{name}.faiss: no valid stamp; built on next search")
        return
    if stamp.generation != generation:
        report.notes.append(
            f"{name}.faiss: stale (generation {stamp.generation}, database {generation}); "
            "rebuilt on next search"
        )
        return
    where = index_path.name
    try:
        size = index_path.stat().st_size
        choice = vi.IndexChoice(vi.family_of(stamp.kind), nprobe=1)
        index, crc = vi.read_index_checked(index_path, stamp.dim, choice)
    except (OSError, RuntimeError) as exc:
        report.add("cache", where, f"stamped current but unreadable: {exc}")
        return
    if (size, crc) != (stamp.size, stamp.crc32):
        report.add("cache", where, "bytes differ from its stamp (overwritten or truncated)")
        return
    held = np.sort(index.ids())
    if len(held) != len(ids) or not np.array_equal(held, ids):
        extra = len(np.setdiff1d(held, ids))
        lacking = len(np.setdiff1d(ids, held))
        report.add(
            "cache", where, f"stamped current but holds {extra} deleted and lacks {lacking} ids"
        )


def _check_files(conn: sqlite3.Connection, report: VerifyReport) -> None:
    for path, size, mtime_ns in _rows(conn, "SELECT path, size, mtime_ns FROM images", report):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            report.add("file", str(path), "missing on disk")
            continue
        except OSError as exc:
            report.add("file", str(path), f"unreadable: {exc.strerror}")
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            report.add("file", str(path), "changed on disk since it was indexed")
        elif not os.access(path, os.R_OK):
            report.add("file", str(path), "not readable")


def _check_orphans(conn: sqlite3.Connection, report: VerifyReport, present: set[str]) -> None:
    if "image_tags" in present:
        sql = (
            "SELECT image_id, count(*) FROM image_tags WHERE image_id NOT IN "
            "(SELECT id FROM images) GROUP BY image_id"
        )
        for image_id, count in _rows(conn, sql, report):
            report.add("tag", f"image {image_id}", f"{count} tags on an image that is gone")
    if "text_sources" in present:
        sql = (
            "SELECT source_id, count(*) FROM texts WHERE source_id NOT IN "
            "(SELECT id FROM text_sources) GROUP BY source_id"
        )
        for source_id, count in _rows(conn, sql, report):
            report.add("text", f"source {source_id}", f"{count} texts of a source that is gone")
