"""Indexing as reader -> encoder -> sink: the reader is pure and picklable, the local runner
hands every job to the sink exactly once, and the SQL sink stores what it is given."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from clipsearch.indexer.decode import DecodedImage
from clipsearch.indexer.options import PipelineOptions
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.runners import LocalRunner
from clipsearch.indexer.scan import FileStat
from clipsearch.indexer.sinks import SqlSink
from clipsearch.indexer.stages import EncodedBatch, Reader, encode_batch, stack_decoded
from clipsearch.models import Encoder
from clipsearch.storage.db import Database
from clipsearch.storage.location import locate
from tests.conftest import write_images


def _jobs(paths: list[Path]) -> list[EmbedJob]:
    return [EmbedJob(FileStat(str(p), p.stat().st_size, p.stat().st_mtime_ns), None) for p in paths]


class ListSink:
    """The trivial sink: keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[EncodedBatch] = []

    def write(self, batch: EncodedBatch) -> None:
        self.batches.append(batch)


def _no_reuse(_sha256: str) -> None:
    return None


def test_the_reader_is_pure_and_runs_in_another_process(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    paths = write_images(tmp_path, 3)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    reader = Reader.for_encoder(tiny_encoder, 10_000_000)
    copied = pickle.loads(pickle.dumps(reader))
    decoded, again = reader(str(paths[0])), copied(str(paths[0]))
    assert isinstance(decoded, DecodedImage) and isinstance(again, DecodedImage)
    assert decoded.facts == again.facts and bool((decoded.pixels == again.pixels).all())
    # spawn, not fork: the child gets the reader only by pickling it (and a fork of a
    # process running torch's threads can deadlock).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(reader, [str(p) for p in [*paths, tmp_path / "broken.jpg"]]))
    assert all(isinstance(r, DecodedImage) for r in results[:3])
    assert isinstance(results[3], str) and "image" in results[3]
    here = reader(str(paths[0]))
    assert isinstance(here, DecodedImage) and isinstance(results[0], DecodedImage)
    assert here.facts == results[0].facts  # the same bytes decode the same everywhere


def test_the_local_runner_hands_every_job_to_the_sink_once(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    paths = write_images(tmp_path, 23)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    jobs = _jobs([*paths, tmp_path / "bad.png"])
    sink = ListSink()
    seen: list[tuple[int, int]] = []
    LocalRunner(PipelineOptions(batch_size=5, workers=2, progress=False)).run(
        jobs, tiny_encoder, sink, _no_reuse, lambda done, total: seen.append((done, total))
    )
    stored = [job.file.path for b in sink.batches for job, _ in b.ok]
    failed = [job.file.path for b in sink.batches for job, _ in b.failed]
    assert sorted(stored) == sorted(str(p) for p in paths)
    assert failed == [str(tmp_path / "bad.png")]
    assert seen[-1] == (24, 24)
    # The vectors are the model's, in the order of the batch.
    first = sink.batches[0]
    pixels = stack_decoded(
        [(j, Reader.for_encoder(tiny_encoder, 10**8)(j.file.path)) for j, _ in first.ok]
    )
    np.testing.assert_allclose(first.vectors, tiny_encoder.encode_images(pixels.pixels), atol=1e-5)


def test_duplicates_and_stored_content_are_not_encoded_again(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    paths = write_images(tmp_path, 2)
    (tmp_path / "copy.jpg").write_bytes(paths[0].read_bytes())
    jobs = _jobs([paths[0], paths[1], tmp_path / "copy.jpg"])
    reader = Reader.for_encoder(tiny_encoder, 10**8)
    batch = stack_decoded([(j, reader(j.file.path)) for j in jobs])
    fresh = encode_batch(batch, tiny_encoder, _no_reuse)
    assert fresh.encoded == 2
    np.testing.assert_array_equal(fresh.vectors[0], fresh.vectors[2])
    known = {fresh.records[1].sha256: fresh.vectors[1]}
    again = encode_batch(batch, tiny_encoder, known.get)
    assert again.encoded == 1


def test_the_sql_sink_stores_each_batch_and_feeds_the_live_index(
    tmp_path: Path, tiny_encoder: Encoder, store: Callable[..., str]
) -> None:
    paths = write_images(tmp_path / "p", 7)
    db = Database.open(locate(store()))
    committed: list[np.ndarray] = []
    sink = SqlSink(db, lambda ids, vectors, replaced: committed.append(ids))
    try:
        LocalRunner(PipelineOptions(batch_size=3, workers=0, progress=False)).run(
            _jobs(paths), tiny_encoder, sink, sink.reuse
        )
        rows = db.rows()
        assert sorted(r.path for r in rows) == sorted(str(p) for p in paths)
        assert sorted(int(i) for ids in committed for i in ids) == sorted(r.id for r in rows)
        assert (sink.counts.added, sink.counts.encoded) == (7, 7)
    finally:
        db.close()


def test_joined_batches_keep_every_record_with_its_vector(
    tiny_encoder: Encoder, tmp_path: Path
) -> None:
    paths = write_images(tmp_path / "photos", 5)
    (tmp_path / "photos" / "bad.jpg").write_bytes(b"not an image")
    reader = Reader.for_encoder(tiny_encoder, 10**8)
    jobs = [
        EmbedJob(FileStat(str(p), 1, 1), None) for p in [*paths, tmp_path / "photos" / "bad.jpg"]
    ]
    parts = [
        encode_batch(
            stack_decoded([(j, reader(j.file.path)) for j in chunk]), tiny_encoder, lambda _: None
        )
        for chunk in (jobs[:2], jobs[5:], jobs[2:5])  # the middle one holds no decoded image
    ]
    joined = EncodedBatch.joined(parts)
    assert [r.path for r in joined.records] == [str(p) for p in paths[:2] + paths[2:5]]
    assert [j.file.path for j, _ in joined.failed] == [str(tmp_path / "photos" / "bad.jpg")]
    np.testing.assert_array_equal(
        joined.vectors, np.concatenate([parts[0].vectors, parts[2].vectors])
    )
    assert joined.encoded == 5
