"""The adapter: one affine map per modality, applied to raw embeddings and renormalised.

    z_img = normalise(W_img x_img + b_img),   z_txt = normalise(W_txt x_txt + b_txt)

The index keeps the model's raw vectors; the active adapter maps them (and every query) into
the adapted space, so changing or dropping an adapter never re-encodes a photo. The identity
adapter (W = I, b = 0) leaves search as it was. A rectangular W (out_dim < in_dim) is a
dimensionality reduction: the FAISS index then holds out_dim-dimensional vectors.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch.arrays import Matrix
from clipsearch.errors import AdapterError

_KEYS = ("w_img", "b_img", "w_txt", "b_txt")


def unit_rows(x: np.ndarray[Any, Any]) -> Matrix:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def adapter_label(adapter_id: int | None, kind: str, out_dim: int) -> str:
    """How results name an adapter: `3:contrastive`, `4:pca-128`."""
    name = f"pca-{out_dim}" if kind == "pca" else kind
    return f"{adapter_id}:{name}" if adapter_id is not None else name


@dataclass(frozen=True)
class Adapter:
    w_img: Matrix  # (out_dim, in_dim)
    b_img: Matrix  # (out_dim,)
    w_txt: Matrix
    b_txt: Matrix
    kind: str = "contrastive"  # contrastive | pca | identity
    id: int | None = None  # set once stored in an index
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        out_dim, in_dim = self.w_img.shape
        shapes = [a.shape for a in (self.b_img, self.w_txt, self.b_txt)]
        if shapes != [(out_dim,), (out_dim, in_dim), (out_dim,)]:
            raise AdapterError(f"inconsistent adapter shapes: {self.w_img.shape}, {shapes}")

    @property
    def in_dim(self) -> int:
        return int(self.w_img.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.w_img.shape[0])

    @property
    def label(self) -> str:
        return adapter_label(self.id, self.kind, self.out_dim)

    @classmethod
    def identity(cls, dim: int) -> Adapter:
        eye, zero = np.eye(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32)
        return cls(eye, zero, eye.copy(), zero.copy(), kind="identity")

    def images(self, x: np.ndarray[Any, Any]) -> Matrix:
        """Raw image embeddings (N, in_dim) -> adapted unit vectors (N, out_dim)."""
        return unit_rows(np.asarray(x, dtype=np.float32) @ self.w_img.T + self.b_img)

    def texts(self, x: np.ndarray[Any, Any]) -> Matrix:
        return unit_rows(np.asarray(x, dtype=np.float32) @ self.w_txt.T + self.b_txt)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(getattr(self, k), dtype="<f4") for k in _KEYS}
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(
        cls, data: bytes, kind: str, id: int | None = None, metrics_json: str = "{}"
    ) -> Adapter:
        with np.load(io.BytesIO(data)) as arrays:
            params = {k: np.asarray(arrays[k], dtype=np.float32) for k in _KEYS}
        return cls(**params, kind=kind, id=id, metrics=json.loads(metrics_json))
