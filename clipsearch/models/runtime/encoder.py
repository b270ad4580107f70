"""`ExportedEncoder`: the Encoder protocol over an export, run by ONNX Runtime or OpenVINO.

Each tower is opened on first use, so a text query never loads the image tower (and never
imports torch). Inputs and outputs are numpy arrays; a torch tensor handed in (the indexer's
batches when torch is installed) is read as an array.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsearch.models.base import ModelInfo
from clipsearch.models.runtime import auto_int8
from clipsearch.models.runtime.backends import Tower, open_tower
from clipsearch.models.runtime.choice import vectors_kind
from clipsearch.models.runtime.pixels import ImagePrep
from clipsearch.models.runtime.quantize import quantized_image_tower
from clipsearch.models.runtime.tokens import Tokenizer, load_tokenizer

_TEXT_BATCH = 256


class ExportedEncoder:
    def __init__(
        self, folder: Path, meta: dict[str, Any], spec: str, runtime: str, precision: str
    ) -> None:
        self.folder = folder
        self.meta = meta
        self.runtime = runtime
        #: fp32, int8, or auto (int8 if `settle_precision` measures it as good and faster;
        #: fp32 if asked for the kind of its vectors before that: see `auto_int8`).
        self.precision = precision
        self.info = ModelInfo(spec=spec, identity=str(meta["identity"]), dim=int(meta["dim"]))
        self.input_size = int(meta["input_size"])
        scale = meta.get("logit_scale")
        self.logit_scale: float | None = None if scale is None else float(scale)
        self.preprocess: Callable[[Image.Image], Any] = ImagePrep.from_dict(meta["pixels"])
        self._image: Tower | None = None
        self._text: Tower | None = None
        #: Threads of the text tower (None: `backends.threads()`); set before its first use
        #: (a server leaves a core to its searches: `server.service`).
        self.text_threads: int | None = None
        self._tokenizer: Tokenizer | None = None
        self._words: frozenset[str] | None = None
        # Towers and the tokenizer open on first use, which may come from several threads
        # at once (a server's): one opens each, the others wait for it (issue 28).
        self._opening = threading.RLock()

    @property
    def vectors_kind(self) -> str:
        """What an index records of this encoder's image vectors (settles `auto`)."""
        if self.precision == "auto":
            self.precision = "int8" if auto_int8.recorded(self.folder) else "fp32"
        return vectors_kind(self.runtime, self.precision)

    def settle_precision(self, sample: np.ndarray[Any, Any]) -> str:
        """Decide `auto` (int8 or fp32) on `sample`, preprocessed photos of the collection,
        unless a verdict for this machine is kept; returns the precision."""
        with self._opening:
            return self._settle_precision(sample)

    def _settle_precision(self, sample: np.ndarray[Any, Any]) -> str:
        if self.precision == "auto":
            verdict = auto_int8.recorded(self.folder)
            if verdict is None:
                sample = np.ascontiguousarray(np.asarray(sample, dtype=np.float32))
                fp32 = open_tower(self.runtime, self.folder / "image.onnx")
                int8 = open_tower(
                    self.runtime, quantized_image_tower(self.folder, self.runtime, sample)
                )
                verdict = auto_int8.measure(self.folder, fp32, int8, sample)
                self._image = int8 if verdict else fp32  # the one measured, not opened again
            self.precision = "int8" if verdict else "fp32"
        return self.precision

    def image_tower(self, sample: np.ndarray[Any, Any]) -> Tower:
        """The image tower, opened on first use (an int8 one made first if needed, from
        `sample`, the batch about to be encoded, where the runtime calibrates)."""
        if self._image is None:
            with self._opening:
                if self._image is None:
                    self.vectors_kind  # noqa: B018 - settles `auto` from the kept verdict
                    path = self.folder / "image.onnx"
                    if self.precision == "int8":
                        path = quantized_image_tower(self.folder, self.runtime, sample)
                    self._image = open_tower(self.runtime, path)
        return self._image

    @property
    def text_tower(self) -> Tower:
        if self._text is None:
            with self._opening:
                if self._text is None:
                    path = self.folder / "text.onnx"
                    self._text = open_tower(self.runtime, path, self.text_threads)
        return self._text

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            with self._opening:
                if self._tokenizer is None:
                    self._tokenizer = load_tokenizer(self.folder, self.meta["tokenizer"])
        return self._tokenizer

    def knows_word(self, word: str) -> bool | None:
        """Whether the tokenizer has `word` (lower case) as a whole word."""
        if self._words is None:
            self._words = self.tokenizer.whole_words()
        return word in self._words

    def encode_images(self, pixels: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        array = np.ascontiguousarray(np.asarray(pixels, dtype=np.float32))
        if len(array) == 0:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return normalise(self.image_tower(array)(array))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        chunks = [
            normalise(self._text_features(list(texts[start : start + _TEXT_BATCH])))
            for start in range(0, len(texts), _TEXT_BATCH)
        ]
        if not chunks:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return np.concatenate(chunks)

    def _text_features(self, texts: list[str]) -> np.ndarray[Any, Any]:
        """The tower's output for a batch. A tower that masks padding (a tokenizer with a
        `pad_id` pads only to the batch's longest text) runs on groups of texts of like
        length, each padded only to its own longest: padding is most of a mixed batch's
        work (1.5x the real tokens for 9 captions)."""
        tokens = self.tokenizer(texts)
        pad = getattr(self.tokenizer, "pad_id", None)
        if pad is None or len(texts) < 2:
            return self.text_tower(tokens)
        lengths = np.maximum((tokens != pad).sum(axis=1), 1)
        out: np.ndarray[Any, Any] | None = None
        for rows in length_groups(lengths):
            features = self.text_tower(np.ascontiguousarray(tokens[rows, : lengths[rows].max()]))
            if out is None:
                out = np.empty((len(texts), *features.shape[1:]), dtype=features.dtype)
            out[rows] = features
        assert out is not None
        return out


#: What a tower call costs beyond its tokens, and each row beyond its tokens, in tokens'
#: worth of time (MiniLM, one thread: 0.25 ms a token, 0.6 ms a row, 2-4 ms a call; 16 did best).
CALL_COST = 16.0
ROW_COST = 2.4


def length_groups(lengths: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """The rows of a batch in groups of like length (as row indices), split where the
    padding saved pays for another call: the cheapest split of the rows in length order,
    each group costing `CALL_COST` + rows x (`ROW_COST` + its longest length)."""
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order].astype(np.float64)
    n = len(order)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):
        for first in range(end):
            cost = best[first] + CALL_COST + (end - first) * (ROW_COST + ordered[end - 1])
            if cost < best[end]:
                best[end], start[end] = cost, first
    groups = []
    end = n
    while end > 0:
        groups.append(order[start[end] : end])
        end = int(start[end])
    return groups[::-1]


def normalise(features: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    out = np.asarray(features, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out / norms, dtype=np.float32)
