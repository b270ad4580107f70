"""Repeated text queries come from the query cache: same results, no model, no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from clipsearch.adapters.model import Adapter
from clipsearch.storage import query_cache
from clipsearch.storage.query_cache import QueryCache
from tests.conftest import CountingEncoder, run_cli_checking_imports, write_images


def test_a_repeated_query_is_not_encoded_again(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 8)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        first = idx.search("a red square", k=5)
        encoded = counting_encoder.texts_encoded
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        assert idx.search("a red square", k=5) == first
        assert counting_encoder.texts_encoded == encoded  # answered from the cache
        idx.search("a blue circle", k=5)
        assert counting_encoder.texts_encoded == encoded + 1
        # The cache holds raw model vectors: an adapter applies on top of them.
        info = idx.record_model()
        rotated = Adapter.identity(info.dim)
        idx.use_adapter(idx.adapters.add(rotated, info.identity).id)
        assert [h.id for h in idx.search("a red square", k=5)] == [h.id for h in first]
        assert counting_encoder.texts_encoded == encoded + 1


def test_the_cache_keeps_only_the_newest_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch.storage.db import Database

    monkeypatch.setattr(query_cache, "MAX_ENTRIES", 3)
    db = Database.open(tmp_path)
    try:
        cache = QueryCache(db)
        for i in range(5):
            cache.put("model", {f"q{i}": np.full(4, i, dtype=np.float32)})
        fresh = QueryCache(db)  # what another process reads: the table, no memory
        kept = fresh.get("model", [f"q{i}" for i in range(5)])
        assert sorted(kept) == ["q2", "q3", "q4"]
        np.testing.assert_array_equal(kept["q4"], np.full(4, 4, dtype=np.float32))
        assert fresh.get("another model", ["q4"]) == {}
        assert cache.get("another model", ["q4"]) == {}
    finally:
        db.close()


def test_entries_written_later_are_read_at_once_and_written_by_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server holds a new query's vector in memory and writes the second's new entries in
    one transaction; nothing is lost by closing before the second is over."""
    from clipsearch.storage.db import Database

    monkeypatch.setattr(query_cache, "FLUSH_SECONDS", 3600.0)
    db = Database.open(tmp_path)
    try:
        cache = QueryCache(db)
        cache.put("model", {"a dog": np.ones(4, dtype=np.float32)}, later=True)
        assert list(cache.get("model", ["a dog"])) == ["a dog"]
        assert QueryCache(db).get("model", ["a dog"]) == {}  # not in the table yet
        cache.flush()
        assert list(QueryCache(db).get("model", ["a dog"])) == ["a dog"]
    finally:
        db.close()


def test_an_index_closed_writes_what_its_cache_held_for_later(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 4)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
        dim = idx.model_info.dim if idx.model_info else 0
        idx.cache_query_texts({"a red square": np.ones(dim, dtype=np.float32)}, later=True)
    with clipsearch.open(tmp_path / "db", workers=0) as idx:
        assert idx.uncached_query_texts(["a red square", "a blue circle"]) == ["a blue circle"]


def test_a_repeated_cli_search_imports_no_torch(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 6)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
        expected = [h.path for h in idx.search("a red square", k=3)]
    argv = ["search", "a red square", "--db", str(tmp_path / "db"), "-k", "3", "--json"]
    result = run_cli_checking_imports(argv)
    assert result.returncode == 0, result.stderr
    assert [h["path"] for h in json.loads(result.stdout)] == expected
