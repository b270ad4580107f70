"""Where a search's time goes under load (issue 29, step 1): 20 clients sending never-seen
texts to `clipsearch serve` (default runtime), idle and while a server job indexes, with

- each request's latency split into the time inside its handler (`took_ms`, measured by the
  server from the route's start) and the rest (waiting for a worker thread or the batcher,
  HTTP, JSON, the event loop), and
- a sampling profile of the server (py-spy, every thread, 100 Hz, waiting threads left
  out): the share of the busy samples in each stage (tokenising, the model, FAISS, exact
  rescoring, SQL, the keyword index, JSON, HTTP, the indexing job).

    .venv/bin/python benchmarks/serve_profile.py --db INDEX [--job FOLDER] [--seconds 20]

Needs py-spy on PATH (pip install py-spy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from benchmarks._common import RESULTS, markdown_table, write_result
from benchmarks.serve_load import Connection, Queries, start

#: (stage, substrings of a frame): a sample belongs to the first stage whose marker appears
#: in its stack, looked for from the innermost frame outwards.
STAGES = [
    ("tokenise", ("tokens.py", "tokenizers", "tokenization", "TrimmedTokenizer")),
    ("model call", ("backends.py", "OpenVinoTower", "OnnxTower", "openvino", "onnxruntime",
                    "torch/nn")),
    ("FAISS", ("faiss",)),
    ("exact rescoring", ("rescore", "exact")),
    ("keyword index", ("keyword_index", "pg_keywords", "hybrid.py")),
    ("SQL (SQLAlchemy, sqlite3)", ("sqlalchemy", "sqlite3", "storage/db.py")),
    ("JSON / pydantic", ("jsonable_encoder", "pydantic", "json/", "serialize")),
    ("indexing job", ("indexer/", "jobs.py")),
    ("HTTP, event loop", ("uvicorn", "h11", "starlette", "asyncio", "anyio", "fastapi")),
]  # fmt: skip


def stage_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for stage, markers in STAGES:
            if any(m in frame for m in markers):
                return stage
    return "other"


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or "/tmp/tools/bin/py-spy"
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
         "--format", "raw", "--output", str(out), "--threads", "--subprocesses", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stages(raw: Path) -> tuple[Counter[str], Counter[str]]:
    """Busy samples (py-spy leaves out threads it sees waiting) by stage, and by the
    innermost clipsearch function on the stack (where in our code the time starts)."""
    busy: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        busy[stage_of(stack)] += int(count)
        inner = [f for f in stack.split(";") if "clipsearch/" in f]
        if inner:
            ours[inner[-1].split(" (")[0] + " (" + inner[-1].rsplit("/", 1)[-1]] += int(count)
    return busy, ours


async def clients(base: str, count: int, seconds: float) -> tuple[list[float], list[float]]:
    queries = Queries()
    latencies: list[float] = []
    inside: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        connection = await Connection.open(base)
        try:
            while time.perf_counter() < deadline:
                query = urlencode({"q": queries.unique(), "k": 20})
                t0 = time.perf_counter()
                status, body = await connection.get(f"/api/search?{query}")
                latencies.append((time.perf_counter() - t0) * 1000)
                if status == 200:
                    inside.append(float(json.loads(body)["took_ms"]))
        finally:
            connection.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies, inside


def scenario(db: str, args: argparse.Namespace, job: Path | None) -> dict[str, object]:
    server, _ = start(db)
    try:
        # Warm: the model opens and the caches load before anything is timed.
        httpx.get(f"{server.base}/api/search", params={"q": "warm up"}, timeout=120)
        if job is not None:
            httpx.post(f"{server.base}/api/jobs", json={"paths": [str(job)]}, timeout=30)
            time.sleep(2)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            spy = profile(server.process.pid, args.seconds, raw)
            latencies, inside = asyncio.run(clients(server.base, args.clients, args.seconds))
            spy.wait(timeout=120)
            busy, ours = stages(raw)
            if args.keep_raw is not None:
                args.keep_raw.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw, args.keep_raw / ("job.txt" if job else "idle.txt"))
        stats = httpx.get(f"{server.base}/api/stats", timeout=30).json()
    finally:
        server.stop()
    lat, ins = np.asarray(latencies), np.asarray(inside)
    return {
        "job": str(job) if job else None, "requests": len(lat),
        "req_s": len(lat) / args.seconds, "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)), "inside_p50": float(np.percentile(ins, 50)),
        "inside_p99": float(np.percentile(ins, 99)), "busy": dict(busy),
        "ours": dict(ours.most_common(12)),
        "threads_busy": sum(busy.values()) / (100 * args.seconds),
        "batching": stats.get("query_batching"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True, help="an index folder or a PostgreSQL URL")
    parser.add_argument("--job", type=Path, help="a folder a server job indexes meanwhile")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--keep-raw", type=Path, help="a folder to keep py-spy's samples in")
    args = parser.parse_args()
    runs = [scenario(args.db, args, None)]
    if args.job is not None:
        runs.append(scenario(args.db, args, args.job))
    names = [s for s, _ in STAGES] + ["other"]
    headers = ["", *("idle" if r["job"] is None else "during a job" for r in runs)]
    rows = [
        ["requests/s", *(f"{r['req_s']:.1f}" for r in runs)],
        ["latency p50 / p99 ms", *(f"{r['p50']:.0f} / {r['p99']:.0f}" for r in runs)],
        ["inside the handler p50 / p99 ms",
         *(f"{r['inside_p50']:.0f} / {r['inside_p99']:.0f}" for r in runs)],
        ["threads busy on average (py-spy)", *(f"{r['threads_busy']:.2f}" for r in runs)],
    ]  # fmt: skip
    for name in names:
        cells = []
        for r in runs:
            busy = r["busy"]
            assert isinstance(busy, dict)
            share = busy.get(name, 0) / max(1, sum(busy.values()))
            cells.append(f"{share:.0%}")
        rows.append([f"busy samples: {name}", *cells])
    where = "PostgreSQL" if "://" in args.db else Path(args.db).name
    body = (
        f"{args.clients} clients, never-seen texts, {args.seconds:.0f} s a scenario, index "
        f"`{where}`; py-spy at 100 Hz over every thread (busy = not waiting).\n\n"
        + markdown_table(headers, rows)
    )
    for r in runs:
        ours = r["ours"]
        assert isinstance(ours, dict)
        total = max(1, sum(r["busy"].values()))  # type: ignore[union-attr]
        body += (
            f"\n\nInnermost clipsearch function of the busy samples, "
            f"{'idle' if r['job'] is None else 'during a job'} (top 12):\n\n"
            + markdown_table(["function", "share"],
                             [[f"`{k}`", f"{v / total:.0%}"] for k, v in ours.items()])
        )  # fmt: skip
    print(body)
    write_result("serve_profile", "Where a search's time goes under load", body)
    (RESULTS / "serve_profile.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
