"""Vectors stored as float16: half the bytes, the same hits (scores within ~1e-3), and a
conversion either way that keeps every row."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import ConfigError
from tests.conftest import CountingEncoder, write_images


def test_float16_storage_halves_the_blobs_and_keeps_the_hits(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 24)
    dim = counting_encoder.info.dim
    full = clipsearch.open(store("full"), encoder=counting_encoder, workers=0)
    half = clipsearch.open(store("half"), encoder=counting_encoder, workers=0)
    with full, half:
        full.add([tmp_path / "photos"])
        half.store_vectors_as("float16")
        half.add([tmp_path / "photos"])
        assert {len(r.vector) for r in half.db.rows()} == {2 * dim}
        assert {len(r.vector) for r in full.db.rows()} == {4 * dim}
        for query in ("a red square", "a blue circle"):
            a, b = full.search(query, k=8), half.search(query, k=8)
            assert [h.path for h in a] == [h.path for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
        assert half.stats().vector_dtype == "float16"


def test_converting_an_index_keeps_every_row(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 12)
    with clipsearch.open(store("db"), encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        before = {r.path: np.frombuffer(r.vector, np.float32) for r in idx.db.rows()}
        hits = [h.path for h in idx.search("a red square", k=5)]
        idx.store_vectors_as("float16")
        after = {r.path: np.frombuffer(r.vector, np.float16) for r in idx.db.rows()}
        assert after.keys() == before.keys()
        for path, vector in before.items():
            np.testing.assert_allclose(after[path].astype(np.float32), vector, atol=1e-3)
        assert [h.path for h in idx.search("a red square", k=5)] == hits
        idx.store_vectors_as("float32")
        assert {len(r.vector) for r in idx.db.rows()} == {4 * counting_encoder.info.dim}
        with pytest.raises(ConfigError, match="float32 or float16"):
            idx.store_vectors_as("int8")


def test_cli_vector_dtype(store: Callable[..., str], tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 6)
    db = store("db")
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(tmp_path / "photos"), "--db", db, "--model",
                                 "tiny-random", "--workers", "0", "-q", "--vector-dtype",
                                 "float16"])  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(runner.invoke(app, ["stats", "--db", db, "--json"]).stdout)
    assert stats["vector_dtype"] == "float16"
    result = runner.invoke(app, ["reindex", "--vector-dtype", "float32", "--db", db])
    assert result.exit_code == 0, result.output
    stats = json.loads(runner.invoke(app, ["stats", "--db", db, "--json"]).stdout)
    assert stats["vector_dtype"] == "float32"
