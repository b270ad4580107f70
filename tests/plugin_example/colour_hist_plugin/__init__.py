"""A clipsearch encoder plugin: colour histograms, a crude but real model of images.

An image is the histogram of its pixels over a 4x4x4 RGB grid (64 dimensions, L2-normalised);
a text is the grid cells of the colour words it names ("red", "dark blue", ...). The spec
`colour-hist` or `colour-hist:BINS` picks the grid (4 by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipsearch.models import ModelInfo

COLOURS = {
    "black": (0, 0, 0), "white": (1, 1, 1), "red": (1, 0, 0), "green": (0, 1, 0),
    "blue": (0, 0, 1), "yellow": (1, 1, 0), "cyan": (0, 1, 1), "magenta": (1, 0, 1),
}  # fmt: skip
SIDE = 32


def _preprocess(image: Image.Image) -> torch.Tensor:
    """RGB pixels in [0, 1], (3, SIDE, SIDE); a module-level function, so it pickles."""
    small = np.asarray(image.convert("RGB").resize((SIDE, SIDE)), dtype=np.float32) / 255.0
    return torch.from_numpy(small.transpose(2, 0, 1).copy())


def _unit(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class ColourHistogram:
    def __init__(self, spec: str, bins: int) -> None:
        self.bins = bins
        self.info = ModelInfo(spec, identity(spec), bins**3)
        self.input_size = SIDE
        self.preprocess = _preprocess

    def _cell(self, rgb: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        q = np.clip(np.floor(rgb * self.bins), 0, self.bins - 1).astype(np.int64)
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray[Any, np.dtype[np.float32]]:
        rgb = pixels.numpy().transpose(0, 2, 3, 1).reshape(len(pixels), -1, 3)
        cells = self._cell(rgb)
        hist = np.zeros((len(pixels), self.bins**3), dtype=np.float32)
        for row, found in enumerate(cells):
            np.add.at(hist[row], found, 1.0)
        return _unit(hist)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        out = np.full((len(texts), self.bins**3), 1e-3, dtype=np.float32)
        for row, text in enumerate(texts):
            words = text.lower().split()
            for i, word in enumerate(words):
                if word in COLOURS:
                    shade = 0.5 if i and words[i - 1] == "dark" else 1.0
                    out[row, self._cell(np.array(COLOURS[word]) * shade)] += 1.0
        return _unit(out)


def _bins(spec: str) -> int:
    _, _, bins = spec.partition(":")
    return int(bins) if bins else 4


def identity(spec: str) -> str:
    return f"colour-hist:{_bins(spec)}-bins-v1"


def load(spec: str, device: str | None) -> ColourHistogram:
    return ColourHistogram(spec, _bins(spec))


load.identity = identity  # type: ignore[attr-defined]  # what an index records, unloaded
