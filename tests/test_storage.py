"""The store seam: an index by folder (SQLite) or by URL (PostgreSQL), one dialect module,
the atomic generation counter, the writer lock on both, and clear errors for bad URLs."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import literal, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import (
    ConfigError,
    IndexBusyError,
    IndexNotFoundError,
    ModelMismatchError,
    StoreUnavailableError,
)
from clipsearch.storage import dialect
from clipsearch.storage.db import Database, ImageRecord, bump
from clipsearch.storage.location import locate
from tests.conftest import write_images
from tests.stores import PostgresServer


def test_locations_by_folder_and_by_url(tmp_path: Path) -> None:
    folder = locate(tmp_path / "idx")
    assert folder.is_sqlite and folder.folder == tmp_path / "idx"
    assert folder.cache_dir("abc") == tmp_path / "idx"  # caches stay in the folder
    for url in ("postgresql://me:secret@db/photos", "postgres://me:secret@db/photos"):
        pg = locate(url, cache_dir=tmp_path / "c")
        assert pg.url == "postgresql+psycopg://me:secret@db/photos"
        assert pg.label == "postgresql+psycopg://me:***@db/photos"  # no password in messages
        assert pg.cache_dir("abc") == tmp_path / "c" / "abc"
    with pytest.raises(ConfigError, match="folder"):
        locate("sqlite:///x.db")
    with pytest.raises(ConfigError, match="'mysql'"):
        locate("mysql://me:pw@host/db")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*/far/*", "/a/far/b.jpg", True),
        ("*/far/*", "/a/near/b.jpg", False),
        ("*.JPG", "/a/b.jpg", False),  # case-sensitive, like SQLite's GLOB
        ("/a/?.jpg", "/a/b.jpg", True),
        ("/a/?.jpg", "/a/bb.jpg", False),
        ("/a/[bc].jpg", "/a/c.jpg", True),
        ("/a/[^bc].jpg", "/a/c.jpg", False),
        ("/a/(x)+.jpg", "/a/(x)+.jpg", True),  # regex characters are literal
        ("/a/x.jpg", "/a/xxjpg", False),
        ("/a_b/*", "/axb/c.jpg", False),  # LIKE's wildcards in a prefix are literal
        ("/a%/*", "/abc/x.jpg", False),
        ("/a%/*", "/a%/x.jpg", True),
        ("/a\\b/*", "/a\\b/x.jpg", True),
    ],
)
def test_globs_mean_the_same_on_both_stores(
    store: Callable[..., str], pattern: str, path: str, matches: bool
) -> None:
    db = Database.open(locate(store()))
    try:
        with db.engine.connect() as conn:
            found = conn.scalar(select(dialect.glob_match(literal(path), pattern)))
        assert bool(found) is matches
    finally:
        db.close()


def test_the_generation_counter_never_loses_a_concurrent_bump(store: Callable[..., str]) -> None:
    location = locate(store())
    Database.open(location).close()
    threads, bumps = 4, 25

    def writer() -> None:
        db = Database.open(location)  # an engine (a connection pool) of its own
        try:
            for _ in range(bumps):
                with Session(db.engine) as session, session.begin():
                    bump(session)
        finally:
            db.close()

    workers = [threading.Thread(target=writer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    db = Database.open(location)
    try:
        assert db.generation() == threads * bumps
    finally:
        db.close()


def test_a_second_writer_is_told_who_holds_the_index(
    store: Callable[..., str], tiny_encoder: clipsearch.Encoder
) -> None:
    db = store()
    with (
        clipsearch.open(db, encoder=tiny_encoder) as first,
        first.writing(),
        clipsearch.open(db, encoder=tiny_encoder) as second,
        pytest.raises(IndexBusyError, match=r"busy: .*pid \d+ on .* is writing"),
    ):
        second.reindex()
    with clipsearch.open(db, encoder=tiny_encoder) as again, again.writing():
        pass  # released when the first writer was done


def test_a_new_sqlite_index_has_the_same_tables_as_before(tmp_path: Path) -> None:
    """Existing indexes open unchanged: ids stay SQLite row ids (INTEGER PRIMARY KEY
    AUTOINCREMENT, never reused), and no column changes its declared type."""
    Database.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "clipsearch.db") as conn:
        ddl = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert "id INTEGER NOT NULL" in ddl["images"] and "AUTOINCREMENT" in ddl["images"]
    assert "size INTEGER NOT NULL" in ddl["images"]
    assert "BIGINT" not in "".join(ddl.values())


def test_postgres_index_from_the_cli(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index and search by URL, with the URL from CLIPSEARCH_DB; caches in --cache-dir."""
    url = postgres.create()
    try:
        write_images(tmp_path / "photos", 6)
        runner = CliRunner()
        monkeypatch.setenv("CLIPSEARCH_DB", url)
        cache = tmp_path / "cache"
        index = ["index", str(tmp_path / "photos"), "--model", "tiny-random", "--workers", "0"]
        result = runner.invoke(app, [*index, "-q", "--cache-dir", str(cache)])
        assert result.exit_code == 0, result.output
        assert "added 6" in result.stdout
        result = runner.invoke(app, ["search", "a red square", "--json", "--cache-dir", str(cache)])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == 6
        stats = json.loads(
            runner.invoke(app, ["stats", "--json", "--cache-dir", str(cache)]).stdout
        )
        assert stats["store"] == "postgresql" and stats["count"] == 6
        assert Path(stats["cache_dir"]).parent == cache
        assert (Path(stats["cache_dir"]) / "vectors.faiss").exists()
        assert stats["database_bytes"] > 0
        # Every command that builds or reads the FAISS caches takes --cache-dir (reindex
        # once refused it).
        captions = tmp_path / "captions.csv"
        captions.write_text(f"image,caption\n{tmp_path / 'photos' / 'img_0000.jpg'},a red dog\n")
        for command in (
            ["reindex", "--index-type", "flat"],
            ["texts", "add", str(captions)],
            ["texts", "list"],
            ["tag", str(tmp_path / "photos" / "img_0001.jpg"), "-k", "2"],
            ["adapters", "list"],
        ):
            result = runner.invoke(app, [*command, "--cache-dir", str(cache)])
            assert result.exit_code == 0, (command, result.output)
        assert list(Path(stats["cache_dir"]).glob("*texts*")), "texts cached elsewhere"
    finally:
        postgres.drop(url)


def test_postgres_errors_say_what_to_do(postgres: PostgresServer) -> None:
    with pytest.raises(StoreUnavailableError, match="cannot reach the index database"):
        clipsearch.open("postgresql+psycopg://nobody@127.0.0.1:1/none")
    url = postgres.create()
    try:
        with pytest.raises(IndexNotFoundError, match="no clipsearch index in the database"):
            clipsearch.open(url, create=False)
        missing = url.rsplit("/", 1)[0] + "/clipsearch_no_such_database"
        with pytest.raises(StoreUnavailableError, match="does not exist"):
            clipsearch.open(missing)
    finally:
        postgres.drop(url)


def test_model_mismatch_is_caught_on_a_postgres_index(
    store: Callable[..., str], tmp_path: Path, tiny_encoder: clipsearch.Encoder
) -> None:
    db = store()
    write_images(tmp_path / "photos", 3)
    with clipsearch.open(db, encoder=tiny_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
    with pytest.raises(ModelMismatchError, match="was built with model"):
        clipsearch.open(db, model="clipsearch-mini")


def test_store_id_keys_the_cache_and_differs_per_database(
    store: Callable[..., str], tmp_path: Path
) -> None:
    first, second = Database.open(locate(store("a"))), Database.open(locate(store("b")))
    try:
        assert first.store_id() != second.store_id()
        assert len(first.store_id()) == 32
    finally:
        first.close()
        second.close()


def test_big_values_fit(store: Callable[..., str]) -> None:
    """Nanosecond times and sizes over 2^31 survive (PostgreSQL's INTEGER is 32 bits)."""
    db = Database.open(locate(store()))
    try:
        record = ImageRecord("/p/big.jpg", 5 * 2**31, 1_700_000_000_123_456_789, "0" * 64,
                             4, 3, "JPEG", None, np.ones(4, dtype=np.float32))  # fmt: skip
        (row_id,) = db.write_images([record])
        (row,) = db.rows([row_id])
        assert (row.size, row.mtime_ns) == (record.size, record.mtime_ns)
    finally:
        db.close()


def test_the_folder_filter_takes_odd_folder_names_literally(store: Callable[..., str]) -> None:
    from clipsearch.search.filters import Filter

    db = Database.open(locate(store()))
    try:
        folders = ["/p/we[ir]d*", "/p/weid*", "/p/we%d_", "/p/wexd_", "/p/we[ir]d*x"]
        db.write_images(
            [
                ImageRecord(f"{folder}/{i}.jpg", 1, 1, f"{n:032x}{i:032x}", 4, 3, "JPEG",
                            None, np.ones(4, dtype=np.float32))
                for n, folder in enumerate(folders)
                for i in range(2)
            ]
        )  # fmt: skip
        ids = db.ids_by_path()
        for folder in folders:
            found = set(db.ids_matching(Filter(folder=folder).resolved()).tolist())
            assert found == {ids[f"{folder}/{i}.jpg"] for i in range(2)}, folder
    finally:
        db.close()


def test_a_snapshot_reads_the_facts_once_and_sees_writes_after(tmp_path: Path) -> None:
    """Inside `snapshot`, one thread's reads of the meta table answer from one read (a
    search's dozen reads of its counters and facts); another writer's change shows after it,
    and a write through the same object shows at once."""
    from clipsearch.storage.db import Database

    db = Database.open(tmp_path)
    other = Database.open(tmp_path)
    try:
        before = db.generation()
        with db.snapshot():
            assert db.generation() == before
            other.set_meta(generation=str(before + 5), note="x")
            assert db.generation() == before  # one state for the whole snapshot
            assert "note" not in db.get_meta()
            seen: list[int] = []
            reader = threading.Thread(target=lambda: seen.append(db.generation()))
            reader.start()
            reader.join()
            assert seen == [before + 5]  # other threads are not in this snapshot
            db.set_meta(own="y")
            assert db.get_meta()["own"] == "y"
        assert db.generation() == before + 5
    finally:
        other.close()
        db.close()
