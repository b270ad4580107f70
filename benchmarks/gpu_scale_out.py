"""The Ray runner on a GPU: one encoder actor holding the GPU (`--gpus-per-worker 1`)
against the local pipeline on the same GPU, in one process, with ViT-B-32 (random weights
saved to a checkpoint file, so every process loads the same ones: speed does not depend on
the weights). Prints a JSON report and writes it to $OUT (or benchmarks/results).

Skips with a reason where torch sees no CUDA device or Ray is missing.

    python benchmarks/gpu_scale_out.py [--photos 3000] [--batch-size 256] [--workers 12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np


def make_photos(folder: Path, count: int) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = Image.new("RGB", (640, 480), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = int(rng.integers(0, 600)), int(rng.integers(0, 440))
            box = (x, y, x + int(rng.integers(10, 300)), y + int(rng.integers(10, 300)))
            draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        image.save(folder / f"p{i:05d}.jpg", quality=90)


def checkpoint(arch: str, path: Path) -> str:
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    torch.save(model.state_dict(), path)
    return f"{arch}:{path}"


def vectors(db: str) -> dict[str, np.ndarray[Any, Any]]:
    import clipsearch

    with clipsearch.open(db, create=False) as idx:
        rows = idx.db.rows()
        _, labels, matrix = idx.db.vectors_for([r.id for r in rows])
        return dict(zip(labels, matrix, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--cpu", action="store_true", help="a dry run without a GPU")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print(json.dumps({"skipped": "torch sees no CUDA device"}))
        return
    try:
        import ray
    except ImportError:
        print(json.dumps({"skipped": "Ray is not installed (pip install 'clipsearch[cluster]')"}))
        return
    import clipsearch
    from clipsearch.cluster import ClusterOptions, RayRunner
    from clipsearch.indexer.options import PipelineOptions

    device = "cpu" if args.cpu else "cuda"
    gpus = 0.0 if args.cpu else 1.0
    work = Path(tempfile.mkdtemp())
    photos = work / "photos"
    start = time.perf_counter()
    make_photos(photos, args.photos)
    spec = checkpoint(args.arch, work / "weights.pt")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if gpus else "cpu",
                              "torch": torch.__version__, "photos": args.photos,
                              "batch_size": args.batch_size, "model": args.arch,
                              "setup_s": time.perf_counter() - start}  # fmt: skip
    options = dict(model=spec, device=device, workers=args.workers, batch_size=args.batch_size)
    with clipsearch.open(str(work / "local"), **options) as idx:  # type: ignore[arg-type]
        idx.encoder  # noqa: B018 - loaded before the clock starts
        start = time.perf_counter()
        idx.add([photos])
        report["local_img_s"] = args.photos / (time.perf_counter() - start)
    print(json.dumps(report), flush=True)  # so far, in case the cluster part fails
    ray.init(num_cpus=os.cpu_count(), num_gpus=int(gpus), include_dashboard=False,
             logging_level="WARNING")  # fmt: skip
    runner = RayRunner(
        PipelineOptions(args.batch_size, 0, progress=False),
        ClusterOptions("auto", encoders=1, gpus_per_worker=gpus),
    )
    for label in ("ray_cold_img_s", "ray_warm_img_s"):
        with clipsearch.open(str(work / label), **options) as idx:  # type: ignore[arg-type]
            idx.encoder  # noqa: B018 - loaded before the clock starts
            start = time.perf_counter()
            summary = idx.add([photos], runner=runner)
            report[label] = args.photos / (time.perf_counter() - start)
            assert summary.added == args.photos, summary
    local, remote = vectors(str(work / "local")), vectors(str(work / "ray_warm_img_s"))
    assert set(local) == set(remote)
    diffs = [float(np.abs(local[p] - remote[p]).max()) for p in local]
    report["max_abs_diff_vs_local"] = max(diffs)
    report["warm_vs_local"] = report["ray_warm_img_s"] / report["local_img_s"]
    ray.shutdown()
    text = json.dumps(report, indent=1)
    print(text)
    out = Path(os.environ.get("OUT", Path(__file__).parent / "results"))
    (out / "gpu_scale_out.json").write_text(text)


if __name__ == "__main__":
    main()
