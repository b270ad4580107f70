"""Calibrated relevance and the "no good match" cut-off: the arithmetic on constructed
vectors, then a real index (the shipped clipsearch-mini model, and the tiny random one),
the CLI and the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.search import relevance as rel
from clipsearch.search.judge import NO_GOOD_MATCH, UNKNOWN_WORDS
from clipsearch.search.query import Query, QueryPart
from clipsearch.server.app import create_app
from clipsearch.server.service import SearchService
from tests.conftest import FLICKR
from tests.serving import Collection
from tests.serving import LocalClient as TestClient

runner = CliRunner()
GIBBERISH = "zxqvj wplkq"  # no whole word of any tokenizer here


def _unit(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def test_a_query_that_matches_an_image_clears_the_bar_and_random_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    images = _unit(rng.normal(size=(300, 64)))
    bank = _unit(rng.normal(size=(200, 64)))
    calibration = rel.measure("space", images, bank, total_images=300)
    null = calibration.null("text")
    # A query close to image 7 (cosine ~0.9) against queries about nothing in particular.
    close = _unit((images[7] + 0.4 * _unit(rng.normal(size=(1, 64)))[0])[None])[0]
    assert float(null.relevance(np.array([(images @ close).max()]))[0]) > 0.99
    random_queries = _unit(rng.normal(size=(200, 64)))
    best = (random_queries @ images.T).max(axis=1)
    passed = float((null.relevance(best) >= 0.5).mean())
    assert 0.2 < passed < 0.8  # the bar is the median best hit of random concepts
    assert np.all((null.relevance(best) >= 0) & (null.relevance(best) <= 1))


def test_cut_rules() -> None:
    assert rel.cut([0.9, 0.3, 0.05], "off") == 3
    assert rel.cut([0.9, 0.3, 0.05], "auto") == 2  # the best clears 0.5; 0.3 is over the floor
    assert rel.cut([0.45, 0.3], "auto") == 0  # nothing clears the bar
    assert rel.cut([0.9, 0.3, 0.05], 0.25) == 2
    assert rel.cut([], "auto") == 0
    assert pytest.approx(float(rel.to_relevance(-1.0))) == rel.AUTO_FLOOR


@pytest.mark.parametrize("raw", ["sometimes", "-0.1", "1.5", "nan"])
def test_bad_min_relevance_is_a_clear_error(raw: str) -> None:
    with pytest.raises(QueryError, match="min relevance"):
        rel.parse_min_relevance(raw)


def test_parse_min_relevance() -> None:
    assert rel.parse_min_relevance("AUTO") == "auto"
    assert rel.parse_min_relevance(None) == "off"
    assert rel.parse_min_relevance("0.3") == 0.3


def test_known_share_counts_whole_words_and_plain_suffixes() -> None:
    words = {"dog", "run", "beach", "a", "on", "the"}
    assert rel.known_share("a dog on the beach", words.__contains__) == 1.0
    assert rel.known_share("dogs running", words.__contains__) == 0.5  # "runn" is no word
    assert rel.known_share("asdf qwer", words.__contains__) == 0.0
    assert rel.known_share("42 dogs", words.__contains__) == 1.0
    assert rel.known_share("", words.__contains__) == 1.0


def test_calibration_round_trips_and_goes_stale_when_the_collection_grows() -> None:
    null = rel.Null(0.01, 0.09, 2.5)
    calibration = rel.Calibration("m", 1000, null, rel.Null(0.02, 0.2, 2.0))
    again = rel.Calibration.from_json(calibration.to_json())
    assert again == calibration
    assert again.fresh_for("m", 1100)
    assert not again.fresh_for("m", 1300)
    assert not again.fresh_for("m+adapter:1:pca", 1000)


# -- a real index -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[clipsearch.Index]:
    from tests.conftest import write_images

    root = tmp_path_factory.mktemp("relevance")
    write_images(root / "photos", 24)
    with clipsearch.open(root / "db", model="tiny-random", workers=0) as idx:
        idx.add([root / "photos"])
        yield idx


def test_words_the_model_does_not_know_find_nothing_with_auto(
    tiny_index: clipsearch.Index,
) -> None:
    assert tiny_index.search(GIBBERISH, k=5, min_relevance="auto") == []
    judged = tiny_index.relevance.judge(
        Query.of(GIBBERISH), tiny_index.search(GIBBERISH, k=5), "auto"
    )
    assert judged.hits == [] and judged.weaker == 5
    assert judged.note == f"{NO_GOOD_MATCH}: {UNKNOWN_WORDS}"
    # Off, the same search returns its k hits, as before (raw scores, no relevance).
    plain = tiny_index.search(GIBBERISH, k=5)
    assert len(plain) == 5 and all(h.relevance is None for h in plain)


def test_an_indexed_image_as_the_query_finds_itself_with_auto(
    tiny_index: clipsearch.Index,
) -> None:
    hits = tiny_index.search(query=Query((QueryPart("item", 3),)), k=5, min_relevance="auto")
    assert hits and hits[0].id == 3
    assert hits[0].relevance is not None and hits[0].relevance >= 0.5  # it clears the bar
    assert all(0.0 <= (h.relevance or 0) <= 1.0 for h in hits)


def test_the_calibration_is_measured_once_and_cached_beside_the_index(
    tiny_index: clipsearch.Index,
) -> None:
    calibration = tiny_index.relevance.calibration()
    cached = tiny_index.cache_dir / "relevance.json"
    assert cached.exists()
    assert rel.Calibration.from_json(cached.read_text()) == calibration
    with clipsearch.open(tiny_index.location.address, create=False) as again:
        assert again.relevance.calibration() == calibration
        assert again._encoder is None  # read from the file: no model was loaded


@pytest.mark.skipif(not FLICKR.exists(), reason=f"needs the shared data set at {FLICKR}")
def test_with_the_reference_model_real_queries_pass_and_nonsense_does_not(
    tmp_path: Path,
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted((FLICKR / "images").glob("*.jpg"))[:120]:
        (photos / source.name).symlink_to(source)
    with clipsearch.open(tmp_path / "db", model="clipsearch-mini", workers=0) as idx:
        idx.add([photos])
        assert idx.search("a dog running on the grass", k=10, min_relevance="auto")
        for nonsense in ("asdfghjkl qwerty", "kjsdf lkjhgf", "собака бежит по пляжу"):
            assert idx.search(nonsense, k=10, min_relevance="auto") == [], nonsense


# -- CLI and HTTP -----------------------------------------------------------------------


def test_cli_says_no_good_match(tiny_index: clipsearch.Index) -> None:
    db = str(tiny_index.location.address)
    result = runner.invoke(app, ["search", GIBBERISH, "--db", db, "--min-relevance", "auto"])
    assert result.exit_code == 0, result.output
    assert "no good match" in result.stderr and "weaker hits are left out" in result.stderr
    shown = runner.invoke(app, ["search", GIBBERISH, "--db", db, "--min-relevance", "0", "--json"])
    hits = json.loads(shown.stdout)
    assert len(hits) == 10 and all(0 <= h["relevance"] <= 1 for h in hits)
    bad = runner.invoke(app, ["search", "x", "--db", db, "--min-relevance", "high"])
    assert bad.exit_code != 0 and "min relevance must be auto, off or a number" in bad.stderr


@pytest.fixture
def client(collection: Collection, service: SearchService) -> Iterator[TestClient]:
    with TestClient(create_app(collection.settings(), service)) as client:
        yield client


def test_http_no_good_match_and_weaker_hits(client: TestClient) -> None:
    params: dict[str, str | int] = {"q": GIBBERISH, "k": 8, "min_relevance": "auto"}
    body = client.get("/api/search", params=params).json()
    assert body["hits"] == [] and body["weaker"] == 8
    assert body["note"].startswith("no good match")
    body = client.get("/api/search", params={**params, "min_relevance": "0"}).json()
    assert len(body["hits"]) == 8 and body["weaker"] == 0
    assert all(0 <= h["relevance"] <= 1 for h in body["hits"])
    posted = client.post("/api/search", json={"text": GIBBERISH, "min_relevance": "auto"}).json()
    assert posted["hits"] == [] and posted["note"].startswith("no good match")
    bad = client.get("/api/search", params={**params, "min_relevance": "high"})
    assert bad.status_code == 400


def test_a_calibration_is_measured_by_one_thread_while_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Searches that find the calibration stale at once (a job grew the index) measure it
    once: the first waits for the measure, the others go on with the last one."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from clipsearch.search.judge import RelevanceJudge
    from tests.conftest import write_images

    write_images(tmp_path / "photos", 8)
    measured: list[int] = []
    real = RelevanceJudge._measure

    def slow(self: RelevanceJudge, space: str, images: int) -> rel.Calibration:
        measured.append(images)
        time.sleep(0.5)
        return real(self, space, images)

    monkeypatch.setattr(RelevanceJudge, "_measure", slow)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos" / f"img_000{i}.jpg" for i in range(2)])
        first = idx.relevance.calibration()
        idx.add([tmp_path / "photos"])  # 4x the images: the calibration is stale
        start = threading.Barrier(8)

        def calibration() -> rel.Calibration:
            start.wait()
            return idx.relevance.calibration()

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: calibration(), range(8)))
    assert measured == [2, 8]
    assert {c.images for c in got} <= {2, 8} and any(c.images == 8 for c in got)
    assert first.images == 2
