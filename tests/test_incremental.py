"""Re-runs embed only what changed: added, modified, deleted, moved, touched, duplicated."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from tests.conftest import CountingEncoder, make_image, write_images


@pytest.fixture
def db(store: Callable[..., str]) -> str:
    """Each test here runs on SQLite and on PostgreSQL."""
    return store()


def _open(db: str, encoder: CountingEncoder) -> clipsearch.Index:
    return clipsearch.open(db, encoder=encoder, workers=0, batch_size=4)


def _rows(idx: clipsearch.Index) -> dict[str, tuple[int, str]]:
    return {r.path: (r.id, r.sha256) for r in idx.db.rows()}


def test_second_run_embeds_nothing(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 10)
    with _open(db, counting_encoder) as idx:
        first = idx.add([tmp_path / "photos"])
        second = idx.add([tmp_path / "photos"])
    assert (first.added, first.encoded) == (10, 10)
    assert second.to_dict() == {
        "added": 0,
        "updated": 0,
        "removed": 0,
        "moved": 0,
        "unchanged": 10,
        "encoded": 0,
        "sidecars": 0,
        "videos": 0,
        "keyframes": 0,
        "skipped": [],
    }
    assert counting_encoder.images_encoded == 10


def test_add_modify_delete_move_in_one_rerun(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = tmp_path / "photos"
    paths = write_images(photos, 8)
    with _open(db, counting_encoder) as idx:
        idx.add([photos])
        before = _rows(idx)

        write_images(photos, 2, start=100)  # 2 new
        make_image(500).save(paths[0], quality=90)  # modified content
        paths[1].unlink()  # deleted
        (photos / "sub").mkdir()
        shutil.move(paths[2], photos / "sub" / "renamed.jpg")  # moved
        os.utime(paths[3], ns=(1, 1))  # touched: new mtime, same bytes
        counting_encoder.images_encoded = 0

        summary = idx.add([photos])
        after = _rows(idx)

    assert (summary.added, summary.updated, summary.removed, summary.moved) == (2, 1, 1, 1)
    assert summary.unchanged == 4 + 1  # untouched + touched
    assert counting_encoder.images_encoded == 3  # only the 2 new and the 1 modified
    assert str(paths[1]) not in after
    moved = after[str(photos / "sub" / "renamed.jpg")]
    assert moved == before[str(paths[2])]  # same row id, same content: not re-embedded
    assert after[str(paths[0])][0] == before[str(paths[0])][0]  # updated in place, same id
    assert after[str(paths[0])][1] != before[str(paths[0])][1]
    assert len(after) == 9


def test_search_sees_the_changes(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = tmp_path / "photos"
    paths = write_images(photos, 6)
    with _open(db, counting_encoder) as idx:
        idx.add([photos])
        replacement = make_image(777)
        replacement.save(paths[0], quality=90)
        paths[1].unlink()
        idx.add([photos])
        hits = idx.search(image=paths[0], k=10)
    assert hits[0].path == str(paths[0]) and hits[0].score > 0.9999
    assert str(paths[1]) not in {h.path for h in hits}
    assert len(hits) == 5
    # The FAISS cache on disk agrees with the database after the run.
    with clipsearch.open(db, encoder=counting_encoder) as reopened:
        assert reopened.search(image=paths[0], k=10) == hits


def test_duplicate_content_is_embedded_once(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = tmp_path / "photos"
    original = write_images(photos, 1)[0]
    for name in ("copy1.jpg", "copy2.jpg"):
        shutil.copy(original, photos / name)
    with _open(db, counting_encoder) as idx:
        summary = idx.add([photos])
        shutil.copy(original, photos / "copy3.jpg")  # a later run reuses the stored vector
        again = idx.add([photos])
        vectors = {np.frombuffer(r.vector, dtype=np.float32).tobytes() for r in idx.db.rows()}
    assert summary.added == 3 and again.added == 1
    assert counting_encoder.images_encoded == 1
    assert len(vectors) == 1


def test_separate_roots_do_not_remove_each_other(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "a", 3)
    write_images(tmp_path / "b", 2, start=10)
    with _open(db, counting_encoder) as idx:
        idx.add([tmp_path / "a"])
        summary = idx.add([tmp_path / "b"])
        assert summary.removed == 0
        assert idx.db.count() == 5


def test_move_between_roots_is_recognised(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    a = write_images(tmp_path / "a", 3)
    (tmp_path / "b").mkdir()
    with _open(db, counting_encoder) as idx:
        idx.add([tmp_path / "a"])
        shutil.move(a[0], tmp_path / "b" / "x.jpg")
        counting_encoder.images_encoded = 0
        summary = idx.add([tmp_path / "b"])
    assert (summary.moved, summary.added, counting_encoder.images_encoded) == (1, 0, 0)
