"""Dimensionality reduction as an adapter: PCA (optionally whitened) to k dimensions.

One map for both modalities, fitted on the stored image vectors and the indexed texts
together, so the shared space stays shared: z = normalise(W (x - μ)) with W the top-k
principal directions (scaled by 1/√λ when whitening), i.e. b = -W μ.
"""

from __future__ import annotations

import numpy as np

from clipsearch.adapters.model import Adapter
from clipsearch.arrays import Matrix
from clipsearch.errors import AdapterError


def fit_pca(images: Matrix, texts: Matrix, dims: int, whiten: bool = False) -> Adapter:
    data = np.concatenate([images, texts]).astype(np.float64)
    if len(data) < 2:
        raise AdapterError("PCA needs an index with vectors; add images first")
    in_dim = data.shape[1]
    if not 1 <= dims <= in_dim:
        raise AdapterError(f"dims must be between 1 and {in_dim}, got {dims}")
    mean = data.mean(axis=0)
    covariance = np.cov(data - mean, rowvar=False)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    top = np.argsort(values)[::-1][:dims]
    w = vectors[:, top].T  # (dims, in_dim)
    if whiten:
        w = w / np.sqrt(np.maximum(values[top], 1e-12))[:, None]
    b = -w @ mean
    w32, b32 = w.astype(np.float32), b.astype(np.float32)
    return Adapter(
        w32, b32, w32.copy(), b32.copy(), kind="pca",
        metrics={"dims": dims, "whiten": whiten, "fitted_on": len(data),
                 "explained_variance": float(values[top].sum() / values.sum())},
    )  # fmt: skip
