"""kill -9 while embedding: the decoding workers die with the run, hold no lock, and the
same command then runs at once (issue 28: orphans kept the lock, "busy: pid <dead>")."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import clipsearch
from tests.conftest import need_runtime, write_images
from tests.processes import alive, children, open_files

PHOTOS = 400
WORKERS = 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_kill_9_while_embedding_leaves_no_worker_and_no_lock(
    tmp_path: Path, store: Callable[..., str], runtime: str
) -> None:
    """torch reads with DataLoader workers, the optimised runtimes with a process pool."""
    need_runtime(runtime)
    photos = tmp_path / "photos"
    write_images(photos, PHOTOS, size=(640, 480))
    db = store()
    command = [
        sys.executable, "-m", "clipsearch.cli", "index", str(photos), "--db", db,
        "--model", "clipsearch-mini", "--runtime", runtime, "--precision", "fp32",
        "--workers", str(WORKERS), "--batch-size", "4", "--quiet",
    ]  # fmt: skip
    run = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None and len(workers) < WORKERS:
        workers = children(run.pid)
        time.sleep(0.05)
    assert run.poll() is None and len(workers) >= WORKERS, "the run never started its workers"
    time.sleep(1.0)  # one second into embedding
    workers |= children(run.pid)
    held = {w: open_files(w) for w in workers}
    assert not {w: f for w, f in held.items() if any(n.endswith("write.lock") for n in f)}
    run.kill()
    run.wait()
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(workers), f"workers outlived the killed run: {alive(workers)}"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with clipsearch.open(db, create=False) as index:
        assert index.db.count() == PHOTOS
