"""Issue 29's bars for `clipsearch serve`, measured in one run: 20 clients sending never-seen
texts (closed loop, one keep-alive connection each, loopback), default runtime,

- idle, at each index size (default 10,000 and 100,000 synthetic photos): requests/s and
  p50/p99 latency (bars: >= 150 req/s, p99 <= 500 ms);
- while a server job indexes the 10,000 CIFAR-10 test photos into the first size's index,
  for as long as the job runs: requests/s, p99, errors, and the job's own photos/s under
  that load (bars: >= 50 req/s, p99 <= 800 ms, 0 errors, job >= 150 photos/s).

    .venv/bin/python benchmarks/serve_bars.py [--model clipsearch-mini] [--store sqlite]
        [--sizes 10000,100000] [--seconds 20] [--no-job]

`--store postgresql` copies each index into a fresh database on the server named by
CLIPSEARCH_BENCH_POSTGRES (default: the local socket) and serves that. A model other than
clipsearch-mini (`ViT-B-32`: random weights, the same cost as trained ones) builds its own
indexes once, in the data cache. Every figure comes from this run; the load generator
shares the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from benchmarks.index_memory import generate
from benchmarks.serve_load import (
    MODEL,
    Outcome,
    Queries,
    _env,
    base_index,
    batching_of,
    load,
    start,
)

CLIENTS = 20
BARS = {"idle": (150.0, 500.0), "job": (50.0, 800.0)}  # (req/s at least, p99 ms at most)
JOB_RATE_BAR = 150.0
POSTGRES = os.environ.get(
    "CLIPSEARCH_BENCH_POSTGRES", "postgresql+psycopg://@/postgres?host=/var/run/postgresql"
)


def model_index(model: str, n: int) -> Path:
    """The index of `n` synthetic photos made with `model`, built once in the data cache."""
    if model == MODEL:
        return base_index(n)
    db = datasets.cache_dir() / f"serve-{n}-{model}"
    if not (db / "done").exists():
        shutil.rmtree(db, ignore_errors=True)
        print(f"building the {n:,}-image {model} index once ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "clipsearch.cli", "index", str(generate(n)), "--db", str(db),
             "--model", model, "--quiet"],
            check=True, env=_env(),
        )  # fmt: skip
        (db / "done").touch()
    return db


def copy_index(source: Path, store: str, tmp: Path) -> tuple[str, str | None]:
    """A private copy of `source` to serve: a folder, or a new PostgreSQL database (with the
    database's name, to drop afterwards)."""
    if store == "sqlite":
        db = tmp / f"index-{uuid.uuid4().hex[:6]}"
        shutil.copytree(source, db, ignore=shutil.ignore_patterns("done", "thumbnails"))
        return str(db), None
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"clipsearch_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "copy", str(source), url],
        check=True, env=_env(), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return url, name


def drop_database(name: str | None) -> None:
    if name is None:
        return
    from sqlalchemy import create_engine

    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@dataclass
class Run:
    """One scenario's figures (the job's only in the run with a job)."""

    requests: int
    seconds: float
    req_s: float
    p50: float
    p99: float
    errors: int
    texts_per_call: float | None = None
    rss_mib: float = 0.0
    job_state: str | None = None
    job_done: int = 0
    job_total: int = 0
    job_seconds: float = 0.0

    @classmethod
    def of(cls, outcome: Outcome, base: str) -> Run:
        lat = np.asarray(outcome.latencies_ms)
        calls = batching_of(base)
        return cls(
            requests=len(lat), seconds=outcome.seconds, req_s=len(lat) / outcome.seconds,
            p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)),
            errors=outcome.errors,
            texts_per_call=calls[0] / calls[1] if calls and calls[1] else None,
        )  # fmt: skip

    @property
    def job_rate(self) -> float:
        return self.job_done / self.job_seconds if self.job_seconds else 0.0

    def met(self) -> bool:
        least, most = BARS["job" if self.job_state else "idle"]
        ok = self.req_s >= least and self.p99 <= most and self.errors == 0
        return ok and (self.job_state is None or self.job_rate >= JOB_RATE_BAR)

    def row(self, label: str) -> list[str]:
        least, most = BARS["job" if self.job_state else "idle"]
        bar = f"{least:.0f} req/s, p99 {most:.0f} ms"
        job = "—"
        if self.job_state:
            bar += f", job {JOB_RATE_BAR:.0f}/s"
            job = (f"{self.job_done:,}/{self.job_total:,} in {self.job_seconds:.0f} s: "
                   f"{self.job_rate:.0f}/s ({self.job_state})")  # fmt: skip
        per_call = f"{self.texts_per_call:.1f}" if self.texts_per_call else "—"
        return [label, f"{self.requests:,}", f"{self.req_s:.1f}", f"{self.p50:.0f}",
                f"{self.p99:.0f}", str(self.errors), per_call, job, bar,
                "**yes**" if self.met() else "no"]  # fmt: skip


def warm(base: str, queries: Queries) -> None:
    """A few searches first: the model's first calls and the caches are not what is timed."""
    for _ in range(10):
        httpx.get(f"{base}/api/search", params={"q": queries.unique()}, timeout=120)


def idle_run(db: str, queries: Queries, seconds: float) -> Run:
    server, _ = start(db)
    try:
        warm(server.base, queries)
        outcome = asyncio.run(load(server.base, CLIENTS, seconds, queries.unique))
        return replace(Run.of(outcome, server.base), rss_mib=server.peak_rss_mib())
    finally:
        server.stop()


def job_run(db: str, queries: Queries, limit: float) -> Run:
    """The load for as long as a server job indexes the CIFAR-10 test photos (at most
    `limit` seconds), and what the job did meanwhile."""
    server, _ = start(db)
    folder = datasets.cifar_folder("test")
    state: dict[str, Any] = {}
    took = 0.0
    try:
        warm(server.base, queries)

        async def with_job() -> Outcome:
            nonlocal state, took
            async with httpx.AsyncClient(base_url=server.base, timeout=60) as http:
                started = (await http.post("/api/jobs", json={"paths": [str(folder)]})).json()
                began = time.perf_counter()

                async def watch() -> None:
                    nonlocal state, took
                    while True:
                        await asyncio.sleep(0.25)
                        state = (await http.get(f"/api/jobs/{started['id']}")).json()
                        took = time.perf_counter() - began
                        if state["state"] in ("done", "failed"):
                            return

                watcher = asyncio.create_task(watch())
                outcome = await load(server.base, CLIENTS, limit, queries.unique, stop=watcher)
                watcher.cancel()
                return outcome

        outcome = asyncio.run(with_job())
        return replace(
            Run.of(outcome, server.base), rss_mib=server.peak_rss_mib(),
            job_state=str(state.get("state")), job_done=int(state.get("done") or 0),
            job_total=int(state.get("total") or 0), job_seconds=took,
        )  # fmt: skip
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--job-limit", type=float, default=180, help="longest job run, s")
    parser.add_argument("--no-job", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3, help="idle runs per size (the median one is shown)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    queries = Queries()
    runs: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="clipsearch-serve-bars-") as tmp:
        for n in sizes:
            db, name = copy_index(model_index(args.model, n), args.store, Path(tmp))
            try:
                runs[f"idle, {n:,} photos"] = [
                    idle_run(db, queries, args.seconds) for _ in range(args.repeat)
                ]
                if n == sizes[0] and not args.no_job:
                    label = f"during a job of 10,000 photos, {n:,} before"
                    runs[label] = [job_run(db, queries, args.job_limit)]
            finally:
                drop_database(name)
    headers = ["scenario", "requests", "req/s", "p50 ms", "p99 ms", "errors",
               "texts per model call", "job (photos, time, rate)", "bar", "met",
               "req/s of each run"]  # fmt: skip
    rows = []
    for label, repeats in runs.items():
        median = sorted(repeats, key=lambda r: r.req_s)[len(repeats) // 2]
        rows.append([*median.row(label), " / ".join(f"{r.req_s:.0f}" for r in repeats)])
    body = (
        f"{CLIENTS} clients, never-seen texts, model {args.model}, default runtime, store "
        f"{args.store}; each idle scenario {args.repeat} runs of {args.seconds:.0f} s, the "
        "median run (by req/s) shown, as timings on this machine swing from run to run; the "
        f"job run lasts as long as the job (at most {args.job_limit:.0f} s).\n\n"
        + markdown_table(headers, rows)
    )
    print(body)
    stem = f"serve_bars_{args.model.replace(':', '_')}_{args.store}"
    write_result(stem, f"Serving bars: {args.model}, {args.store}", body)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({k: [asdict(r) for r in v] for k, v in runs.items()}, indent=2)
    )


if __name__ == "__main__":
    main()
