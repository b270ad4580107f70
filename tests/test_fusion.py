"""Fused queries: the maths on hand-made vectors, and the API and CLI on a real index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.search.query import Query, QueryPart, fuse
from tests.conftest import write_images

E1, E2, E3 = np.eye(3, dtype=np.float32)


def test_weighted_sum_of_unit_vectors_is_renormalised() -> None:
    z = fuse([(E1, 1.0), (E2, 1.0)])
    np.testing.assert_allclose(z, [2**-0.5, 2**-0.5, 0], atol=1e-6)
    z = fuse([(E1, 1.0), (E2, 0.5)])
    np.testing.assert_allclose(z, np.array([1, 0.5, 0]) / np.sqrt(1.25), atol=1e-6)
    assert float(np.linalg.norm(z)) == pytest.approx(1.0)


def test_parts_are_normalised_before_weighting() -> None:
    np.testing.assert_allclose(fuse([(10 * E1, 1.0), (E2, 1.0)]), fuse([(E1, 1.0), (E2, 1.0)]))


def test_only_relative_weights_matter() -> None:
    np.testing.assert_allclose(
        fuse([(E1, 3.0), (E2, 1.5)]), fuse([(E1, 2.0), (E2, 1.0)]), atol=1e-6
    )


def test_negatives_are_subtracted() -> None:
    z = fuse([(E1, 1.0)], [(E2, 0.5)])
    np.testing.assert_allclose(z, np.array([1, -0.5, 0]) / np.sqrt(1.25), atol=1e-6)
    assert float(z @ E2) < 0  # pushed away from the negative


def test_cancelling_parts_are_an_error() -> None:
    with pytest.raises(QueryError, match="cancel out"):
        fuse([(E1, 1.0)], [(E1, 1.0)])


def test_bad_parts_are_errors() -> None:
    with pytest.raises(QueryError, match="positive numbers"):
        QueryPart("text", "a dog", weight=0)
    with pytest.raises(QueryError, match="empty"):
        QueryPart("text", "  ")
    with pytest.raises(QueryError, match="give a text query"):
        Query.of(not_text=["people"])


def test_query_of_builds_the_usual_shapes() -> None:
    q = Query.of("beach", "ref.jpg", image_weight=0.5, not_text=["people"], like=["b.jpg"])
    assert [(p.kind, p.value, p.weight) for p in q.positive] == [
        ("text", "beach", 1.0), ("image", "ref.jpg", 0.5), ("image", "b.jpg", 0.5)
    ]  # fmt: skip
    assert [(p.kind, p.value, p.weight) for p in q.negative] == [("text", "people", 0.5)]


def test_index_fuses_exactly_the_parts_embeddings(tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 12)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
        enc = idx.encoder
        beach, people = enc.encode_texts(["beach", "people"])
        like = idx.embed_query(image=photos[3])
        query = Query.of("beach", photos[3], image_weight=0.5, not_text=["people"])
        expected = fuse([(beach, 1.0), (like, 0.5)], [(people, 0.5)])
        np.testing.assert_allclose(idx.embed_query(query=query), expected, atol=1e-6)

        hits = idx.search(query=query, k=5)
        assert [h.id for h in hits] == [h.id for h in idx.search_vectors(expected[None], 5)[0]]

        # "More like these": the fused vector is equally near both examples, and nearer to
        # each than they are to each other.
        v0, v1 = idx.embed_query(image=photos[0]), idx.embed_query(image=photos[1])
        z = idx.embed_query(query=Query.of(like=[photos[0], photos[1]]))
        assert float(z @ v0) == pytest.approx(float(z @ v1), abs=1e-5)
        assert float(z @ v0) > float(v0 @ v1)
        # An indexed item by id is the same vector as its file.
        row_id = next(r.id for r in idx.db.rows() if r.path == str(photos[5]))
        by_id = idx.embed_query(query=Query((QueryPart("item", row_id),)))
        np.testing.assert_allclose(by_id, idx.embed_query(image=photos[5]), atol=1e-5)
        with pytest.raises(QueryError, match="no image with id 999"):
            idx.embed_query(query=Query((QueryPart("item", 999),)))


def test_cli_fused_query(tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 8)
    db = str(tmp_path / "db")
    runner = CliRunner()
    args = ["index", str(tmp_path / "photos"), "--db", db, "--model", "tiny-random", "-q"]
    assert runner.invoke(app, [*args, "--workers", "0"]).exit_code == 0
    like = ["--like", str(photos[0]), "--like", str(photos[1]), "--unlike", str(photos[2])]
    result = runner.invoke(app, ["search", "a red square", *like, "--db", db, "-k", "8", "--json"])
    assert result.exit_code == 0, result.stderr
    query = Query.of("a red square", like=photos[:2], unlike=[photos[2]])
    with clipsearch.open(db) as idx:
        expected = [h.to_dict() for h in idx.search(query=query, k=8)]
    got = json.loads(result.stdout)
    assert [(h["id"], h["path"]) for h in got] == [(h["id"], h["path"]) for h in expected]
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in expected], abs=1e-5)

    cancel = ["search", "beach", "--not", "beach", "--not-weight", "1", "--db", db]
    result = runner.invoke(app, cancel)
    assert result.exit_code == 1 and "cancel out" in result.stderr
