"""The three paths a redesign of the core must not slow down (issue 30), measured through
the public faces only (`clipsearch.open`, `Index.add`, `Index.search`, the CLI), so the
same script runs on the code before and after:

- indexing: `Index.add` over the 800 Flickr8k photos into a new index (model loaded
  before the clock starts), photos/s, `--runs` times;
- searching at 100,000 photos: `Index.search(text)` one query at a time on a copy of the
  100,000-photo index of `serve_load.py`, never-seen captions (the model encodes each) and
  then the same captions again (their vectors come from the query cache), p50 / p99;
- the CLI's cold start for a new text query: `clipsearch search "NEW TEXT" --db INDEX` in a
  fresh process on the 800-photo index, wall time, `--runs` times.

    .venv/bin/python benchmarks/core_paths.py [--model clipsearch-mini] [--runs 3] [--label before]

Writes benchmarks/results/core_paths_LABEL.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clipsearch
from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from benchmarks.serve_load import Queries, base_index


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def indexing(model: str, runs: int, tmp: Path) -> tuple[list[float], Path]:
    """photos/s of each run; the last run's index is kept for the CLI runs."""
    photos = datasets.FLICKR / "images"
    count = len(list(photos.glob("*.jpg")))
    rates, db = [], tmp / "index-0"
    for n in range(runs):
        db = tmp / f"index-{n}"
        with clipsearch.open(str(db), model=model) as idx:
            idx.encoder  # noqa: B018 - the model loads before the clock starts
            start = time.perf_counter()
            idx.add([photos])
            rates.append(count / (time.perf_counter() - start))
    return rates, db


def searching(texts: list[str], tmp: Path) -> dict[str, list[float]]:
    """Milliseconds per `Index.search`, new texts then the same texts again."""
    db = tmp / "index-100k"
    shutil.copytree(base_index(100_000), db, ignore=shutil.ignore_patterns("done", "thumbnails"))
    out: dict[str, list[float]] = {"new text": [], "repeated text": []}
    with clipsearch.open(str(db), create=False) as idx:
        idx.search(text="warming up: model and FAISS index loaded", k=10)
        for label in out:
            for text in texts:
                start = time.perf_counter()
                idx.search(text=text, k=10)
                out[label].append((time.perf_counter() - start) * 1000)
    return out


def cli_cold_start(db: Path, runs: int) -> list[float]:
    cli = str(Path(sys.executable).with_name("clipsearch"))
    times = []
    for n in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(
            [cli, "search", f"a dog running on the beach number {n}", "--db", str(db), "-k", "10"],
            check=True, capture_output=True,
        )  # fmt: skip
        if n:  # the first run fills the OS file cache, as a user's first search did
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clipsearch-mini")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--label", default="before")
    args = parser.parse_args()
    queries = Queries()
    queries.n = 1_000  # past the captions the 100k index's cache may hold from other runs
    texts = [queries.unique() for _ in range(args.queries)]
    with tempfile.TemporaryDirectory(prefix="clipsearch-core-paths-") as tmp:
        rates, db = indexing(args.model, args.runs, Path(tmp))
        searches = searching(texts, Path(tmp))
        starts = cli_cold_start(db, args.runs)
    rows = [
        ["index 800 Flickr8k photos (`Index.add`)", f"{statistics.median(rates):.1f} photos/s",
         " / ".join(f"{r:.1f}" for r in rates)],
    ]  # fmt: skip
    for label, times in searches.items():
        rows.append([
            f"`Index.search`, 100,000 photos, {label} ({len(times)} queries)",
            f"p50 {percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms",
            f"mean {statistics.mean(times):.1f} ms",
        ])  # fmt: skip
    rows.append([
        "`clipsearch search NEW_TEXT` cold start, 800 photos",
        f"{statistics.median(starts):.2f} s", " / ".join(f"{s:.2f}" for s in starts),
    ])  # fmt: skip
    body = (
        f"Model {args.model}, default runtime, through the public faces only (the same "
        "script runs before and after a change of the core).\n\n"
        + markdown_table(["path", "median", "each run"], rows)
    )
    name = f"core_paths_{args.label}"
    write_result(name, f"Core paths ({args.label})", body)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"indexing_photos_s": rates, "search_ms": searches, "cli_s": starts}, indent=1)
    )
    print(body)


if __name__ == "__main__":
    main()
