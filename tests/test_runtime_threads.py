"""Every runtime's encoder is safe to share between threads (a server's workers do): 16
threads mixing texts and images get what one thread alone gets, and no error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import clipsearch
import clipsearch.index as index_module
from clipsearch.models import RuntimeChoice, load_encoder
from tests.conftest import make_image, need_runtime, write_images

THREADS = 16
CALLS = 320


@pytest.mark.parametrize("runtime", ["torch", "onnx", "openvino"])
@pytest.mark.parametrize("spec", ["tiny-random", "clipsearch-mini"])  # CLIP BPE; HF tokens
def test_sixteen_threads_get_what_one_thread_gets(spec: str, runtime: str) -> None:
    need_runtime(runtime)
    encoder = load_encoder(spec, "cpu", RuntimeChoice(runtime, "fp32"))
    texts = [f"{i} dogs running on beach number {i * 7}, café" for i in range(64)]
    pixels = np.stack([np.asarray(encoder.preprocess(make_image(i, (120, 90)))) for i in range(32)])
    alone_texts = [encoder.encode_texts(texts[i : i + 3]) for i in range(0, 62)]
    alone_images = [encoder.encode_images(pixels[i : i + 2]) for i in range(0, 31)]

    def call(n: int) -> float:
        if n % 2:
            i = n % 62
            return float(np.abs(encoder.encode_texts(texts[i : i + 3]) - alone_texts[i]).max())
        i = n % 31
        return float(np.abs(encoder.encode_images(pixels[i : i + 2]) - alone_images[i]).max())

    with ThreadPoolExecutor(THREADS) as pool:
        differences = list(pool.map(call, range(CALLS)))  # an error in any call raises here
    assert len(differences) == CALLS
    assert max(differences) <= 1e-5


def test_the_first_searches_of_many_threads_load_the_model_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index loads its model on first need; eight threads needing it at once on a
    machine that has not exported it yet each began the export (500s from a server's
    ensemble index: "GLOBALS.in_onnx_export must be False")."""
    write_images(tmp_path / "photos", 4)
    with clipsearch.open(tmp_path / "db", model="clipsearch-mini", workers=0) as idx:
        idx.add([tmp_path / "photos"])
    monkeypatch.setenv("CLIPSEARCH_MODEL_CACHE", str(tmp_path / "models"))  # a fresh export
    loads = []
    real = index_module.load_encoder

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(index_module, "load_encoder", counted)
    with clipsearch.open(tmp_path / "db", create=False) as idx, ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda n: idx.search(f"a red square {n}", k=2), range(8)))
    assert len(loads) == 1 and all(len(hits) == 2 for hits in found)
