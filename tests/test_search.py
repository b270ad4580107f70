"""Search returns exactly what brute force over all stored vectors returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from clipsearch.errors import EmptyIndexError, QueryError
from clipsearch.index import Index
from clipsearch.search.searcher import Searcher
from tests.conftest import make_image, write_images


@pytest.fixture
def index(tmp_path: Path, store: Callable[..., str]) -> Iterator[Index]:
    """A small index, on SQLite and on PostgreSQL."""
    write_images(tmp_path / "photos", 40)
    write_images(tmp_path / "photos" / "more", 20, 40, ".png")
    with clipsearch.open(store(), model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
        yield idx


def _brute_force(idx: Index, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    rows = idx.db.rows()
    matrix = np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows])
    scores = matrix @ query
    order = np.lexsort(([r.id for r in rows], -scores))[:k]
    return [(rows[i].id, float(scores[i])) for i in order]


@pytest.mark.parametrize("text", ["a dog on a beach", "red circles", "a city at night"])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_text_search_equals_brute_force(index: Index, text: str, k: int) -> None:
    hits = index.search(text=text, k=k)
    expected = _brute_force(index, index.embed_query(text=text), k)
    assert [h.id for h in hits] == [i for i, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-6)


def test_image_search_equals_brute_force_for_an_unindexed_image(
    index: Index, tmp_path: Path
) -> None:
    query = tmp_path / "query.png"
    make_image(999).save(query)
    hits = index.search(image=query, k=8)
    expected = _brute_force(index, index.embed_query(image=query), 8)
    assert [h.id for h in hits] == [i for i, _ in expected]


def test_self_retrieval_returns_the_image_first(index: Index) -> None:
    for row in index.db.rows()[::7]:
        hits = index.search(image=row.path, k=3)
        assert hits[0].path == row.path
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_k_larger_than_the_collection_returns_everything(index: Index) -> None:
    hits = index.search(text="anything", k=1000)
    assert len(hits) == index.db.count() == 60
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_rescoring_fixes_the_order_of_an_approximate_candidate_list(index: Index) -> None:
    """The searcher's final order comes from the stored vectors, not from the ANN stage."""

    class ShuffledIndex:
        """A deliberately bad ANN stage: right candidates, wrong order and wrong scores."""

        exact = False

        def search(
            self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
            ids = np.array([[r.id for r in index.db.rows()][::-1][:k]], dtype=np.int64)
            return np.zeros(ids.shape, dtype=np.float32), ids

    query = index.embed_query(text="a boat")
    hits = Searcher(index.db, ShuffledIndex(), oversample=100).search(query, 5)
    assert [h.id for h in hits] == [i for i, _ in _brute_force(index, query, 5)]


def test_bad_queries_are_clear_errors(index: Index, tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="give a text query"):
        index.search()
    with pytest.raises(QueryError, match="empty"):
        index.search(text="  ")
    with pytest.raises(QueryError, match="k must be"):
        index.search(text="x", k=0)
    with pytest.raises(QueryError, match="unreadable"):
        index.search(image=tmp_path / "nope.jpg")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    with pytest.raises(QueryError, match="not an image"):
        index.search(image=not_image)


def test_searching_an_empty_index_says_so(store: Callable[..., str]) -> None:
    with (
        clipsearch.open(store(), model="tiny-random") as idx,
        pytest.raises(EmptyIndexError, match="empty"),
    ):
        idx.search(text="x")


def test_search_survives_a_deleted_faiss_cache(index: Index) -> None:
    before = index.search(text="a tree", k=5)
    (index.cache_dir / "vectors.faiss").unlink()
    with clipsearch.open(index.location.address) as reopened:
        assert reopened.search(text="a tree", k=5) == before
