"""`clipsearch serve` as a real process: uvicorn on a free loopback port, the model loaded
once, an indexing job with decoding worker processes forked from the threaded server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import (
    Collection,
    environment,
    free_port,
    start_server,
    stop_server,
)


@pytest.fixture(scope="module")
def server(collection: Collection) -> Iterator[str]:
    process, base = start_server(collection, "--workers", "2")
    yield base
    stop_server(process)


def test_serves_the_page_the_api_and_its_schema(server: str) -> None:
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "<title>clipsearch</title>" in page.text
    schema = httpx.get(f"{server}/api/openapi.json").json()
    assert "/api/search" in schema["paths"] and "/api/jobs" in schema["paths"]
    hits = httpx.get(f"{server}/api/search", params={"q": "a dog", "k": 3}).json()["hits"]
    assert len(hits) == 3 and all(Path(h["path"]).exists() for h in hits)


def test_a_job_with_worker_processes_in_the_real_server(
    server: str, collection: Collection
) -> None:
    started = httpx.post(f"{server}/api/jobs", json={"paths": [str(collection.new_folder)]})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 120
    job = started.json()
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = httpx.get(f"{server}/api/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    assert job["summary"]["added"] == 12
    assert httpx.get(f"{server}/api/health").json()["images"] == 30


def test_refuses_to_listen_beyond_loopback_without_a_key(collection: Collection) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "serve", "--db", str(collection.db),
         "--host", "0.0.0.0", "--port", str(free_port())],
        env={k: v for k, v in environment().items() if k != "CLIPSEARCH_API_KEY"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "API key" in result.stderr and "Traceback" not in result.stderr


def test_slow_connections_neither_stop_others_nor_stay_open(collection: Collection) -> None:
    """200 connections that send half a request line and stall (slowloris): searches keep
    being answered meanwhile, and the stalled sockets are closed by the header deadline."""
    import socket

    process, base = start_server(collection, "--header-timeout", "2")
    port = int(base.rsplit(":", 1)[1])
    slow: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(s)
        started = time.monotonic()
        answered = httpx.get(f"{base}/api/search", params={"q": "red", "k": 3}, timeout=30)
        assert answered.status_code == 200
        assert time.monotonic() - started < 10
        time.sleep(3)  # past the 2 s deadline
        closed = 0
        for s in slow:
            s.settimeout(5)
            try:
                closed += s.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass  # still open
        assert closed == 200
        # A slow but live client is served: each part well within the deadline.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for part in (b"GET /api/health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
                s.sendall(part)
                time.sleep(0.5)
            assert s.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        for s in slow:
            s.close()
        stop_server(process)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_hostile_uploads_cost_the_real_server_bounded_memory(collection: Collection) -> None:
    """Two extreme strips (a 100000x1 PNG once cost 2.7 GB per upload) and a bomb, sent to a
    real server process: its peak resident memory, read from /proc, barely moves."""
    import io

    from PIL import Image

    from tests.test_bad_inputs import _png_claiming

    process, base = start_server(collection)
    try:
        strip, tall = io.BytesIO(), io.BytesIO()
        Image.new("RGB", (100_000, 1), (10, 120, 200)).save(strip, "PNG", optimize=True)
        Image.new("RGB", (1, 100_000), (200, 120, 10)).save(tall, "PNG", optimize=True)
        httpx.get(f"{base}/api/search", params={"q": "warm up"}, timeout=60)
        before = _peak_rss_mib(process.pid)
        for name, data, status in (("strip.png", strip.getvalue(), 200),
                                   ("tall.png", tall.getvalue(), 200),
                                   ("bomb.png", _png_claiming(30_000, 30_000), 413)):  # fmt: skip
            response = httpx.post(f"{base}/api/search/image", files={"file": (name, data)},
                                  timeout=60)  # fmt: skip
            assert response.status_code == status, response.text
        grown = _peak_rss_mib(process.pid) - before
        assert grown < 100, f"the server's peak memory grew by {grown:.0f} MiB"
    finally:
        stop_server(process)
