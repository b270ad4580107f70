"""Runners: where reading and encoding happen. A runner takes the jobs, an encoder and a
sink, and hands every job to the sink exactly once, as part of an encoded batch (or as a
failure with its reason). `LocalRunner` decodes in worker processes on this machine (torch's
DataLoader for a torch encoder, a process pool for the optimised runtimes, so indexing needs
no torch there) while the main process runs the model; a cluster runner only has to do the
same with its own workers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from tqdm import tqdm

from clipsearch.indexer.options import PipelineOptions
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.sinks import Sink
from clipsearch.indexer.stages import DecodedBatch, Reader, Reuse, encode_batch
from clipsearch.models.base import Encoder

#: Told (files done, total) after each batch.
OnProgress = Callable[[int, int], None]


class Runner(Protocol):
    def run(
        self,
        jobs: Sequence[EmbedJob],
        encoder: Encoder,
        sink: Sink,
        reuse: Reuse,
        on_progress: OnProgress | None = None,
    ) -> None: ...


class ProgressCounter:
    """The progress of a run: a bar on stderr (when `show`) and `on_progress` after each
    batch, counting files done (stored or skipped) out of the total."""

    def __init__(self, total: int, show: bool, on_progress: OnProgress | None) -> None:
        self.total, self.done, self.on_progress = total, 0, on_progress
        self.bar = tqdm(
            total=total, unit="img", desc="embedding", file=sys.stderr, disable=not show
        )

    def advance(self, files: int) -> None:
        self.bar.update(files)
        self.done += files
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def close(self) -> None:
        self.bar.close()


class LocalRunner:
    """Reading in `options.workers` processes, encoding and writing in this one; a batch is
    committed before the next is encoded, so a killed run loses at most the batch in flight."""

    def __init__(self, options: PipelineOptions) -> None:
        self.options = options

    def batches(self, jobs: Sequence[EmbedJob], encoder: Encoder) -> Iterator[DecodedBatch]:
        options = self.options
        workers = max(0, min(options.workers, len(jobs) // max(1, options.batch_size)))
        reader = Reader.for_encoder(encoder, options.max_pixels)
        if getattr(encoder, "runtime", "torch") == "torch":
            from clipsearch.indexer.torch_loader import loader_batches

            device = getattr(encoder, "device", None)
            return loader_batches(jobs, reader, options.batch_size, workers, device)
        from clipsearch.indexer.pool import pooled_batches

        return pooled_batches(jobs, reader, options.batch_size, workers)

    def run(
        self,
        jobs: Sequence[EmbedJob],
        encoder: Encoder,
        sink: Sink,
        reuse: Reuse,
        on_progress: OnProgress | None = None,
    ) -> None:
        if not jobs:
            return
        progress = ProgressCounter(len(jobs), self.options.progress, on_progress)
        try:
            for batch in self.batches(jobs, encoder):
                sink.write(encode_batch(batch, encoder, reuse))
                progress.advance(len(batch.ok) + len(batch.failed))
        finally:
            progress.close()
