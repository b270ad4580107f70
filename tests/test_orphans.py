"""kill -9 while embedding: the decoding workers die with the run, hold no lock, and the
same command then runs at once (issue 28: orphans kept the lock, "busy: pid <dead>")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import clipsearch
from tests.conftest import need_runtime, write_images

PHOTOS = 400
WORKERS = 2


def _children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (zombies count as gone)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _open_files(pid: int) -> list[str]:
    """What a process's descriptors point at (files by path, sockets as socket:[inode])."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            found.append(os.readlink(fd))
        except OSError:
            continue
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


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
        workers = _children(run.pid)
        time.sleep(0.05)
    assert run.poll() is None and len(workers) >= WORKERS, "the run never started its workers"
    time.sleep(1.0)  # one second into embedding
    workers |= _children(run.pid)
    held = {w: _open_files(w) for w in workers}
    assert not {w: f for w, f in held.items() if any(n.endswith("write.lock") for n in f)}
    run.kill()
    run.wait()
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(workers), f"workers outlived the killed run: {_alive(workers)}"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with clipsearch.open(db, create=False) as index:
        assert index.db.count() == PHOTOS
