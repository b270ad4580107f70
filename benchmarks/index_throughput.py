"""Indexing throughput: the clipsearch pipeline against a naive one-image-at-a-time loop.

For each model, in one process and one run:
- ceiling: the model alone on already-preprocessed tensors, batch 32;
- pipeline: `Index.add` on the photo folder (scan, worker decode, encode, SQLite, FAISS);
- naive: for each file, open, convert, preprocess, encode one image.
The model is loaded once and shared, so model load time is not in any figure.

    .venv/bin/python benchmarks/index_throughput.py
    .venv/bin/python benchmarks/index_throughput.py --models tiny-random --limit 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from PIL import Image

import clipsearch
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


def naive(encoder: Encoder, paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        pixels = encoder.preprocess(Image.open(path).convert("RGB"))[None]
        encoder.encode_images(pixels)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny-random,ViT-B-32")
    parser.add_argument("--limit", type=int, default=800, help="photos for tiny models")
    parser.add_argument("--limit-large", type=int, default=320, help="photos for ViT-B-32")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not FLICKR_IMAGES.is_dir():
        sys.exit(f"needs {FLICKR_IMAGES} (the shared data sets beside the repo)")
    all_paths = sorted(FLICKR_IMAGES.glob("*.jpg"))

    rows = []
    for spec in args.models.split(","):
        limit = args.limit_large if spec.startswith("ViT") else args.limit
        paths = all_paths[:limit]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "photos"
            folder.mkdir()
            for p in paths:
                shutil.copy(p, folder / p.name)
            encoder = load_encoder(spec, device="cpu")
            top = ceiling(encoder, paths, args.batch_size)
            ours = pipeline(encoder, folder, args.workers, args.batch_size)
            base = naive(encoder, paths)
        rows.append(
            [
                spec,
                str(len(paths)),
                f"{top:.1f}",
                f"{ours:.1f}",
                f"{base:.1f}",
                f"{ours / top:.2f}",
                f"{ours / base:.2f}",
            ]
        )
        print(rows[-1], flush=True)

    headers = [
        "model", "photos", "ceiling img/s", "pipeline img/s", "naive img/s",
        "pipeline/ceiling", "pipeline/naive",
    ]  # fmt: skip
    table = markdown_table(headers, rows)
    notes = (
        f"Photos: `flickr8k-dev/images` (500x375-ish JPEGs). Pipeline: `Index.add` with "
        f"{args.workers} decoding workers, batch {args.batch_size}, writing SQLite and FAISS. "
        "Ceiling: the model alone on preprocessed tensors. Naive: open, preprocess and encode "
        "one image at a time. `ViT-B-32` is the architecture with random weights (same speed "
        "as trained ones). All figures from one process, one run; glibc allocator tuning on."
    )
    path = write_result("index_throughput", "Indexing throughput", f"{table}\n\n{notes}")
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
