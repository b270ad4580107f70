"""Where encoded batches go. A `Sink` has one method, `write(batch)`; the SQL sink stores a
batch in one transaction of the store and then tells the live vector index (through
`on_commit`), so searches see each batch as it commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clipsearch.arrays import Vector
from clipsearch.facts import Skip
from clipsearch.indexer.stages import EncodedBatch
from clipsearch.storage.db import Database

#: Called after each committed batch with (row ids, their vectors, ids whose old vectors
#: must be dropped first).
OnCommit = Callable[[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]], None]

_DROPPED = " (it was indexed before: its old entry is removed)"


class Sink(Protocol):
    """Takes encoded batches, in any order, each exactly once."""

    def write(self, batch: EncodedBatch) -> None: ...


@dataclass
class EmbedCounts:
    added: int = 0
    updated: int = 0
    encoded: int = 0  # images that went through the model (the rest reused a stored vector)
    removed: int = 0  # indexed files that can no longer be read: their rows are dropped
    skipped: list[Skip] = field(default_factory=list)


class SqlSink:
    """Writes each batch to the store in one transaction (rows are upserts by path, so a
    batch written twice is stored once) and feeds `on_commit`; counts what it did."""

    def __init__(self, db: Database, on_commit: OnCommit | None = None) -> None:
        self.db = db
        self.on_commit = on_commit
        self.counts = EmbedCounts()
        self._known: set[str] | None = None

    def reuse(self, sha256: str) -> Vector | None:
        """The stored vector of this content, if any row holds it (for `encode_batch`)."""
        if self._known is None:
            self._known = self.db.known_hashes()
        return self.db.vector_for_hash(sha256) if sha256 in self._known else None

    def write(self, batch: EncodedBatch) -> None:
        # A changed file that no longer decodes loses its old row: it would otherwise keep
        # answering searches with a picture the file no longer holds.
        broken = [job.replaces for job, _ in batch.failed if job.replaces is not None]
        ids = np.asarray(self.db.write_images(batch.records, drop=broken), dtype=np.int64)
        if self._known is not None:
            self._known.update(r.sha256 for r in batch.records)
        replaced = [job.replaces for job, _ in batch.ok if job.replaces is not None]
        if self.on_commit is not None and (len(ids) or broken):
            self.on_commit(ids, batch.vectors, np.asarray([*replaced, *broken], dtype=np.int64))
        counts = self.counts
        counts.updated += len(replaced)
        counts.added += len(batch.records) - len(replaced)
        counts.removed += len(broken)
        counts.encoded += batch.encoded
        counts.skipped.extend(
            Skip(job.file.path, reason + _DROPPED * (job.replaces is not None))
            for job, reason in batch.failed
        )
