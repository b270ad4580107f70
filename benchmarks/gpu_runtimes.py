"""The GPU path, for when a CUDA machine is lent: fp16 encoding, GPU JPEG decoding
(torchvision's nvJPEG `decode_jpeg(device="cuda")`) and FAISS search on the GPU, each against
its CPU counterpart in the same process, in the tables of benchmarks/runtimes.py.

Skips with its reason (exit 0) where torch sees no CUDA device; the FAISS table is skipped
where FAISS is the CPU build. ViT-B-32 runs with a fixed random init saved as a checkpoint
(speed does not depend on the weights).

    python benchmarks/gpu_runtimes.py [--rounds 10] [--photos 512]

Writes benchmarks/results/gpu_runtimes.md (+ .json), or to $OUT when that is set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import RESULTS, machine_block, markdown_table


def skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (this benchmark is for a GPU machine)"
    return None


def median_seconds(call: Callable[[], Any], rounds: int, sync: Callable[[], None]) -> float:
    call()  # warm up
    sync()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def photos(count: int) -> list[Path]:
    from benchmarks.gpu_scale_out import make_photos

    flickr = Path(__file__).resolve().parent.parent.parent / "shared/datasets/flickr8k-dev/images"
    found = sorted(flickr.glob("*.jpg"))[:count]
    if len(found) >= count:
        return found
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-runtimes-photos"
    make_photos(folder, count)
    return sorted(folder.glob("*.jpg"))[:count]


def encoding(rounds: int) -> list[list[str]]:
    import torch

    from benchmarks.runtimes import MINI, vit_spec
    from clipsearch.models import RuntimeChoice, load_encoder

    rows = []
    sync = torch.cuda.synchronize
    for name, spec in (("ViT-B-32", vit_spec()), (MINI, MINI)):
        cpu = load_encoder(spec, "cpu", RuntimeChoice("torch"))
        gpu = load_encoder(spec, "cuda", RuntimeChoice("torch"))  # fp16 autocast on CUDA
        size = gpu.input_size
        for batch in (32, 256):
            x = torch.randn(batch, 3, size, size)
            x_gpu = x.cuda()
            cpu_s = median_seconds(partial(cpu.encode_images, x), max(2, rounds // 4), sync)
            fp16_s = median_seconds(partial(gpu.encode_images, x_gpu), rounds, sync)
            fp32_s = median_seconds(partial(fp32_on_cuda, gpu, x_gpu), rounds, sync)
            for label, seconds in (("torch fp32 CPU", cpu_s), ("torch fp32 CUDA", fp32_s),
                                   ("torch fp16 CUDA", fp16_s)):  # fmt: skip
                rows.append([name, str(batch), label, f"{batch / seconds:.1f}",
                             f"{cpu_s / seconds:.1f}x"])  # fmt: skip
            print(rows[-3:], flush=True)
    return rows


def fp32_on_cuda(encoder: Any, pixels: Any) -> Any:
    """The CUDA model without the fp16 autocast `encode_images` applies."""
    import torch

    with torch.inference_mode():
        return encoder.model.encode_image(pixels)


def decoding(count: int, rounds: int) -> list[list[str]]:
    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg

    paths = photos(count)
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]

    def pil() -> None:
        for p in paths:
            with Image.open(p) as image:
                image.draft("RGB", (448, 448))
                image.convert("RGB").load()

    def nvjpeg() -> None:
        decode_jpeg(data, device="cuda")

    sync = torch.cuda.synchronize
    pil_s = median_seconds(pil, max(2, rounds // 4), sync)
    gpu_s = median_seconds(nvjpeg, rounds, sync)
    return [
        ["PIL, 1 CPU core (draft to 448 px)", str(len(paths)), f"{len(paths) / pil_s:.0f}"],
        ["torchvision decode_jpeg, CUDA (nvJPEG, full size, batched)", str(len(paths)),
         f"{len(paths) / gpu_s:.0f}"],
    ]  # fmt: skip


def faiss_search(rounds: int) -> list[list[str]] | str:
    import faiss

    if faiss.get_num_gpus() == 0:
        return "FAISS is the CPU build (faiss-cpu) or sees no GPU"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, 512)).astype(np.float32)
    base = centres[rng.integers(0, 1000, 100_000)] + 0.3 * rng.normal(size=(100_000, 512))
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    queries = base[rng.integers(0, len(base), 1000)] + 0.01
    cpu = faiss.IndexFlatIP(512)
    cpu.add(base)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    rows = []
    for batch in (1, 1000):
        q = np.ascontiguousarray(queries[:batch], dtype=np.float32)
        cpu_s = median_seconds(lambda q=q: cpu.search(q, 10), rounds, lambda: None)
        gpu_s = median_seconds(lambda q=q: gpu.search(q, 10), rounds, lambda: None)
        _, cpu_ids = cpu.search(q, 10)
        _, gpu_ids = gpu.search(q, 10)
        pairs = zip(cpu_ids, gpu_ids, strict=True)
        same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in pairs]))
        rows.append(["100k x 512 flat", str(batch), f"{1000 * cpu_s:.2f}", f"{1000 * gpu_s:.2f}",
                     f"{cpu_s / gpu_s:.1f}x", f"{same:.3f}"])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--photos", type=int, default=512)
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return
    from clipsearch._malloc import keep_freed_memory

    keep_freed_memory()
    results: dict[str, Any] = {
        "encoding": encoding(args.rounds),
        "decoding": decoding(args.photos, args.rounds),
        "faiss": faiss_search(args.rounds),
    }
    parts = [
        "## Image tower, images/s",
        markdown_table(["model", "batch", "runtime", "img/s", "vs CPU"], results["encoding"]),
        "## JPEG decoding, images/s",
        markdown_table(["decoder", "photos", "img/s"], results["decoding"]),
        "## FAISS exact search, ms per call (k = 10)",
    ]
    if isinstance(results["faiss"], str):
        parts.append(f"skipped: {results['faiss']}")
    else:
        parts.append(markdown_table(["index", "queries per call", "CPU ms", "GPU ms", "speed-up",
                                     "top-10 overlap"], results["faiss"]))  # fmt: skip
    body = "\n\n".join(parts)
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_runtimes.md").write_text(f"# GPU runtimes\n\n{machine_block()}\n\n{body}\n")
    (out / "gpu_runtimes.json").write_text(json.dumps(results, indent=1) + "\n")
    print(body)


if __name__ == "__main__":
    main()
