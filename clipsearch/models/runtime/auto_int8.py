"""`--precision auto`: int8 for a new index where it is measured to be as good and faster.

The first time a model indexes photos on a machine, its ONNX image tower runs the first
photos of the collection (up to `SAMPLE_PHOTOS`) in fp32 and in int8 (`quantize`): int8 is
chosen when its embeddings stay within `MIN_COSINE` (mean and least cosine to fp32) and it
runs at least `MIN_SPEEDUP` times as fast. The verdict is kept beside the export
(`int8-choice.json`, with the machine it was measured on) and reused; an index records the
kind of vectors it got (`fp32` or `int8-onnx`) and keeps it, whatever later verdicts say.

The cosine bar is the one clipsearch-mini's retrieval figures support: its int8 image tower
at cosine 0.9990 (mean) to fp32 kept Flickr Recall@1/5/10 and CIFAR-10 accuracy within 0.5
points (benchmarks/results/runtimes.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.models.runtime.machine import machine

Array = np.ndarray[Any, Any]

SAMPLE_PHOTOS = 16
MIN_COSINE = (0.999, 0.998)  # mean, least
MIN_SPEEDUP = 1.2
RECORD = "int8-choice.json"


def recorded(folder: Path) -> bool | None:
    """The verdict measured on this machine, if there is one."""
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("machine") != machine():
        return None
    return bool(data.get("int8"))


def measure(
    folder: Path, fp32: Callable[[Array], Array], int8: Callable[[Array], Array], sample: Array
) -> bool:
    """Run both towers on `sample` (preprocessed photos), decide, and keep the figures."""
    reference, quantised = unit(fp32(sample)), unit(int8(sample))
    cosines = (reference * quantised).sum(axis=1)
    speedup = _best_time(fp32, sample) / _best_time(int8, sample)
    good = float(cosines.mean()) >= MIN_COSINE[0] and float(cosines.min()) >= MIN_COSINE[1]
    verdict = good and speedup >= MIN_SPEEDUP
    record = {
        "machine": machine(), "photos": len(sample), "int8": verdict,
        "speedup": round(speedup, 3), "cosine_mean": round(float(cosines.mean()), 5),
        "cosine_min": round(float(cosines.min()), 5),
        "bars": {"speedup": MIN_SPEEDUP, "cosine": list(MIN_COSINE)},
    }  # fmt: skip
    (folder / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return verdict


def _best_time(tower: Callable[[Array], Array], sample: Array) -> float:
    tower(sample)  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        tower(sample)
        best = min(best, time.perf_counter() - started)
    return best


def unit(vectors: Array) -> Array:
    """Rows scaled to length 1 (as float32)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
