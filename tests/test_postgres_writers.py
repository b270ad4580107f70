"""Several processes on one PostgreSQL index: indexing runs side by side (different folders,
then the same folder) lose and duplicate nothing, a server answers from rows another
process commits, and concurrent cache savers never leave a bad cache."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import clipsearch
from clipsearch.storage import vector_index as vi
from tests.conftest import write_images
from tests.serving import build_collection, start_server, stop_server
from tests.stores import PostgresServer
from tests.test_writers import CACHE_SAVER


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    made = postgres.create()
    yield made
    postgres.drop(made)


def _index(photos: Path, db: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "clipsearch.cli", "index", str(photos), "--db", db,
        "--model", "tiny-random", "--workers", "0", "--batch-size", "4", "--quiet", "--json",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_together(*runs: tuple[Path, str]) -> list[dict[str, object]]:
    procs = [_index(photos, db) for photos, db in runs]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr  # neither was turned away as busy
        out.append(json.loads(stdout))
    return out


def _check_consistent(db: str, expected_paths: set[str]) -> None:
    """Rows are exactly the files, once each, and every search equals brute force over the
    stored vectors."""
    with clipsearch.open(db, create=False) as idx:
        rows = idx.db.rows()
        assert sorted(r.path for r in rows) == sorted(expected_paths)
        assert len({r.id for r in rows}) == len(rows)
        matrix = np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows])
        ids = np.array([r.id for r in rows])
        for text in ("a red circle", "blue squares", "a dog"):
            query = idx.embed_query(text=text)
            scores = matrix @ query
            order = np.lexsort((ids, -scores))[:25]
            hits = idx.search(text=text, k=25)
            assert [h.id for h in hits] == [int(ids[i]) for i in order]


def test_two_indexing_runs_at_once_lose_and_duplicate_nothing(tmp_path: Path, url: str) -> None:
    first = write_images(tmp_path / "a", 40)
    second = write_images(tmp_path / "b", 40, start=100)
    summaries = _run_together((tmp_path / "a", url), (tmp_path / "b", url))
    assert [s["added"] for s in summaries] == [40, 40]
    _check_consistent(url, {str(p) for p in [*first, *second]})
    # The same folder, twice at once: each file is stored once, whoever embeds it first.
    third = write_images(tmp_path / "c", 40, start=200)
    _run_together((tmp_path / "c", url), (tmp_path / "c", url))
    _check_consistent(url, {str(p) for p in [*first, *second, *third]})


def test_a_server_answers_from_rows_another_process_commits(tmp_path: Path, url: str) -> None:
    collection = build_collection(tmp_path, url)
    process, base = start_server(collection)
    try:
        before = httpx.get(f"{base}/api/search", params={"q": "a photo", "k": 100}).json()
        assert not any(str(collection.new_folder) in h["path"] for h in before["hits"])
        assert _index(collection.new_folder, url).wait(timeout=300) == 0
        after = httpx.get(f"{base}/api/search", params={"q": "a photo", "k": 100}).json()
        new = [h for h in after["hits"] if h["path"].startswith(str(collection.new_folder))]
        assert len(new) == 12
        assert len(after["hits"]) == len(before["hits"]) + 12
    finally:
        stop_server(process)


def test_concurrent_cache_savers_on_one_database_never_leave_a_bad_cache(
    tmp_path: Path, url: str
) -> None:
    write_images(tmp_path / "photos", 30)
    assert _index(tmp_path / "photos", url).wait(timeout=300) == 0
    procs = [subprocess.Popen([sys.executable, "-c", CACHE_SAVER, url]) for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    with clipsearch.open(url, create=False) as idx:
        cache = idx.cache_dir
        assert not [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]
        space = idx.space()
        loaded = vi.load_cache(
            space.image_store(idx.db), cache, space.identity, space.dim, vi.IMAGES,
            idx.index_choice(),
        )  # fmt: skip
        assert loaded is not None and loaded.ntotal == 30  # the saved cache is trusted
    _check_consistent(url, {str(p) for p in (tmp_path / "photos").iterdir()})
