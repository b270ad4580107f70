"""Reading batches in worker processes without torch, for encoders whose preprocessing gives
numpy arrays (the optimised runtimes): a process pool with a bounded window of batches in
flight, so a fast reader never piles decoded pixels up in memory ahead of a slow model.

Workers are forked, as torch's DataLoader forks them: they only decode (Pillow, numpy) and
never touch the model or its runtime's threads.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from clipsearch.indexer.decode import register_heif
from clipsearch.indexer.lifeline import die_with_parent
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.stages import DecodedBatch, Reader, read_batch

#: Batches in flight per worker (as the DataLoader's prefetch factor).
PREFETCH = 4


def _worker_init(parent: int) -> None:
    die_with_parent(parent)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"  # the model's threads own the cores; decoding is per-process
    register_heif()


def pooled_batches(
    jobs: Sequence[EmbedJob], reader: Reader, batch_size: int, workers: int
) -> Iterator[DecodedBatch]:
    """The jobs as decoded batches, in order; `workers` 0 reads in this process."""
    chunks = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    if workers <= 0 or len(chunks) <= 1:
        register_heif()
        for chunk in chunks:
            yield read_batch(reader, chunk)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:  # fmt: skip
        waiting = iter(chunks)
        pending: deque[Future[DecodedBatch]] = deque()
        for chunk in waiting:
            pending.append(pool.submit(read_batch, reader, chunk))
            if len(pending) >= PREFETCH * workers:
                break
        while pending:
            batch = pending.popleft().result()
            following = next(waiting, None)
            if following is not None:
                pending.append(pool.submit(read_batch, reader, following))
            yield batch
