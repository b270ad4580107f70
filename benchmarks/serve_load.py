"""Load on `clipsearch serve`: concurrent clients doing text searches on loopback.

Builds once (in the data cache) an index of 100,000 images with clipsearch-mini (the
synthetic JPEGs of `index_memory.py`; 100k vectors means an IVF index), copies it for the run,
starts `clipsearch serve` on a free loopback port, and runs N clients for T seconds each in
several scenarios, all in one run:

- unique queries (every request encodes a text), query batching on (the default) and off;
- repeated queries (answered from the query cache: no model call);
- unique queries while an indexing job adds the 10,000 CIFAR-10 test images.

Each client holds one keep-alive connection and sends one request at a time (closed loop;
a bare asyncio HTTP/1.1 client, far lighter than a client library). Reports requests/s,
p50/p99 latency, errors, how many model calls served the text encodings, and the server's
peak RSS. The load generator runs on the same 2 cores as the server, so the figures include
its (small) cost.

    .venv/bin/python benchmarks/serve_load.py [--clients 20] [--seconds 30]
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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from benchmarks.index_memory import generate

MODEL = "clipsearch-mini"
READING = """How to read it:

- *unique queries*: every request's text is new, so it must go through the text encoder.
  With batching on, requests that arrive while the model is busy are encoded together in
  its next call ("text encodings / model calls" gives the mean batch), and a request
  waiting for its batch holds no worker thread.
- *repeated queries*: the texts are in the index's query cache, so no model runs; this is
  the cost of the rest (HTTP, FAISS candidates, exact rescoring from SQLite, JSON). The
  40-thread row is FastAPI's default thread pool; fewer threads do better because the work
  is CPU-bound and Python runs one thread at a time.
- *during an indexing job*: the same unique-query load while the server indexes the 10,000
  CIFAR-10 test images in the background; searches keep answering and see each committed
  batch.
"""
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def base_index(n: int) -> Path:
    """An index of `n` synthetic images, built once and kept in the data cache."""
    db = datasets.cache_dir() / f"serve-{n}-{MODEL}"
    if (db / "done").exists():
        return db
    photos = generate(n)
    print(f"building the {n:,}-image index once (a few minutes) ...", file=sys.stderr)
    shutil.rmtree(db, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "index", str(photos), "--db", str(db),
         "--model", MODEL, "--quiet"],
        check=True, env=_env(),
    )  # fmt: skip
    (db / "done").touch()
    return db


def _env() -> dict[str, str]:
    import os

    return {**os.environ, **ENV}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(db: Path | str, *flags: str) -> tuple[Server, float]:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "clipsearch.cli", "serve", "--db", str(db), "--port", str(port),
         "--log-level", "warning", *flags],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return Server(process, base), time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.1)


class Queries:
    """Flickr8k captions; past the first 4,000, a numbered variant, so none repeats."""

    def __init__(self) -> None:
        self.captions = [c for cs in datasets.flickr_captions().values() for c in cs]
        self.n = 0

    def unique(self) -> str:
        text = self.captions[self.n % len(self.captions)]
        round_ = self.n // len(self.captions)
        self.n += 1
        return text if round_ == 0 else f"{text} ({round_})"


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


class Connection:
    """A bare HTTP/1.1 keep-alive connection: a load generator much lighter than a full
    client library, so that more of the 2 cores are left to the server being measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: str) -> Connection:
        host, port = base.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(
    base: str,
    clients: int,
    seconds: float,
    next_query: object,
    during: object = None,
    stop: asyncio.Future[None] | None = None,
) -> Outcome:
    """`clients` closed-loop clients for `seconds` (or until `stop` is done)."""
    outcome = Outcome()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection = await Connection.open(base)
        try:
            while time.perf_counter() < deadline and not (stop is not None and stop.done()):
                query = urlencode({"q": next_query(), "k": 20})  # type: ignore[operator]
                t0 = time.perf_counter()
                try:
                    status, body = await connection.get(f"/api/search?{query}")
                    ok = status == 200 and len(json.loads(body)["hits"]) == 20
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    connection.close()
                    connection = await Connection.open(base)
                outcome.starts.append(t0)
                outcome.latencies_ms.append((time.perf_counter() - t0) * 1000)
                outcome.errors += 0 if ok else 1
        finally:
            connection.close()

    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        began = time.perf_counter()
        side = asyncio.create_task(during(http)) if during is not None else None  # type: ignore[operator]
        await asyncio.gather(*(client() for _ in range(clients)))
        outcome.seconds = time.perf_counter() - began
        if side is not None:
            side.cancel()
    return outcome


def row(name: str, outcome: Outcome, calls: tuple[int, int] | None, rss: float) -> list[str]:
    lat = np.asarray(outcome.latencies_ms)
    batching = f"{calls[0]:,} / {calls[1]:,}" if calls else "—"
    return [
        name,
        f"{len(lat):,}",
        f"{len(lat) / outcome.seconds:.1f}",
        f"{np.percentile(lat, 50):.0f}",
        f"{np.percentile(lat, 99):.0f}",
        str(outcome.errors),
        batching,
        f"{rss:.0f}",
    ]


def cached_run(server: Server, texts: list[str], args: argparse.Namespace, label: str) -> list[str]:
    """Requests that find their query in the query cache: no model call at all."""
    for text in texts:
        httpx.get(f"{server.base}/api/search", params={"q": text}, timeout=60)
    picks = iter(np.random.default_rng(0).choice(len(texts), 10**7))
    outcome = asyncio.run(load(server.base, args.clients, args.seconds, lambda: texts[next(picks)]))
    return row(f"{len(texts)} repeated queries (query cache){label}", outcome, None,
               server.peak_rss_mib())  # fmt: skip


def encoder_rates(captions: list[str]) -> dict[int, float]:
    """Texts/s of the model alone at batch 1 and 16: the floor and ceiling for unique queries."""
    from clipsearch.models import load_encoder

    encoder = load_encoder(MODEL)
    encoder.encode_texts(captions[:16])
    rates = {}
    for batch in (1, 16):
        texts = captions[1000 : 1000 + 160]
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            encoder.encode_texts(texts[i : i + batch])
        rates[batch] = len(texts) / (time.perf_counter() - start)
    return rates


def batching_of(base: str) -> tuple[int, int] | None:
    stats = httpx.get(f"{base}/api/stats", timeout=30).json()
    found = stats.get("query_batching")
    return (found["requests"], found["model_calls"]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()

    source = base_index(args.n)
    queries = Queries()
    rates = encoder_rates(queries.captions)
    notes: list[str] = [
        f"the text encoder alone, in this run: {rates[1]:.0f} texts/s one at a time, "
        f"{rates[16]:.0f} texts/s in batches of 16 (the ceiling for unique queries)"
    ]
    rows: list[list[str]] = []
    raw: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="clipsearch-serve-load-") as tmp:
        db = Path(tmp) / "index"
        shutil.copytree(source, db, ignore=shutil.ignore_patterns("done", "thumbnails"))

        for name, flags in (("unique queries, batching on", ()),
                            ("unique queries, batching off", ("--no-batch-queries",))):  # fmt: skip
            server, startup = start(db, *flags)
            try:
                outcome = asyncio.run(load(server.base, args.clients, args.seconds, queries.unique))
                rows.append(row(name, outcome, batching_of(server.base), server.peak_rss_mib()))
                raw[name] = outcome.latencies_ms
                notes.append(f"{name}: server ready in {startup:.1f} s")
            finally:
                server.stop()

        repeated = [queries.unique() for _ in range(50)]
        for threads in (40,):  # what the default 4 worker threads are compared with
            server, _ = start(db, "--threads", str(threads))
            try:
                rows.append(cached_run(server, repeated, args, f", {threads} worker threads"))
            finally:
                server.stop()

        server, _ = start(db)
        try:
            rows.append(cached_run(server, repeated, args, ", 4 worker threads (default)"))

            job: dict[str, object] = {}

            async def index_meanwhile(http: httpx.AsyncClient) -> None:
                folder = datasets.cifar_folder("test")
                started = (await http.post("/api/jobs", json={"paths": [str(folder)]})).json()
                job["start"] = time.perf_counter()
                while True:  # until done, or cancelled when the clients stop
                    await asyncio.sleep(0.5)
                    state = (await http.get(f"/api/jobs/{started['id']}")).json()
                    job["state"], job["end"] = state, time.perf_counter()
                    if state["state"] in ("done", "failed"):
                        return

            before = batching_of(server.base)
            outcome = asyncio.run(
                load(server.base, args.clients, args.seconds, queries.unique, index_meanwhile)
            )
            after = batching_of(server.base)
            calls = (after[0] - before[0], after[1] - before[1]) if after and before else None
            rows.append(row("unique queries during an indexing job", outcome, calls,
                            server.peak_rss_mib()))  # fmt: skip
            state = job.get("state", {})
            assert isinstance(state, dict)
            took = float(job["end"]) - float(job["start"])  # type: ignore[arg-type]
            notes.append(
                f"indexing job under load: {state.get('state')} at the last look, "
                f"{state.get('done')}/{state.get('total')} images embedded in {took:.1f} s "
                f"({float(state.get('done') or 0) / took:.0f} images/s while serving)"
            )
            while state.get("state") not in ("done", "failed"):
                time.sleep(1)
                state = httpx.get(f"{server.base}/api/jobs", timeout=30).json()[0]
            final = httpx.get(f"{server.base}/api/health", timeout=30).json()["images"]
            notes.append(f"images after the job: {final:,}")
        finally:
            server.stop()

    headers = ["scenario", "requests", "req/s", "p50 ms", "p99 ms", "errors",
               "text encodings / model calls", "server peak RSS MiB"]  # fmt: skip
    table = markdown_table(headers, rows)
    print(table)
    print("\n".join(notes))
    body = (
        f"{args.clients} concurrent clients (one request at a time each), {args.seconds:.0f} s "
        f"per scenario, `GET /api/search?q=...&k=20` against an index of {args.n:,} images "
        f"({MODEL}, IVF index), server and load generator on the same machine, loopback.\n\n"
        f"{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + READING
    )
    write_result("serve", "Load on clipsearch serve", body)
    (RESULTS / "serve.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))


if __name__ == "__main__":
    main()
