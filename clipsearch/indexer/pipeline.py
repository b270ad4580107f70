"""The embedding pipeline: decode in worker processes, encode in batches, commit per batch.

Worker processes (a torch DataLoader) read, hash and decode files while the main process
runs the model, so the CPU decodes and encodes at the same time. Each batch is written in one
SQLite transaction; a killed run loses at most the batch in flight, and the next run picks
up the files that are not in the database yet.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipsearch.errors import ImageDecodeError
from clipsearch.indexer.decode import (
    DecodedImage,
    ImageFacts,
    decode_image,
    register_heif,
)
from clipsearch.indexer.options import PipelineOptions
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.scan import Skip
from clipsearch.models.base import Encoder
from clipsearch.storage.db import Database, ImageRecord

#: Called after each committed batch with (row ids, their vectors, ids whose old vectors
#: must be dropped first); the index facade keeps the FAISS index in step through it.
OnCommit = Callable[[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]], None]


_DROPPED = " (it was indexed before: its old entry is removed)"


@dataclass
class EmbedCounts:
    added: int = 0
    updated: int = 0
    encoded: int = 0  # images that went through the model (the rest reused a stored vector)
    removed: int = 0  # indexed files that can no longer be read: their rows are dropped
    skipped: list[Skip] = field(default_factory=list)


class _DecodeDataset(Dataset[tuple[int, DecodedImage | str]]):
    def __init__(self, jobs: Sequence[EmbedJob], encoder: Encoder, max_pixels: int) -> None:
        self.paths = [job.file.path for job in jobs]
        self.preprocess = encoder.preprocess
        self.input_size = encoder.input_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, DecodedImage | str]:
        try:
            return i, decode_image(self.paths[i], self.preprocess, self.input_size, self.max_pixels)
        except ImageDecodeError as exc:
            return i, exc.reason


@dataclass
class _Batch:
    ok: list[tuple[int, ImageFacts]]
    failed: list[tuple[int, str]]
    pixels: torch.Tensor | None


def _collate(items: list[tuple[int, DecodedImage | str]]) -> _Batch:
    decoded = [(i, d) for i, d in items if isinstance(d, DecodedImage)]
    failed = [(i, d) for i, d in items if isinstance(d, str)]
    # Stacking in the worker hands the main process one tensor in shared memory; the
    # per-image tensors stay behind (each would cost its own shared-memory segment).
    pixels = torch.stack([d.pixels for _, d in decoded]) if decoded else None
    return _Batch([(i, d.facts) for i, d in decoded], failed, pixels)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the model's threads own the cores; decoding is per-process
    register_heif()


def make_loader(
    jobs: Sequence[EmbedJob], encoder: Encoder, options: PipelineOptions
) -> DataLoader[Any]:
    register_heif()
    workers = max(0, min(options.workers, len(jobs) // max(1, options.batch_size)))
    device = getattr(encoder, "device", None)
    return DataLoader(
        _DecodeDataset(jobs, encoder, options.max_pixels),
        batch_size=options.batch_size,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        pin_memory=getattr(device, "type", "cpu") == "cuda",
    )


def embed_files(
    jobs: Sequence[EmbedJob],
    encoder: Encoder,
    db: Database,
    on_commit: OnCommit,
    options: PipelineOptions,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbedCounts:
    """Decode, encode and store `jobs` batch by batch; `on_commit` sees each stored batch,
    `on_progress(done, total)` is told after it (files done, whether stored or skipped)."""
    counts = EmbedCounts()
    if not jobs:
        return counts
    known_hashes = db.known_hashes()  # content already stored: its vector is reused
    bar = tqdm(
        total=len(jobs), unit="img", desc="embedding", file=sys.stderr, disable=not options.progress
    )
    done = 0
    with bar:
        for batch in make_loader(jobs, encoder, options):
            vectors = _batch_vectors(batch, encoder, db, known_hashes, counts)
            records = [
                _record(jobs[i].file, decoded, vectors[n])
                for n, (i, decoded) in enumerate(batch.ok)
            ]
            # A changed file that no longer decodes loses its old row: it would otherwise
            # keep answering searches with a picture the file no longer holds.
            broken = [jobs[i].replaces for i, _ in batch.failed if jobs[i].replaces is not None]
            ids = np.asarray(db.write_images(records, drop=broken), dtype=np.int64)
            known_hashes.update(r.sha256 for r in records)
            replaced = [jobs[i].replaces for i, _ in batch.ok if jobs[i].replaces is not None]
            if len(ids) or broken:
                on_commit(ids, vectors, np.asarray([*replaced, *broken], dtype=np.int64))
            counts.updated += len(replaced)
            counts.added += len(records) - len(replaced)
            counts.removed += len(broken)
            counts.skipped.extend(
                Skip(jobs[i].file.path, reason + _DROPPED * (jobs[i].replaces is not None))
                for i, reason in batch.failed
            )
            bar.update(len(batch.ok) + len(batch.failed))
            done += len(batch.ok) + len(batch.failed)
            if on_progress is not None:
                on_progress(done, len(jobs))
    return counts


def _batch_vectors(
    batch: _Batch,
    encoder: Encoder,
    db: Database,
    known_hashes: set[str],
    counts: EmbedCounts,
) -> np.ndarray[Any, Any]:
    """Vectors for the batch's decoded images; content seen before is not encoded again."""
    vectors: list[np.ndarray[Any, Any] | None] = []
    to_encode: list[int] = []
    first_in_batch: dict[str, int] = {}
    for n, (_, decoded) in enumerate(batch.ok):
        reused = None
        if decoded.sha256 in known_hashes:
            reused = db.vector_for_hash(decoded.sha256)
        vectors.append(reused)
        if reused is None and decoded.sha256 not in first_in_batch:
            first_in_batch[decoded.sha256] = n
            to_encode.append(n)
    if to_encode:
        assert batch.pixels is not None
        pixels = batch.pixels if len(to_encode) == len(batch.ok) else batch.pixels[to_encode]
        encoded = encoder.encode_images(pixels)
        counts.encoded += len(to_encode)
        for n, vector in zip(to_encode, encoded, strict=True):
            vectors[n] = vector
        for n, (_, decoded) in enumerate(batch.ok):  # duplicates within this batch
            if vectors[n] is None:
                vectors[n] = vectors[first_in_batch[decoded.sha256]]
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([v for v in vectors if v is not None]).astype(np.float32, copy=False)


def _record(file: Any, decoded: ImageFacts, vector: np.ndarray[Any, Any]) -> ImageRecord:
    return ImageRecord(
        path=file.path,
        size=file.size,
        mtime_ns=file.mtime_ns,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        taken_at=decoded.taken_at,
        vector=vector,
    )
