"""Memory while indexing a large collection: does resident memory stay flat as rows pile up?

Generates N distinct small JPEGs (default 100,000, 96x96, in the data cache; not in the
repository), indexes them with `clipsearch index` (clipsearch-mini, the default 2 decoding
workers) in a child process, and samples the resident memory of that process and of its
decoding workers every half second, with the number of rows committed so far.

    .venv/bin/python benchmarks/index_memory.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result


def generate(n: int, size: int = 96) -> Path:
    """`n` distinct JPEGs: smooth random colour fields (fast to make, cheap to decode)."""
    folder = datasets.cache_dir() / f"synthetic-{n}"
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(sub / f"{i:06d}.jpg")
    (folder / "done").touch()
    return folder


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM images").fetchone()[0])
    except sqlite3.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model", default="clipsearch-mini")
    args = parser.parse_args()
    started = time.perf_counter()
    folder = generate(args.n)
    print(f"{args.n:,} photos ready in {time.perf_counter() - started:.0f} s", flush=True)
    cli = str(Path(sys.executable).with_name("clipsearch"))
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        started = time.perf_counter()
        proc = subprocess.Popen([cli, "index", str(folder), "--db", str(db), "--model",
                                 args.model, "-q"], stdout=subprocess.DEVNULL)  # fmt: skip
        while proc.poll() is None:
            main_rss = rss_mib(proc.pid)
            workers = sum(rss_mib(c) for c in children(proc.pid))
            rows = committed(db / "clipsearch.db")
            samples.append((time.perf_counter() - started, rows, main_rss, workers))
            time.sleep(0.5)
        wall = time.perf_counter() - started
        assert proc.returncode == 0, proc.returncode
        final_rows = committed(db / "clipsearch.db")
    rows = []
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        target = fraction * final_rows
        at = next((s for s in samples if s[1] >= target), samples[-1])
        rows.append([f"{at[1]:,}", f"{at[0]:.0f}", f"{at[2]:.0f}", f"{at[3]:.0f}"])
    peak_main = max(s[2] for s in samples)
    peak_total = max(s[2] + s[3] for s in samples)
    table = markdown_table(["rows committed", "seconds", "main process MiB", "workers MiB"], rows)
    notes = (
        f"`clipsearch index` of {args.n:,} distinct 96x96 JPEGs with `{args.model}`, 2 decoding "
        f"workers, batch 32: {final_rows:,} rows in {wall:.0f} s ({final_rows / wall:.0f} "
        f"images/s). Resident memory sampled every 0.5 s: peak {peak_main:.0f} MiB for the "
        f"indexing process, {peak_total:.0f} MiB with its workers."
    )
    body = f"{table}\n\n{notes}"
    path = write_result("index_memory", "Memory while indexing", body)
    (RESULTS / "index_memory.json").write_text(json.dumps(samples) + "\n")
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
