"""The damage matrix: each way an index can be broken gives one clear line and a non-zero
exit, `verify` names it, and `repair` recovers what can be recovered."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipsearch.cli import app
from tests.conftest import write_images

runner = CliRunner()
N_IMAGES = 120


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a failure of this test, not a clear error
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of 120 photos with a searched (cached) query, checkpointed into one file."""
    root = tmp_path_factory.mktemp("pristine")
    write_images(root / "photos", N_IMAGES)
    db = root / "db"
    code, _, err = _run(
        "index", str(root / "photos"), "--db", str(db), "--model", "tiny-random", "-q",
        "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    assert _run("search", "a red square", "--db", str(db))[0] == 0
    with sqlite3.connect(db / "clipsearch.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return root


@pytest.fixture
def broken(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine / "db", tmp_path / "db")
    return tmp_path / "db"


def _truncate(db: Path) -> None:
    path = db / "clipsearch.db"
    os.truncate(path, path.stat().st_size * 3 // 4)


def _garbage_pages(db: Path) -> None:
    with (db / "clipsearch.db").open("r+b") as f:
        f.seek(4096 * 20)
        f.write(np.random.default_rng(0).bytes(4096 * 3))


def _zero_header(db: Path) -> None:
    with (db / "clipsearch.db").open("r+b") as f:
        f.write(b"\0" * 100)


def _drop_table(db: Path) -> None:
    with sqlite3.connect(db / "clipsearch.db") as conn:
        conn.execute("DROP TABLE images")


def _empty_file(db: Path) -> None:
    os.truncate(db / "clipsearch.db", 0)


DATABASE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "garbage pages": _garbage_pages,
    "zeroed header": _zero_header,
    "missing table": _drop_table,
    "0-byte file": _empty_file,
}


@pytest.mark.parametrize("damage", list(DATABASE_DAMAGE))
def test_damaged_database(broken: Path, damage: str, pristine: Path) -> None:
    DATABASE_DAMAGE[damage](broken)

    code, out, err = _run("search", "a red square", "--db", str(broken))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "repair" in err, err

    code, out, _ = _run("verify", "--db", str(broken), "--no-files")
    assert code == 1 and "database: " in out, out

    code, out, err = _run("repair", "--db", str(broken), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kept_aside"] and Path(report["kept_aside"]).exists()
    assert report["remaining"] == []
    assert _run("verify", "--db", str(broken), "--no-files")[0] == 0

    # Whatever was saved is searchable; re-indexing restores the rest.
    code, _, err = _run(
        "index", str(pristine / "photos"), "--db", str(broken), "-q", "--model", "tiny-random"
    )
    assert code == 0, err
    code, out, _ = _run("search", "a red square", "--db", str(broken), "--json", "-k", "500")
    assert code == 0 and len(json.loads(out)) == N_IMAGES
    assert _run("verify", "--db", str(broken))[0] == 0


def test_truncated_database_salvages_the_readable_rows(broken: Path) -> None:
    _truncate(broken)
    code, out, _ = _run("repair", "--db", str(broken), "--json")
    report = json.loads(out)
    assert code == 0
    assert 0 < report["salvaged"]["images"] < N_IMAGES
    assert report["salvaged"]["images"] + report["lost"]["images"] >= N_IMAGES


def test_a_zeroed_header_is_rebuilt_and_every_row_saved(broken: Path) -> None:
    """The 100-byte header holds nothing the pages behind it cannot tell again: repair used
    to save nothing here and report no loss."""
    _zero_header(broken)
    code, out, err = _run("repair", "--db", str(broken), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["header_rebuilt"] == 4096
    assert report["salvaged"]["images"] == N_IMAGES and report["lost"] == {}
    assert report["unreadable"] == []
    assert not list(broken.glob(".*header-rebuilt*"))
    code, out, _ = _run("search", "a red square", "--db", str(broken), "--json", "-k", "500")
    assert code == 0 and len(json.loads(out)) == N_IMAGES


def test_an_unreadable_file_says_its_loss_is_unknown(broken: Path) -> None:
    path = broken / "clipsearch.db"
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))
    code, out, err = _run("repair", "--db", str(broken))
    assert code == 0, err
    assert "could not read images at all: how many rows it held is unknown" in out
    assert "run `clipsearch index` on your folders again" in out


def test_corrupt_vector_row(broken: Path) -> None:
    with sqlite3.connect(broken / "clipsearch.db") as conn:
        conn.execute("UPDATE images SET vector = x'01020304' WHERE id = 7")
        path = conn.execute("SELECT path FROM images WHERE id = 7").fetchone()[0]
    # Searches that touch the row work (it is left out), and so does a rebuild.
    code, out, err = _run("search", "--image", path, "--db", str(broken), "--json", "-k", "500")
    assert code == 0, err
    assert len(json.loads(out)) == N_IMAGES - 1
    assert _run("reindex", "--db", str(broken))[0] == 0

    code, out, _ = _run("verify", "--db", str(broken))
    assert code == 1 and "image 7" in out and "4 bytes" in out

    code, out, _ = _run("repair", "--db", str(broken), "--json")
    assert code == 0 and json.loads(out)["quarantined"] == 1
    quarantined = [json.loads(line) for line in (broken / "quarantine.jsonl").open()]
    assert [q["path"] for q in quarantined] == [path]
    assert _run("verify", "--db", str(broken))[0] == 0
    # The quarantined file is embedded again by the next run over its folder.
    code, out, _ = _run("index", str(Path(path).parent), "--db", str(broken), "--json", "-q")
    assert json.loads(out)["added"] == 1


def test_overwritten_cache_is_not_trusted(broken: Path) -> None:
    code, out, _ = _run("search", "a red square", "--db", str(broken), "--json")
    expected = json.loads(out)
    cache = broken / "vectors.faiss"
    data = bytearray(cache.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = np.random.default_rng(1).bytes(4096)  # still readable
    cache.write_bytes(bytes(data))

    code, out, _ = _run("verify", "--db", str(broken))
    assert code == 1 and "vectors.faiss" in out and "differ from its stamp" in out
    code, out, _ = _run("search", "a red square", "--db", str(broken), "--json")
    assert code == 0 and json.loads(out) == expected  # rebuilt, not trusted
    assert _run("verify", "--db", str(broken))[0] == 0


def test_cache_stamped_current_with_other_ids_is_named(broken: Path) -> None:
    # A write made behind clipsearch's back (no generation bump): the cache's stamp still
    # says current, but it holds an id the database no longer has.
    with sqlite3.connect(broken / "clipsearch.db") as conn:
        conn.execute("DELETE FROM images WHERE id = 3")
    code, out, _ = _run("verify", "--db", str(broken))
    assert code == 1 and "holds 1 deleted and lacks 0 ids" in out
    assert _run("repair", "--db", str(broken))[0] == 0
    assert _run("verify", "--db", str(broken), "--no-files")[0] == 0


def test_files_missing_or_changed_on_disk(broken: Path, pristine: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(pristine / "photos", photos)
    code, _, _ = _run("index", str(photos), "--db", str(broken), "-q")
    assert code == 0
    (photos / "img_0001.jpg").unlink()
    with (photos / "img_0002.jpg").open("r+b") as f:
        f.truncate(100)
    code, out, _ = _run("verify", "--db", str(broken), "--json")
    problems = {(p["where"], p["detail"]) for p in json.loads(out)["problems"]}
    assert code == 1
    assert (str(photos / "img_0001.jpg"), "missing on disk") in problems
    assert (str(photos / "img_0002.jpg"), "changed on disk since it was indexed") in problems


def test_a_server_notices_its_database_emptied_or_replaced(pristine: Path, tmp_path: Path) -> None:
    """A server kept answering from what its connections had read after its database file
    was truncated to 0 bytes; now that is a 503 saying what to do, and a file put in its
    place (as `repair` does) is read from the next request on."""
    from clipsearch.server import create_app
    from clipsearch.server.service import SearchService
    from clipsearch.server.settings import ServerSettings
    from tests.serving import LocalClient

    db = tmp_path / "db"
    shutil.copytree(pristine / "db", db)
    smaller = tmp_path / "smaller"
    write_images(tmp_path / "few", 3)
    assert _run("index", str(tmp_path / "few"), "--db", str(smaller), "--model",
                "tiny-random", "-q", "--workers", "0")[0] == 0  # fmt: skip
    settings = ServerSettings(db=str(db), workers=0)
    service = SearchService(settings)
    try:
        with LocalClient(create_app(settings, service)) as client:
            assert client.get("/api/health").json()["images"] == N_IMAGES
            kept = db / "kept.db"
            shutil.copy(db / "clipsearch.db", kept)
            os.truncate(db / "clipsearch.db", 0)
            for path in ("/api/search?q=red", "/api/stats"):
                response = client.get(path)
                assert response.status_code == 503, response.text
                assert "clipsearch repair --db" in response.json()["error"]
            with sqlite3.connect(smaller / "clipsearch.db") as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for side in ("-wal", "-shm"):  # another file in its place, as repair does it
                (db / f"clipsearch.db{side}").rename(tmp_path / f"aside{side}")
            os.replace(smaller / "clipsearch.db", db / "clipsearch.db")
            stats = client.get("/api/stats")
            assert stats.status_code == 200, stats.text
            assert stats.json()["count"] == 3
    finally:
        service.close()
