"""Indexing throughput: the clipsearch pipeline against a naive one-image-at-a-time loop.

For each photo set (Flickr8k-dev photos, and large 3000x2000 JPEGs this script generates)
and each model, in one process and one run:
- ceiling: the model alone on already-preprocessed tensors, batch 32;
- decode-only: the same pipeline with an encoder that returns zeros (decoding's own ceiling);
- pipeline: `Index.add` on the photo folder (scan, worker decode, encode, SQLite, FAISS);
- naive: for each file, open, convert, preprocess, encode one image.
The model is loaded once and shared, so model load time is not in any figure.

    .venv/bin/python benchmarks/index_throughput.py
    .venv/bin/python benchmarks/index_throughput.py --models tiny-random --limit 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from PIL import Image, ImageDraw

import clipsearch
from benchmarks import datasets
from benchmarks._common import SHARED, markdown_table, write_result
from clipsearch.models import Encoder, load_encoder

FLICKR_IMAGES = SHARED / "flickr8k-dev" / "images"


def ceiling(encoder: Encoder, paths: list[Path], batch: int = 32) -> float:
    pixels = torch.stack([encoder.preprocess(Image.open(p).convert("RGB")) for p in paths])
    encoder.encode_images(pixels[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        encoder.encode_images(pixels[i : i + batch])
    return len(pixels) / (time.perf_counter() - start)


def pipeline(encoder: Encoder, folder: Path, workers: int, batch: int) -> float:
    with (
        tempfile.TemporaryDirectory() as tmp,
        clipsearch.open(tmp, encoder=encoder, workers=workers, batch_size=batch) as idx,
    ):
        start = time.perf_counter()
        summary = idx.add([folder])
        elapsed = time.perf_counter() - start
    assert summary.encoded == summary.added, summary
    return summary.added / elapsed


class DecodeOnly:
    """An encoder that skips the model: the pipeline then measures decoding alone."""

    def __init__(self, inner: Encoder) -> None:
        self.info = inner.info
        self.input_size = inner.input_size
        self.preprocess = inner.preprocess

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray[Any, Any]:
        return np.zeros((len(pixels), self.info.dim), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return np.zeros((len(texts), self.info.dim), dtype=np.float32)


def large_photos(count: int) -> list[Path]:
    """3000x2000 JPEGs of smooth colour with noise and shapes (~1-2 MB each, quality 90),
    made once in the data cache."""
    folder = datasets.cache_dir() / "large-3000x2000"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"large_{i:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        base = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize(
            (3000, 2000), Image.BICUBIC
        )
        grain = rng.normal(0, 12, (2000, 3000, 3))
        pixels = np.clip(np.asarray(base, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = int(rng.integers(0, 2600)), int(rng.integers(0, 1600))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse((x, y, x + int(rng.integers(100, 400)), y + int(rng.integers(100, 400))),
                         fill=colour)  # fmt: skip
        image.save(path, quality=90)
    return paths


def naive(encoder: Encoder, paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        pixels = encoder.preprocess(Image.open(path).convert("RGB"))[None]
        encoder.encode_images(pixels)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny-random,clipsearch-mini,ViT-B-32")
    parser.add_argument("--limit", type=int, default=800, help="Flickr photos, small models")
    parser.add_argument("--limit-large", type=int, default=320, help="Flickr photos, ViT-B-32")
    parser.add_argument("--large", type=int, default=160, help="3000x2000 photos to generate")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not FLICKR_IMAGES.is_dir():
        sys.exit(f"needs {FLICKR_IMAGES} (the shared data sets beside the repo)")
    flickr = sorted(FLICKR_IMAGES.glob("*.jpg"))
    sets = {"flickr8k-dev": flickr, "3000x2000": large_photos(args.large)}

    rows = []
    for spec in args.models.split(","):
        encoder = load_encoder(spec, device="cpu")
        for set_name, all_paths in sets.items():
            limit = args.limit_large if spec.startswith("ViT") else args.limit
            paths = all_paths[:limit]
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "photos"
                folder.mkdir()
                for p in paths:
                    os.symlink(p, folder / p.name)
                top = ceiling(encoder, paths, args.batch_size)
                decode = pipeline(DecodeOnly(encoder), folder, args.workers, args.batch_size)
                ours = pipeline(encoder, folder, args.workers, args.batch_size)
                base = naive(encoder, paths)
            rows.append([spec, set_name, str(len(paths)), f"{top:.1f}", f"{decode:.1f}",
                         f"{ours:.1f}", f"{base:.1f}", f"{ours / top:.2f}",
                         f"{ours / decode:.2f}", f"{ours / base:.2f}"])  # fmt: skip
            print(rows[-1], flush=True)

    headers = [
        "model", "photos", "count", "ceiling img/s", "decode-only img/s", "pipeline img/s",
        "naive img/s", "pipeline/ceiling", "pipeline/decode-only", "pipeline/naive",
    ]  # fmt: skip
    table = markdown_table(headers, rows)
    notes = (
        "Photos: `flickr8k-dev/images` (500x375-ish JPEGs) and generated 3000x2000 JPEGs "
        f"(quality 90). Pipeline: `Index.add` with {args.workers} decoding workers, batch "
        f"{args.batch_size}, writing SQLite and FAISS. Ceiling: the model alone on "
        "preprocessed tensors. Decode-only: the same pipeline with an encoder that returns "
        "zeros. Naive: open, preprocess and encode one image at a time. `ViT-B-32` is the "
        "architecture with random weights (same speed as trained ones). All figures from one "
        "process, one run; glibc allocator tuning on."
    )
    path = write_result("index_throughput", "Indexing throughput", f"{table}\n\n{notes}")
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
