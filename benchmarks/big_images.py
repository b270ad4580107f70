"""Memory and time to decode big PNGs for the model: the strip decoder (`indexer.png_strips`,
what `decode_image` does now) against Pillow's whole decode (what it did before: the whole
picture, then whole-size copies), each in a fresh process, paired in one run.

    .venv/bin/python benchmarks/big_images.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, markdown_table, write_result
from tests.test_png_strips import _huge_png

MEASURE = """
import io, resource, sys, time
from PIL import Image, ImageOps
from torchvision import transforms
from clipsearch.indexer.decode import decode_image
preprocess = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224),
                                 transforms.ToTensor()])
Image.MAX_IMAGE_PIXELS = None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if sys.argv[2] == "strips":
    decode_image(sys.argv[1], preprocess, 224)
else:  # the path before: bytes in memory, whole decode, transpose and convert copies
    data = open(sys.argv[1], "rb").read()
    image = Image.open(io.BytesIO(data))
    preprocess(ImageOps.exif_transpose(image).convert("RGB"))
seconds = time.perf_counter() - started
print(seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def measure(path: Path, how: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), how], capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for side in (5_000, 8_000, 12_000):
            path = Path(tmp) / f"{side}.png"
            _huge_png(path, side, side)
            for how in ("whole", "strips"):
                runs = [measure(path, how) for _ in range(args.repeats)]
                seconds = sorted(r[0] for r in runs)[len(runs) // 2]
                peak = max(r[1] for r in runs)
                raw.append({"megapixels": side * side / 1e6, "how": how, "runs": runs})
                rows.append([f"{side * side / 1e6:.0f}", how, f"{seconds:.2f}", f"{peak:.0f}"])
                print(rows[-1], flush=True)
    body = (
        f"RGB PNGs written row by row (Sub filter), decoded to the 224-pixel model input; "
        f"median of {args.repeats} runs each, peak RSS growth of a fresh process.\n\n"
        + markdown_table(["megapixels", "decode", "seconds (median)", "peak growth MiB"], rows)
    )
    write_result("big_images", "Big PNGs: strip decoding against the whole decode", body)
    (RESULTS / "big_images.json").write_text(json.dumps(raw, indent=2))
    print(body)


if __name__ == "__main__":
    main()
