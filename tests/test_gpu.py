"""The GPU path: FAISS on a GPU copy and CUDA encoding give what the CPU gives. These run
only where a GPU is present (a GPU build of FAISS, CUDA torch) and skip cleanly elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsearch.storage.faiss_index import FlatIndex, faiss_gpu_count
from tests.conftest import write_images


@pytest.mark.skipif(faiss_gpu_count() == 0, reason="FAISS sees no GPU (faiss-cpu or no device)")
def test_flat_search_on_the_gpu_copy_equals_the_cpu() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:20] + 0.01
    gpu = FlatIndex(64)
    gpu.add(np.arange(5000, dtype=np.int64), vectors)
    assert gpu._use_gpu
    cpu_scores, cpu_ids = gpu.index.search(queries, 10)  # the CPU index itself
    gpu_scores, gpu_ids = gpu.search(queries, 10)  # through the GPU copy
    np.testing.assert_array_equal(gpu_ids, cpu_ids)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-3)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda(), reason="torch sees no CUDA device")
def test_cuda_encoding_matches_cpu(tmp_path: Path) -> None:
    import clipsearch
    from clipsearch.models import load_encoder

    photos = write_images(tmp_path / "photos", 4)
    vectors = {}
    for device in ("cpu", "cuda"):
        encoder = load_encoder("tiny-random", device=device)
        with clipsearch.open(tmp_path / device, encoder=encoder, workers=0) as idx:
            idx.add([tmp_path / "photos"])
            vectors[device] = np.stack([idx.embed_image_file(p) for p in photos])
            assert encoder.encode_texts(["a photo"]).shape == (1, encoder.info.dim)
    cosines = np.sum(vectors["cpu"] * vectors["cuda"], axis=1)
    assert np.all(cosines > 0.999), cosines  # fp16 autocast on CUDA, float32 on CPU
