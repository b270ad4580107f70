"""`clipsearch copy`: SQLite -> PostgreSQL -> SQLite gives the same index, searches included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.search.query import Query, QueryPart
from clipsearch.storage.transfer import CopyError, copy
from tests.conftest import CountingEncoder, write_images
from tests.stores import PostgresServer


def _build(db: str, tmp_path: Path, encoder: CountingEncoder) -> None:
    photos = write_images(tmp_path / "photos", 24)
    (tmp_path / "photos" / "img_0001.jpg.txt").write_text("a sidecar caption")
    captions = tmp_path / "captions.csv"
    captions.write_text(
        "image,caption\n" + "".join(f"{p},photo number {i}\n" for i, p in enumerate(photos))
    )
    with clipsearch.open(db, encoder=encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        idx.texts.add(captions)
        idx.tune(captions, force=True)  # an active adapter comes along
        idx.tag([photos[0]], store=True, top=3)


def _answers(db: str) -> dict[str, object]:
    with clipsearch.open(db) as idx:
        first = idx.db.rows()[0].id
        return {
            "images": [(h.id, round(h.score, 6)) for h in idx.search(text="a red square", k=8)],
            "by_image": [h.id for h in idx.search(query=Query((QueryPart("item", first),)), k=5)],
            "texts": [t.text for t in idx.search_texts(text="photo number 3", k=5)],
            "adapter": idx.space().adapter_label,
            "stats": {k: v for k, v in idx.stats().to_dict().items() if k in ("count", "texts")},
            "tags": idx.items([1])[0].tags if idx.items([1]) else [],
        }


def test_round_trip_sqlite_postgres_sqlite_gives_identical_searches(
    tmp_path: Path, postgres: PostgresServer, counting_encoder: CountingEncoder
) -> None:
    original = str(tmp_path / "original")
    _build(original, tmp_path, counting_encoder)
    expected = _answers(original)
    url = postgres.create()
    try:
        there = copy(original, url)
        assert there.rows["images"] == 24 and there.rows["adapters"] == 1
        back = copy(url, str(tmp_path / "back"))
        assert back.vectors_sha256 == there.vectors_sha256
        assert _answers(url) == expected
        assert _answers(str(tmp_path / "back")) == expected
        with clipsearch.open(url) as idx:  # new rows get new ids, after the copied ones
            write_images(tmp_path / "more", 1, start=500)
            idx.add([tmp_path / "more"])
            assert max(r.id for r in idx.db.rows()) == 25
    finally:
        postgres.drop(url)


def test_copy_refuses_a_target_that_holds_an_index(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    write_images(tmp_path / "p", 3)
    for db in (first, second):
        with clipsearch.open(db, encoder=counting_encoder, workers=0) as idx:
            idx.add([tmp_path / "p"])
    with pytest.raises(CopyError, match="already holds an index"):
        copy(first, second)
    with pytest.raises(CopyError, match="both the source and the target"):
        copy(first, first)


def test_cli_copy(tmp_path: Path, counting_encoder: CountingEncoder) -> None:
    source = str(tmp_path / "a")
    write_images(tmp_path / "p", 4)
    with clipsearch.open(source, encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "p"])
    runner = CliRunner()
    result = runner.invoke(app, ["copy", source, str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"]["images"] == 4
    result = runner.invoke(app, ["copy", str(tmp_path / "nothing"), str(tmp_path / "c")])
    assert result.exit_code == 1 and "no clipsearch index" in result.stderr
    result = runner.invoke(app, ["verify", "--db", "postgresql://u@h/d"])
    assert result.exit_code == 1 and "PostgreSQL's own tools" in result.stderr
