"""Indexing jobs: started over HTTP, followed to the end, one at a time; searches keep
answering meanwhile and see each committed batch."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app as cli_app
from clipsearch.facts import IndexSummary, Progress
from clipsearch.server import ServerSettings, create_app
from clipsearch.server.errors import JobBusyError
from clipsearch.server.jobs import Jobs
from clipsearch.server.service import SearchService
from tests.conftest import write_images
from tests.serving import LocalClient as TestClient
from tests.serving import build_collection, make_service


def _wait(client: TestClient, job_id: int, limit_s: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {limit_s} s")


def test_a_job_indexes_while_searches_keep_answering(tmp_path: Path) -> None:
    collection = build_collection(tmp_path)
    service = make_service(collection)
    statuses: list[int] = []
    counts: list[int] = []
    stop = threading.Event()
    try:
        with TestClient(create_app(collection.settings(), service)) as client:

            def search_meanwhile() -> None:
                while not stop.is_set():
                    statuses.append(client.get("/api/search", params={"q": "a boat"}).status_code)
                    counts.append(client.get("/api/health").json()["images"])

            searcher = threading.Thread(target=search_meanwhile)
            searcher.start()
            started = client.post("/api/jobs", json={"paths": [str(collection.new_folder)]})
            assert started.status_code == 202, started.text
            job = _wait(client, started.json()["id"])
            stop.set()
            searcher.join()

            assert job["state"] == "done", job
            summary = job["summary"]
            assert isinstance(summary, dict) and summary["added"] == 12
            assert (job["done"], job["total"]) == (12, 12)
            assert statuses and set(statuses) == {200}
            assert min(counts) >= 18 and max(counts) <= 30
            new = client.get(
                "/api/search", params={"q": "x", "k": 50, "folder": str(collection.new_folder)}
            ).json()
            assert len(new["hits"]) == 12  # the live FAISS index has them, no restart
            listed = client.get("/api/jobs").json()
            assert [j["id"] for j in listed] == [started.json()["id"]]
    finally:
        service.close()


def test_every_committed_batch_is_searchable_at_once(tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 10)
    write_images(tmp_path / "more", 12, start=50)
    seen: list[tuple[int, int, int]] = []
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0, batch_size=4) as index:
        index.add([photos[0].parent])

        def check(progress: Progress) -> None:
            if progress.phase == "embedding" and progress.done:
                seen.append((progress.done, index.db.count(), index.vector_index().ntotal))
                top = index.search_vectors(index.image_vectors([index.db.count()]), k=1)[0][0]
                assert top.id == index.db.count()  # the newest row is found by its own vector

        index.add([tmp_path / "more"], on_progress=check)
    assert seen == [(4, 14, 14), (8, 18, 18), (12, 22, 22)]


def test_one_job_at_a_time_and_missing_paths(tmp_path: Path) -> None:
    release = threading.Event()

    def slow_run(paths: list[str], report: Callable[[Progress], None]) -> IndexSummary:
        report(Progress("embedding", 0, 5))
        release.wait(30)
        return IndexSummary(added=5)

    jobs = Jobs(slow_run)
    first = jobs.start([str(tmp_path)])
    with pytest.raises(JobBusyError, match=f"job {first.id} is still running"):
        jobs.start([str(tmp_path)])
    release.set()
    deadline = time.monotonic() + 10
    while jobs.running() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.state == "done" and first.summary is not None and first.summary["added"] == 5
    assert jobs.start([str(tmp_path)]).id == first.id + 1

    with pytest.raises(clipsearch.ClipsearchError, match="no such file or folder"):
        jobs.start([str(tmp_path / "nowhere")])


def test_a_failing_job_reports_its_error(tmp_path: Path) -> None:
    def broken(paths: list[str], report: Callable[[Progress], None]) -> IndexSummary:
        raise OSError("disk on fire at /secret/place")

    jobs = Jobs(broken)
    job = jobs.start([str(tmp_path)])
    deadline = time.monotonic() + 10
    while job.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "failed" and job.error == "internal error (OSError); see the log"


def test_a_new_empty_index_answers_with_a_note_until_its_first_job(tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 6)
    settings = ServerSettings(
        db=tmp_path / "new-index", model="tiny-random", workers=0, create=True
    )
    service = SearchService(settings)
    try:
        with TestClient(create_app(settings, service)) as client:
            empty = client.get("/api/search", params={"q": "a boat"})
            assert empty.status_code == 200
            assert empty.json()["hits"] == [] and "nothing is indexed" in empty.json()["note"]
            assert client.get("/api/stats").json()["count"] == 0
            started = client.post("/api/jobs", json={"paths": [str(photos[0].parent)]})
            assert _wait(client, started.json()["id"])["state"] == "done"
            hits = client.get("/api/search", params={"q": "a boat"}).json()["hits"]
            assert len(hits) == 6
    finally:
        service.close()


def test_serve_refuses_a_folder_without_an_index_unless_told_to_create_one(
    tmp_path: Path,
) -> None:
    """`serve --db /typo/dir` once served a new, empty index there without a word."""
    typo = tmp_path / "typo" / "dir"
    result = CliRunner().invoke(cli_app, ["serve", "--db", str(typo)])
    assert result.exit_code == 1
    assert "no clipsearch index at" in result.stderr and "--create" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_a_server_started_without_a_model_batches_after_its_first_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a new index the model is only known at the first job; from then on queries are
    batched, and the job ran on the --device asked for."""
    monkeypatch.setattr("clipsearch.index.DEFAULT_MODEL", "tiny-random")  # no hub offline
    photos = write_images(tmp_path / "photos", 6)
    settings = ServerSettings(db=tmp_path / "new-index", workers=0, device="cpu", create=True)
    service = SearchService(settings)
    try:
        assert service.batch_stats is None and service.index.device == "cpu"
        with TestClient(create_app(settings, service)) as client:
            started = client.post("/api/jobs", json={"paths": [str(photos[0].parent)]})
            assert _wait(client, started.json()["id"])["state"] == "done"
            assert client.get("/api/search", params={"q": "a kite"}).status_code == 200
        assert service.batch_stats is not None and service.batch_stats.calls >= 1
    finally:
        service.close()


def test_a_read_only_server_does_not_embed_the_vocabulary(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 3)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
    settings = ServerSettings(db=tmp_path / "db", read_only=True, workers=0)
    service = SearchService(settings)
    try:
        with TestClient(create_app(settings, service)) as client:
            response = client.get("/api/items/1/tags")
            assert response.status_code == 403
            assert "clipsearch tag" in response.json()["error"]
        assert service.index.texts.table.count() == 0
    finally:
        service.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities: Linux")
def test_a_job_runs_below_searches_with_the_processes_it_starts(tmp_path: Path) -> None:
    """The job's thread is `JOB_NICENESS` lower than the server's; the processes it starts
    (decoding workers) inherit that; the server's other threads keep theirs."""
    from clipsearch.server.jobs import JOB_NICENESS

    seen: dict[str, int] = {}

    def run(paths: list[str], report: Callable[[Progress], None]) -> IndexSummary:
        seen["job"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.nice(0))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        seen["child"] = int(child.stdout)
        return IndexSummary()

    server = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    jobs = Jobs(run)
    job = jobs.start([str(tmp_path)])
    deadline = time.monotonic() + 30
    while jobs.running() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "done", job.error
    assert seen == {"job": min(19, server + JOB_NICENESS), "child": min(19, server + JOB_NICENESS)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == server
