"""`ClipEncoder`: any two-tower torch model with `encode_image` / `encode_text`, as an Encoder."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipsearch.models.base import ModelInfo
from clipsearch.models.words import whole_words

_TEXT_BATCH = 256


class ClipEncoder:
    """Wraps a CLIP-style model in inference mode; outputs are L2-normalised float32."""

    runtime = "torch"
    precision = "fp32"
    vectors_kind = "fp32"

    def __init__(
        self,
        model: Any,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        input_size: int,
        spec: str,
        identity: str,
        device: torch.device,
    ) -> None:
        model.eval()
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.input_size = input_size
        self.device = device
        with torch.inference_mode():
            dim = int(self.model.encode_text(self.tokenizer(["x"]).to(device)).shape[-1])
        self.info = ModelInfo(spec=spec, identity=identity, dim=dim)
        #: The softmax scale the model was trained with (exp of its `logit_scale`), if any.
        self.logit_scale = trained_scale(model)
        self._words: frozenset[str] | None = None
        self._words_read = False

    def knows_word(self, word: str) -> bool | None:
        """Whether the tokenizer has `word` (lower case) as a whole word; None if it cannot
        tell. See `clipsearch.search.relevance.known_share`."""
        if not self._words_read:
            self._words = whole_words(self.tokenizer)
            self._words_read = True
        return None if self._words is None else word in self._words

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # fp16 on CUDA halves memory traffic; on CPU autocast to bf16 is 8x slower here.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_images(self, pixels: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        if isinstance(pixels, np.ndarray):  # an optimised runtime's preprocessing
            pixels = torch.from_numpy(pixels)
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return normalise(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        chunks = []
        for start in range(0, len(texts), _TEXT_BATCH):
            tokens = self.tokenizer(list(texts[start : start + _TEXT_BATCH])).to(self.device)
            with torch.inference_mode(), self._autocast():
                chunks.append(normalise(self.model.encode_text(tokens)))
        if not chunks:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return np.concatenate(chunks)


def normalise(features: torch.Tensor) -> np.ndarray[Any, np.dtype[np.float32]]:
    out = features.float()
    out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)


def trained_scale(model: Any) -> float | None:
    """exp(logit_scale) of a CLIP-style model (about 100 for OpenAI's CLIP), or None."""
    scale = getattr(model, "logit_scale", None)
    if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
        return None
    return float(scale.detach().float().exp())
