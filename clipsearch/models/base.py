"""The encoder protocol: what the indexer and the searcher need from a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class ModelInfo:
    """What an index records about the model that filled it."""

    spec: str  # as the user wrote it; used to reload the model
    identity: str  # arch + weights id; compared on reopen
    dim: int


class Encoder(Protocol):
    """Maps images and texts into one L2-normalised embedding space.

    `preprocess` turns a decoded RGB image into the model's input (a torch tensor, or a numpy
    array for the optimised runtimes); it must be picklable or fork-safe, since decoding runs
    in worker processes; `encode_images` takes a batch of them stacked. `input_size` is the
    side of the square the model sees, which the decoder uses to pick a JPEG draft scale.
    """

    info: ModelInfo
    input_size: int
    preprocess: Callable[[Image.Image], Any]

    def encode_images(self, pixels: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        """(N, 3, H, W) preprocessed pixels -> (N, dim) float32 unit vectors."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """N strings -> (N, dim) float32 unit vectors."""
        ...


#: One preprocessed image as a model takes it: a torch tensor, or a numpy array for the
#: optimised runtimes (`Encoder.preprocess`); the layers above never look inside.
Pixels = Any


def use_threads(count: int, runtime: str) -> None:
    """Run this process's model on `count` threads: the optimised runtimes read
    `CLIPSEARCH_THREADS` when they load; torch's pool is set now (for torch or auto)."""
    import os

    os.environ["CLIPSEARCH_THREADS"] = str(count)
    if runtime in ("torch", "auto"):
        import torch

        torch.set_num_threads(count)


def stack_pixels(pixels: Sequence[Any]) -> Any:
    """Preprocessed images (at least one) as the batch `encode_images` takes: numpy arrays
    (an optimised runtime's preprocessing) stack as numpy, without importing torch; torch
    tensors as a torch tensor."""
    import numpy as np

    if isinstance(pixels[0], np.ndarray):
        return np.stack(pixels)
    import torch

    return torch.stack(list(pixels))
