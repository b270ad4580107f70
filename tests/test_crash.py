"""SIGKILL in the middle of an indexing run, then resume: same end state as a clean run."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from tests.conftest import write_images

N_IMAGES = 300


def _index_command(photos: Path, db: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clipsearch.cli",
        "index",
        str(photos),
        "--db",
        str(db),
        "--model",
        "tiny-random",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--quiet",
    ]


def _count_rows(db: Path) -> int:
    try:
        # Read-only: a plain connect would create an empty file before the run does.
        with sqlite3.connect(f"file:{db / 'clipsearch.db'}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM images").fetchone()[0])
    except sqlite3.Error:
        return 0


def _kill_mid_run(photos: Path, db: Path) -> int:
    """Start indexing, SIGKILL it once some (not all) batches are committed; rows at death."""
    proc = subprocess.Popen(_index_command(photos, db), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _count_rows(db) >= 10:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    return _count_rows(db)


def _state(db: Path) -> tuple[dict[str, tuple[str, bytes]], list[list[str]]]:
    with clipsearch.open(db, create=False) as idx:
        rows = {r.path: (r.sha256, r.vector) for r in idx.db.rows()}
        searches = [
            [h.path for h in idx.search(text=q, k=10)] for q in ("a dog", "sunset", "red car")
        ]
    return rows, searches


@pytest.mark.slow
def test_kill_9_then_resume_equals_a_clean_run(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos, N_IMAGES, size=(320, 240))

    killed_at = _kill_mid_run(photos, tmp_path / "crashed")
    assert 0 < killed_at < N_IMAGES, f"the kill did not land mid-run ({killed_at} rows)"

    resumed = subprocess.run(
        [*_index_command(photos, tmp_path / "crashed"), "--json"], capture_output=True, check=True
    )
    assert b'"added": ' + str(N_IMAGES - killed_at).encode() in resumed.stdout
    subprocess.run(_index_command(photos, tmp_path / "clean"), check=True, capture_output=True)

    crashed_rows, crashed_hits = _state(tmp_path / "crashed")
    clean_rows, clean_hits = _state(tmp_path / "clean")
    assert crashed_rows.keys() == clean_rows.keys()
    assert len(crashed_rows) == N_IMAGES
    for path, (sha, vector) in clean_rows.items():
        assert crashed_rows[path][0] == sha
        np.testing.assert_allclose(
            np.frombuffer(crashed_rows[path][1], np.float32),
            np.frombuffer(vector, np.float32),
            atol=1e-5,
        )
    assert crashed_hits == clean_hits


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
@pytest.mark.parametrize(
    ("syscall", "nth"),
    [("pwrite64", 2), ("pwrite64", 6), ("pwrite64", 30), ("rename", 1), ("fsync", 1),
     ("fdatasync", 1), ("ftruncate", 1), ("unlink", 1)],
)  # fmt: skip
def test_killed_while_creating_the_index_then_resumed(
    tmp_path: Path, syscall: str, nth: int
) -> None:
    """A first run killed at an exact system call while it creates the database (strace's
    fault injection): the same command then finishes it as if nothing had happened."""
    photos = tmp_path / "photos"
    write_images(photos, 12)
    command = _index_command(photos, tmp_path / "db")
    killed = subprocess.run(
        ["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={syscall}",
         "-e", f"inject={syscall}:signal=KILL:when={nth}", *command],
        capture_output=True,
    )  # fmt: skip
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    resumed = subprocess.run([*command, "--json"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _count_rows(tmp_path / "db") == 12
