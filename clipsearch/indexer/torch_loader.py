"""Reading batches with torch's DataLoader, for encoders that run in torch (their
preprocessing gives tensors; on a GPU the batches go to pinned memory)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from clipsearch.indexer.decode import DecodedImage, register_heif
from clipsearch.indexer.lifeline import die_with_parent
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.stages import DecodedBatch, Reader, stack_decoded


class _ReadDataset(Dataset[tuple[EmbedJob, DecodedImage | str]]):
    def __init__(self, jobs: Sequence[EmbedJob], reader: Reader) -> None:
        self.jobs = list(jobs)
        self.reader = reader

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[EmbedJob, DecodedImage | str]:
        return self.jobs[i], self.reader(self.jobs[i].file.path)


def _worker_init(_worker_id: int, parent: int) -> None:
    die_with_parent(parent)
    torch.set_num_threads(1)  # the model's threads own the cores; decoding is per-process
    register_heif()


def loader_batches(
    jobs: Sequence[EmbedJob], reader: Reader, batch_size: int, workers: int, device: Any
) -> Iterator[DecodedBatch]:
    """The jobs as decoded batches, in order, read by `workers` DataLoader processes."""
    register_heif()
    loader: DataLoader[Any] = DataLoader(
        _ReadDataset(jobs, reader),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=stack_decoded,
        worker_init_fn=partial(_worker_init, parent=os.getpid()) if workers else None,
        prefetch_factor=4 if workers else None,
        pin_memory=getattr(device, "type", "cpu") == "cuda",
    )
    yield from loader
