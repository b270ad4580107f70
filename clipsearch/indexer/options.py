"""Knobs of the indexing pipeline (kept apart so that importing them does not import torch)."""

from __future__ import annotations

from dataclasses import dataclass

from clipsearch.indexer.decode import DEFAULT_MAX_PIXELS

DEFAULT_MAX_FRAMES = 64


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = 32  # images per model call
    workers: int = 2  # decoding processes; 0 decodes in the calling process
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb guard
    progress: bool = True  # a progress bar on stderr
    max_frames_per_video: int = DEFAULT_MAX_FRAMES  # keyframes kept per video at most
