"""Late fusion of two models over the same photos: score and reciprocal-rank fusion against
brute force, weights, a photo one model lacks, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.search.ensemble import RRF_K, Ensemble, Member
from tests.conftest import write_images

QUERY = "a red circle"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[clipsearch.Index, ...]]:
    """The same 12 photos indexed by the tiny open_clip model and by clipsearch-mini."""
    root = tmp_path_factory.mktemp("ensemble")
    write_images(root / "photos", 12)
    with (
        clipsearch.open(root / "tiny", model="tiny-random", workers=0) as tiny,
        clipsearch.open(root / "mini", model="clipsearch-mini", workers=0) as mini,
    ):
        tiny.add([root / "photos"])
        mini.add([root / "photos"])
        yield tiny, mini


def _all_scores(idx: clipsearch.Index) -> dict[str, float]:
    query = idx.embed_query(QUERY)
    return {r.path: float(np.frombuffer(r.vector, np.float32) @ query) for r in idx.db.rows()}


def test_score_fusion_equals_brute_force(pair: tuple[clipsearch.Index, ...]) -> None:
    tiny, mini = pair
    a, b = _all_scores(tiny), _all_scores(mini)
    expected = sorted(a, key=lambda p: -(0.25 * a[p] + 0.75 * b[p]))[:5]
    ensemble = Ensemble([Member(tiny, 1.0), Member(mini, 3.0)], "score")
    hits = ensemble.search(clipsearch.Query.of(QUERY), k=5, explain=True)
    assert [h.path for h in hits] == expected
    np.testing.assert_allclose(
        [h.score for h in hits], [0.25 * a[p] + 0.75 * b[p] for p in expected], atol=1e-5
    )
    ids = tiny.db.ids_by_path()
    assert [h.id for h in hits] == [ids[p] for p in expected]  # the first member's ids
    assert hits[0].explain is not None and {"model1_score", "model2_rank"} <= set(hits[0].explain)


def test_rrf_fusion_equals_brute_force(pair: tuple[clipsearch.Index, ...]) -> None:
    tiny, mini = pair
    rank_a = {p: r for r, p in enumerate(sorted(_all_scores(tiny), key=_neg(tiny)), 1)}
    rank_b = {p: r for r, p in enumerate(sorted(_all_scores(mini), key=_neg(mini)), 1)}
    fused = {p: 1 / (RRF_K + rank_a[p]) + 1 / (RRF_K + rank_b[p]) for p in rank_a}
    # k = 3 with 4x depth covers all 12 photos, so every rank is known to both members.
    hits = Ensemble([Member(tiny), Member(mini)], "rrf").search(clipsearch.Query.of(QUERY), k=3)
    ids = tiny.db.ids_by_path()  # equal sums (ranks 1+3 and 3+1) go by the first member's id
    assert [h.path for h in hits] == sorted(fused, key=lambda p: (-fused[p], ids[p]))[:3]
    # Weights are normalised: each of the two members counts 1/2.
    best = sorted(fused.values(), reverse=True)[:3]
    np.testing.assert_allclose([h.score for h in hits], 0.5 * np.array(best), atol=1e-9)


def _neg(idx: clipsearch.Index) -> Callable[[str], float]:
    scores = _all_scores(idx)
    return lambda p: -scores[p]


def test_a_tiny_weight_leaves_the_first_model_in_charge(pair: tuple[clipsearch.Index, ...]) -> None:
    tiny, mini = pair
    alone = [h.path for h in tiny.search(QUERY, k=6)]
    fused = Ensemble([Member(tiny), Member(mini, 1e-9)]).search(clipsearch.Query.of(QUERY), k=6)
    assert [h.path for h in fused] == alone


def test_bad_ensembles_are_clear_errors(pair: tuple[clipsearch.Index, ...]) -> None:
    tiny, mini = pair
    with pytest.raises(QueryError, match="at least two"):
        Ensemble([Member(tiny)])
    with pytest.raises(QueryError, match="positive"):
        Ensemble([Member(tiny), Member(mini, -1)])
    with pytest.raises(QueryError, match="'score' or 'rrf'"):
        Ensemble([Member(tiny), Member(mini)], "mean")  # type: ignore[arg-type]


def test_a_photo_only_the_second_model_holds_is_not_returned(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 6)
    with (
        clipsearch.open(tmp_path / "a", model="tiny-random", workers=0) as first,
        clipsearch.open(tmp_path / "b", model="tiny-random", workers=0) as second,
    ):
        first.add([tmp_path / "photos" / f"img_000{i}.jpg" for i in range(5)])
        second.add([tmp_path / "photos"])
        hits = Ensemble([Member(first), Member(second)]).search(clipsearch.Query.of(QUERY), k=6)
        assert len(hits) == 5 and all(
            h.path.endswith(tuple(f"{i}.jpg" for i in range(5))) for h in hits
        )


def test_cli_ensemble(pair: tuple[clipsearch.Index, ...]) -> None:
    tiny, mini = pair
    result = CliRunner().invoke(
        app,
        ["search", QUERY, "--db", tiny.location.address, "--ensemble", mini.location.address,
         "--ensemble-weight", "3", "--json", "-k", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = Ensemble([Member(tiny), Member(mini, 3.0)]).search(clipsearch.Query.of(QUERY), k=4)
    assert [h["path"] for h in json.loads(result.stdout)] == [h.path for h in expected]


def test_a_member_that_finds_nothing_does_not_break_score_fusion(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 4)
    write_images(tmp_path / "b", 4, start=10)
    with (
        clipsearch.open(tmp_path / "first", model="tiny-random", workers=0) as first,
        clipsearch.open(tmp_path / "second", model="tiny-random", workers=0) as second,
    ):
        first.add([tmp_path / "a"])
        second.add([tmp_path / "b"])
        only_a = clipsearch.Filter(folder=str(tmp_path / "a"))
        hits = Ensemble([Member(first), Member(second)]).search(
            clipsearch.Query.of(QUERY), k=4, filters=only_a
        )
        assert sorted(h.path for h in hits) == sorted(h.path for h in first.search(QUERY, k=4))
