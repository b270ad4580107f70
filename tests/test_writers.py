"""Several writers on one index: a clear 'busy' error or a queue (--wait), serialised
creation, and caches that are stamped with what they hold whatever the interleaving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from clipsearch.storage import vector_index as vi
from clipsearch.storage.db import Database
from clipsearch.storage.lock import WriterLock
from clipsearch.storage.verify import verify
from tests.conftest import CountingEncoder, make_image, write_images

#: A process that forgets and rebuilds (and saves) an index's image cache 15 times.
CACHE_SAVER = (
    "import sys, clipsearch\n"
    "from clipsearch.storage import vector_index as vi\n"
    "with clipsearch.open(sys.argv[1], create=False) as idx:\n"
    "    for _ in range(15):\n"
    "        vi.invalidate_cache(idx.cache_dir)\n"
    "        idx.refresh()\n"
    "        idx.vector_index()\n"
)


def _index(photos: Path, db: Path, *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "clipsearch.cli", "index", str(photos), "--db", str(db),
        "--model", "tiny-random", "--workers", "0", "--batch-size", "8", "--quiet", "--json",
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(db: Path) -> dict[str, str]:
    with clipsearch.open(db, create=False) as idx:
        return {r.path: r.sha256 for r in idx.db.rows()}


def _search_all(db: Path) -> set[str]:
    with clipsearch.open(db, create=False) as idx:
        vector = idx.db.vectors_for([idx.db.rows()[0].id])[2][0]
        return {h.path for h in idx.search_vectors(vector[None, :], k=10_000)[0]}


def test_a_second_writer_is_told_who_is_busy_or_queues(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 4)
    db = tmp_path / "db"
    db.mkdir()
    with WriterLock(db):
        busy = _index(tmp_path / "photos", db)
        _, err = busy.communicate(timeout=120)
        assert busy.returncode == 1
        assert err.count("\n") == 1, err
        assert "is busy" in err and f"pid {os.getpid()}" in err and "--wait" in err

        queued = _index(tmp_path / "photos", db, "--wait")
        time.sleep(3)
        assert queued.poll() is None  # still waiting for the lock
    out, err = queued.communicate(timeout=120)
    assert queued.returncode == 0, err
    assert json.loads(out)["added"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_two_first_runs_on_a_new_index(tmp_path: Path, trial: int) -> None:
    write_images(tmp_path / "a", 40)
    write_images(tmp_path / "b", 40, start=100)
    db = tmp_path / "db"
    first = _index(tmp_path / "a", db, "--wait")
    time.sleep(0.05 * trial)
    second = _index(tmp_path / "b", db, "--wait")
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert len(_rows(db)) == 80
    assert len(_search_all(db)) == 80
    report = verify(db)
    assert report.ok, report.problems


@pytest.mark.slow
def test_replace_while_adding(tmp_path: Path) -> None:
    """One run adds 300 photos while a second replaces 50 already indexed: both land, and
    the cache holds exactly the rows."""
    write_images(tmp_path / "old", 50)
    write_images(tmp_path / "new", 300, start=1000)
    db = tmp_path / "db"
    assert _index(tmp_path / "old", db).wait(timeout=300) == 0
    adding = _index(tmp_path / "new", db, "--wait")
    time.sleep(1.0)
    for i, path in enumerate(sorted((tmp_path / "old").iterdir())):
        make_image(5000 + i).save(path, quality=90)
    replacing = _index(tmp_path / "old", db, "--wait")
    outs = []
    for proc in (adding, replacing):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outs.append(json.loads(out))
    assert outs[0]["added"] == 300 and outs[1]["updated"] == 50
    assert len(_rows(db)) == 350
    assert len(_search_all(db)) == 350
    assert verify(db).ok


def test_a_write_from_elsewhere_mid_run_never_leaves_a_stale_cache(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    """Even a writer that ignores the lock cannot make the cache vouch for rows it lacks:
    the live index notices the generation skip and is not saved as current."""
    write_images(tmp_path / "a", 24)
    write_images(tmp_path / "b", 6, start=100)
    db = tmp_path / "db"
    with clipsearch.open(db, encoder=counting_encoder, workers=0, batch_size=4) as idx:
        idx.add([tmp_path / "b"])
        rogue = Database.open(db)
        removed = rogue.stored_files()[0].id
        done: list[int] = []

        def interfere(progress: clipsearch.facts.Progress) -> None:
            if progress.phase == "embedding" and progress.done and not done:
                rogue.apply_file_changes([removed], [], [])  # behind the lock's back
                done.append(progress.done)

        idx.add([tmp_path / "a"], on_progress=interfere)
        rogue.close()
        assert done
        ids = sorted(r.id for r in idx.db.rows())
        assert removed not in ids
        stamp = vi.read_stamp(db)
        if stamp is not None and stamp.generation == idx.db.generation():
            cached = vi.load_cache(
                idx.space().image_store(idx.db), db, idx.space().identity, idx.space().dim,
                vi.IMAGES, idx.index_choice(),
            )  # fmt: skip
            assert cached is not None
            assert np.array_equal(np.sort(cached.ids()), ids)
        hits = idx.search_vectors(idx.image_vectors([ids[0]]), k=100)[0]
        assert sorted(h.id for h in hits) == ids
    assert verify(db).ok


def test_concurrent_cache_savers_never_mix_bytes(tmp_path: Path) -> None:
    """Two processes rebuilding the same cache at once: whichever wins, the stamp vouches
    only for the bytes it describes, and no temporary file is left behind."""
    write_images(tmp_path / "photos", 30)
    db = tmp_path / "db"
    assert _index(tmp_path / "photos", db).wait(timeout=300) == 0
    procs = [subprocess.Popen([sys.executable, "-c", CACHE_SAVER, str(db)]) for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert not [p.name for p in db.iterdir() if p.name.endswith(".tmp")]
    assert verify(db).ok


def test_a_search_never_keeps_an_index_older_than_the_database(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    """A server thread can finish building an index from an older state after another
    thread refreshed; the next search must notice that it lags and load the current one
    (found by benchmarks/reliability.py: 138 of 140 photos found after a run beside serve)."""
    write_images(tmp_path / "a", 5)
    write_images(tmp_path / "b", 3, start=100)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as reader:
        with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as writer:
            writer.add([tmp_path / "a"])
            old = reader.vector_index()
            writer.add([tmp_path / "b"])
        reader._vectors = old  # what the racing thread leaves behind
        query = reader.image_vectors([1])
        assert len(reader.search_vectors(query, k=100)[0]) == 8


def test_backup_while_an_indexing_run_writes(tmp_path: Path) -> None:
    """`clipsearch backup` through SQLite's online backup: a consistent copy taken mid-run,
    usable as an index of its own."""
    from typer.testing import CliRunner

    from clipsearch.cli import app

    write_images(tmp_path / "first", 20)
    write_images(tmp_path / "more", 200, start=500)
    db = tmp_path / "db"
    assert _index(tmp_path / "first", db).wait(timeout=300) == 0
    running = _index(tmp_path / "more", db, "--wait")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_rows(db)) < 40:
        time.sleep(0.05)
    result = CliRunner().invoke(app, ["backup", str(tmp_path / "copy"), "--db", str(db),
                                      "--json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert running.wait(timeout=300) == 0
    copied = json.loads(result.stdout)["images"]
    assert 20 <= copied <= 220
    assert verify(tmp_path / "copy").ok
    assert len(_search_all(tmp_path / "copy")) == copied
    again = CliRunner().invoke(app, ["backup", str(tmp_path / "copy"), "--db", str(db)])
    assert again.exit_code == 1 and "--force" in again.stderr
