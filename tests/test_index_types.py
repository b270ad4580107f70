"""FAISS index types: the automatic choice, IVF-SQ8 kept in step with the database and
rescored exactly, filters through it, reindex, and the cache surviving a reopen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import ConfigError
from clipsearch.storage import faiss_index
from clipsearch.storage import vector_index as vi
from clipsearch.storage.db import Database, ImageRecord

DIM = 32


def test_the_choice_follows_the_size() -> None:
    assert vi.choose_index("auto", 10_000).family == "flat"
    big = vi.choose_index("auto", 1_000_000)
    assert (big.family, big.nlist, big.nprobe, big.kind) == ("ivf-sq8", 4096, 64, "ivf4096-sq8")
    assert vi.choose_index("ivf-sq8", 100_000).nprobe == 32
    assert vi.choose_index("ivf-sq8", 100).nprobe == 8  # never more than there are lists
    assert vi.choose_index("ivf-sq8", 3000).nlist == 64  # 39 vectors or more to train a list
    assert vi.choose_index("ivf-sq8", 100).nlist == 8  # never fewer lists than this
    assert vi.choose_index("ivf-sq8", 500, nprobe=3).nprobe == 3
    assert vi.choose_index("flat", 10**7).family == "flat"
    with pytest.raises(ConfigError, match="index type must be one of"):
        vi.choose_index("lsh", 10)


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    x = centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _index_of_vectors(directory: Path, vectors: np.ndarray, start: int = 0) -> None:
    """Rows with the given vectors written through the real database (no model needed)."""
    db = Database.open(directory)
    try:
        db.set_meta(model_spec="synthetic", model_identity="synthetic", dim=str(DIM))
        db.write_images(
            [
                ImageRecord(f"/synthetic/{start + i:06d}.jpg", 1, 1, f"{start + i:064x}", 4, 3,
                            "JPEG", "2021-06-01T00:00:00" if i % 2 else None, v)
                for i, v in enumerate(vectors)
            ]
        )  # fmt: skip
    finally:
        db.close()


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    scores = queries @ vectors.T
    return [list(np.argsort(-row, kind="stable")[:k] + 1) for row in scores]  # ids are 1-based


def test_ivf_with_every_list_probed_equals_exact_search(tmp_path: Path) -> None:
    vectors = _clustered(3000, seed=0)
    queries = _clustered(20, seed=1)
    _index_of_vectors(tmp_path, vectors)
    with clipsearch.open(tmp_path, create=False) as idx:
        built = idx.reindex("ivf-sq8", nprobe=64)
        assert built.kind == "ivf64-sq8" and built.ntotal == 3000
        hits = idx.search_vectors(queries, k=10)
        assert [[h.id for h in row] for row in hits] == _exact(vectors, queries, 10)
        exact = queries @ vectors.T
        for row, scores in zip(hits, exact, strict=True):  # scores are exact, not quantised
            np.testing.assert_allclose([h.score for h in row], scores[[h.id - 1 for h in row]],
                                       atol=1e-6)  # fmt: skip
        assert idx.stats().index_type == "ivf64-sq8"


def test_ivf_with_few_lists_probed_keeps_high_recall(tmp_path: Path) -> None:
    vectors = _clustered(5000, seed=2)
    queries = _clustered(50, seed=3)
    _index_of_vectors(tmp_path, vectors)
    with clipsearch.open(tmp_path, create=False) as idx:
        idx.reindex("ivf-sq8", nprobe=8)
        hits = idx.search_vectors(queries, k=10)
        truth = _exact(vectors, queries, 10)
        recall = np.mean(
            [len({h.id for h in row} & set(t)) / 10 for row, t in zip(hits, truth, strict=True)]
        )
        assert recall >= 0.9, recall


def test_ivf_stays_in_step_with_adds_removes_and_filters(tmp_path: Path) -> None:
    vectors = _clustered(2000, seed=4)
    _index_of_vectors(tmp_path, vectors[:1500])
    with clipsearch.open(tmp_path, create=False) as idx:
        idx.reindex("ivf-sq8", nprobe=32)
    _index_of_vectors(tmp_path, vectors[1500:], start=1500)  # another writer adds rows
    queries = _clustered(10, seed=5)
    with clipsearch.open(tmp_path, create=False) as idx:
        index = idx.vector_index()  # stale stamp: rebuilt, still IVF (the recorded choice)
        assert index.kind == "ivf32-sq8" and index.ntotal == 2000
        hits = idx.search_vectors(queries, k=10)
        assert [[h.id for h in row] for row in hits] == _exact(vectors, queries, 10)
        dated = idx.search_vectors(queries, k=10, filters=clipsearch.Filter(taken_after="2021"))
        odd = np.arange(1, 2000, 2)  # rows with a date taken
        expected = [[int(odd[i - 1]) + 1 for i in row] for row in _exact(vectors[odd], queries, 10)]
        assert [[h.id for h in row] for row in dated] == expected
        gone = np.array([h.id for h in hits[0][:3]], dtype=np.int64)
        index.remove(gone)  # as `add` does for deleted files
        _, ids = index.search(queries[:1], 20)
        assert index.ntotal == 1997 and not set(gone) & set(ids[0].tolist())


def test_the_saved_ivf_index_is_reused_on_reopen(tmp_path: Path) -> None:
    _index_of_vectors(tmp_path, _clustered(1000, seed=6))
    with clipsearch.open(tmp_path, create=False) as idx:
        idx.reindex("ivf-sq8")
    index, rebuilt = vi.load_or_rebuild(
        Database.open(tmp_path), tmp_path, "synthetic", DIM,
        choice=vi.choose_index("ivf-sq8", 1000),
    )  # fmt: skip
    assert not rebuilt and index.kind == "ivf16-sq8"


def test_auto_switches_type_when_the_collection_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faiss_index, "AUTO_IVF_MIN", 1500)  # a small threshold for the test
    _index_of_vectors(tmp_path, _clustered(1000, seed=7))
    with clipsearch.open(tmp_path, create=False) as idx:
        assert idx.vector_index().kind == "flat-ip"
    _index_of_vectors(tmp_path, _clustered(1000, seed=8), start=1000)
    with clipsearch.open(tmp_path, create=False) as idx:
        assert idx.vector_index().kind.startswith("ivf")


def test_cli_reindex(tmp_path: Path) -> None:
    _index_of_vectors(tmp_path, _clustered(800, seed=9))
    runner = CliRunner()
    result = runner.invoke(app, ["reindex", "--index-type", "ivf-sq8", "--db", str(tmp_path),
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert (facts["index_type"], facts["vectors"]) == ("ivf16-sq8", 800)
    result = runner.invoke(app, ["reindex", "--index-type", "hnsw", "--db", str(tmp_path)])
    assert result.exit_code == 1 and "index type must be one of" in result.output
    result = runner.invoke(app, ["reindex", "--index-type", "flat", "--db", str(tmp_path)])
    assert result.exit_code == 0 and "flat-ip" in result.stdout


def test_filters_through_ivf_find_k_hits_whenever_k_match(tmp_path: Path) -> None:
    """A filter of more than 4,096 items goes through FAISS's id selector, which only sees
    the lists probed: with nprobe 1 and every match far from the query, it used to return
    nothing. Now it returns the exact top 10 among the matches, at any nprobe."""
    from clipsearch.search.filters import Filter

    rng = np.random.default_rng(3)
    centre = rng.normal(size=DIM)
    centre /= np.linalg.norm(centre)
    near = centre + 0.3 * rng.normal(size=(7000, DIM))
    far = -centre + 0.3 * rng.normal(size=(5000, DIM))
    vectors = np.concatenate([near, far])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    db = Database.open(tmp_path)
    db.set_meta(model_spec="synthetic", model_identity="synthetic", dim=str(DIM))
    db.write_images(
        [
            ImageRecord(f"/synthetic/{'near' if i < 7000 else 'far'}/{i:06d}.jpg", 1, 1,
                        f"{i:064x}", 4, 3, "JPEG", None, v)
            for i, v in enumerate(vectors)
        ]
    )  # fmt: skip
    db.close()
    query = centre[None, :].astype(np.float32)
    with clipsearch.open(tmp_path, create=False) as idx:
        built = idx.reindex("ivf-sq8", nprobe=1)
        assert isinstance(built, faiss_index.IVFIndex) and built.nprobe == 1
        hits = idx.search_vectors(query, k=10, filters=Filter(path_glob="*/far/*"))[0]
        ids = idx.db.ids_by_path()
        far = [(ids[f"/synthetic/far/{i:06d}.jpg"], i) for i in range(7000, 12000)]
        order = np.argsort(-(vectors[[i for _, i in far]] @ centre), kind="stable")[:10]
        assert [h.id for h in hits] == [far[j][0] for j in order]
        assert built.full_scans == 1
