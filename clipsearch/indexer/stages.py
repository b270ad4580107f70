"""The stages of indexing, each usable alone: read (decode a file, pure and picklable, so it
can run in any process or on any machine), encode (a batch through the model, reusing vectors
of content already stored), and the records a sink stores.

    jobs ─Runner─▶ Reader per file ─▶ batches ─▶ encode_batch ─▶ Sink.write

A `Runner` (runners.py) decides where reading and encoding happen; a `Sink` (sinks.py) where
the results go. Neither knows the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch.arrays import Vector
from clipsearch.errors import ImageDecodeError
from clipsearch.indexer.decode import DecodedImage, ImageFacts, decode_image
from clipsearch.indexer.plan import EmbedJob
from clipsearch.models.base import Encoder, stack_pixels
from clipsearch.storage.db import ImageRecord

#: The stored vector of content with this SHA-256, if some row holds it (None: encode it).
Reuse = Callable[[str], "Vector | None"]


@dataclass(frozen=True)
class Reader:
    """Decodes one file for a model: the pure first stage. Holds only picklable settings."""

    preprocess: Callable[[Any], Any]
    input_size: int
    max_pixels: int

    @classmethod
    def for_encoder(cls, encoder: Encoder, max_pixels: int) -> Reader:
        return cls(encoder.preprocess, encoder.input_size, max_pixels)

    def __call__(self, path: str) -> DecodedImage | str:
        """The decoded image, or the reason it cannot be read."""
        try:
            return decode_image(path, self.preprocess, self.input_size, self.max_pixels)
        except ImageDecodeError as exc:
            return exc.reason


@dataclass
class DecodedBatch:
    """A batch of jobs after reading: the images that decoded (with their pixels stacked in
    `pixels`, in order) and the ones that did not, with the reason."""

    ok: list[tuple[EmbedJob, ImageFacts]]
    failed: list[tuple[EmbedJob, str]]
    pixels: Any  # torch.Tensor or numpy array (N, 3, H, W), None when nothing decoded


@dataclass
class EncodedBatch:
    """A batch ready to store: `vectors[n]` is the vector of `ok[n]`."""

    ok: list[tuple[EmbedJob, ImageFacts]]
    failed: list[tuple[EmbedJob, str]]
    vectors: Vector
    encoded: int = 0  # how many went through the model (the rest reused stored vectors)
    records: list[ImageRecord] = field(init=False)  # derived from ok and vectors

    def __post_init__(self) -> None:
        self.records = [
            ImageRecord(
                path=job.file.path, size=job.file.size, mtime_ns=job.file.mtime_ns,
                sha256=facts.sha256, width=facts.width, height=facts.height,
                format=facts.format, taken_at=facts.taken_at, vector=self.vectors[n],
                camera=facts.camera, embedded=facts.embedded,
            )
            for n, (job, facts) in enumerate(self.ok)
        ]  # fmt: skip

    @classmethod
    def joined(cls, batches: Sequence[EncodedBatch]) -> EncodedBatch:
        """Several batches as one (one transaction for a sink)."""
        filled = [b.vectors for b in batches if len(b.ok)]
        return cls(
            [item for b in batches for item in b.ok],
            [item for b in batches for item in b.failed],
            np.concatenate(filled) if filled else np.zeros((0, 0), dtype=np.float32),
            sum(b.encoded for b in batches),
        )


class EncodingPlan:
    """Which of a batch's decoded images need the model: content stored before (`reuse`)
    or seen earlier in the batch is not encoded again. `to_encode` are their positions in
    `ok`; `complete` takes the model's vectors for them and gives every image's vector."""

    def __init__(self, ok: Sequence[tuple[EmbedJob, ImageFacts]], reuse: Reuse) -> None:
        self.size = len(ok)
        self.hashes = [facts.sha256 for _, facts in ok]
        self.vectors: list[Vector | None] = []
        self.to_encode: list[int] = []
        self._first: dict[str, int] = {}
        for n, sha256 in enumerate(self.hashes):
            reused = reuse(sha256)
            self.vectors.append(reused)
            if reused is None and sha256 not in self._first:
                self._first[sha256] = n
                self.to_encode.append(n)

    def complete(self, encoded: Sequence[Vector]) -> Vector:
        vectors = list(self.vectors)
        for n, vector in zip(self.to_encode, encoded, strict=True):
            vectors[n] = vector
        for n, sha256 in enumerate(self.hashes):  # duplicates within this batch
            if vectors[n] is None:
                vectors[n] = vectors[self._first[sha256]]
        if not vectors:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([v for v in vectors if v is not None]).astype(np.float32, copy=False)


def encode_batch(batch: DecodedBatch, encoder: Encoder, reuse: Reuse) -> EncodedBatch:
    """Vectors for the batch's decoded images, through the model where `EncodingPlan` says."""
    plan = EncodingPlan(batch.ok, reuse)
    encoded: Any = []
    if plan.to_encode:
        whole = len(plan.to_encode) == plan.size
        encoded = encoder.encode_images(batch.pixels if whole else batch.pixels[plan.to_encode])
    return EncodedBatch(batch.ok, batch.failed, plan.complete(encoded), len(plan.to_encode))


def read_batch(reader: Reader, jobs: Sequence[EmbedJob]) -> DecodedBatch:
    """Decode a batch of files where this runs; the pixels come back stacked."""
    return stack_decoded([(job, reader(job.file.path)) for job in jobs])


def stack_decoded(items: Sequence[tuple[EmbedJob, DecodedImage | str]]) -> DecodedBatch:
    """A `DecodedBatch` from (job, what the reader returned) pairs. Stacking where the
    reading ran (a worker process) hands the encoder one tensor in shared memory; the
    per-image tensors stay behind (each would cost its own shared-memory segment). Numpy
    pixels (an optimised runtime's preprocessing) stack as numpy, without torch."""
    decoded = [(job, d) for job, d in items if isinstance(d, DecodedImage)]
    pixels = stack_pixels([d.pixels for _, d in decoded]) if decoded else None
    return DecodedBatch(
        [(job, d.facts) for job, d in decoded],
        [(job, d) for job, d in items if isinstance(d, str)],
        pixels,
    )
