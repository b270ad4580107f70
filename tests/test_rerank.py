"""Re-rankers on constructed cases where the right reordering is known, and end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.search.rerank import MMR, CollapseNearDuplicates
from clipsearch.search.searcher import InMemoryStore, Searcher, rank_exact
from clipsearch.storage.vector_index import FlatIndex
from tests.conftest import write_images


def _unit(*rows: list[float]) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# The query points along x. a1 and a2 are near-identical and score highest; b scores a bit
# lower but shows something else; c is far.
QUERY = _unit([1, 0, 0])[0]
VECTORS = _unit([0.96, 0.28, 0.0], [0.95, 0.30, 0.02], [0.85, -0.2, 0.49], [0.2, 0.9, 0.4])
LABELS = ["a1", "a2", "b", "c"]


def _ranked(*rerankers: object, k: int = 2) -> list[str]:
    matches = rank_exact(QUERY, [0, 1, 2, 3], LABELS, VECTORS, k, rerankers)  # type: ignore[arg-type]
    return [m.label for m in matches]


def test_plain_ranking_keeps_the_look_alikes_together() -> None:
    assert _ranked(k=3) == ["a1", "a2", "b"]


def test_mmr_brings_up_the_different_candidate() -> None:
    assert _ranked(MMR(0.5)) == ["a1", "b"]
    assert _ranked(MMR(0.0)) == ["a1", "a2"]  # no diversity weight: plain ranking


def test_collapse_drops_near_duplicates_and_keeps_the_best() -> None:
    assert _ranked(CollapseNearDuplicates(0.99), k=3) == ["a1", "b", "c"]
    assert _ranked(CollapseNearDuplicates(1.0), k=3) == ["a1", "a2", "b"]  # nothing that close


def test_rerankers_compose_in_order_and_keep_exact_scores() -> None:
    matches = rank_exact(QUERY, [0, 1, 2, 3], LABELS, VECTORS, 2, [CollapseNearDuplicates(0.99)])
    assert [round(m.score, 5) for m in matches] == [
        round(float(VECTORS[i] @ QUERY), 5) for i in (0, 2)
    ]


def test_bad_parameters_are_errors() -> None:
    with pytest.raises(QueryError):
        MMR(1.5)
    with pytest.raises(QueryError):
        CollapseNearDuplicates(2.0)


def test_searcher_reranks_over_the_oversampled_candidates() -> None:
    index = FlatIndex(3)
    index.add(np.arange(4, dtype=np.int64), VECTORS)
    searcher = Searcher(
        InMemoryStore(LABELS, VECTORS), index, rerankers=[CollapseNearDuplicates(0.99)]
    )
    assert [m.label for m in searcher.search(QUERY, 2)] == ["a1", "b"]


def test_burst_copies_collapse_end_to_end(tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 6)
    for i in range(3):  # three copies of one shot
        shutil.copy(photos[0], tmp_path / "photos" / f"burst{i}.jpg")
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
        plain = idx.search(image=photos[0], k=4)
        collapsed = idx.search(image=photos[0], k=4, rerankers=[CollapseNearDuplicates(0.999)])
    assert sum(h.score > 0.9999 for h in plain) == 4  # the shot and its three copies
    assert sum(h.score > 0.9999 for h in collapsed) == 1 and len(collapsed) == 4


def test_stages_compose_over_the_whole_list() -> None:
    # Collapse keeps every non-duplicate (not just k), so MMR after it still has a choice.
    keep = CollapseNearDuplicates(0.99).rerank(QUERY, [0.9, 0.9, 0.8, 0.2], VECTORS, k=1)
    assert keep == [0, 2, 3]
    assert _ranked(CollapseNearDuplicates(0.99), MMR(0.5), k=3) == ["a1", "b", "c"]


def test_inverted_softmax_demotes_a_hub() -> None:
    from clipsearch.search.rerank import InvertedSoftmax

    # Candidate 0 scores best for this query but is also near every bank query (a hub);
    # candidate 1 scores a little lower and is near none of them.
    query = _unit([1, 0, 0])[0]
    candidates = _unit([0.8, 0.6, 0.0], [0.78, -0.1, 0.62])
    scores = (candidates @ query).tolist()
    bank = _unit([0.3, 1, 0], [0.1, 1, 0.1], [0.2, 0.9, -0.1])
    assert InvertedSoftmax(bank, beta=10).rerank(query, scores, candidates, k=2) == [1, 0]
    with pytest.raises(QueryError):
        InvertedSoftmax(bank[:0])


def test_explain_lists_each_hits_rank_at_every_stage() -> None:
    matches = rank_exact(
        QUERY, [2, 0, 1, 3], ["b", "a1", "a2", "c"], VECTORS[[2, 0, 1, 3]], 2,
        [CollapseNearDuplicates(0.99)], explain=True,
    )  # fmt: skip
    assert [m.label for m in matches] == ["a1", "b"]
    assert dict(matches[0].explain) == {
        "candidate_rank": 2, "exact_rank": 1, "CollapseNearDuplicates_rank": 1
    }  # fmt: skip
    assert dict(matches[1].explain) == {
        "candidate_rank": 1, "exact_rank": 3, "CollapseNearDuplicates_rank": 2
    }  # fmt: skip
    assert rank_exact(QUERY, [0, 1], LABELS[:2], VECTORS[:2], 1)[0].explain == ()


def test_cli_explain(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 5)
    db = str(tmp_path / "db")
    runner = CliRunner()
    index = ["index", str(tmp_path / "photos"), "--db", db, "--model", "tiny-random", "-q"]
    assert runner.invoke(app, index).exit_code == 0
    result = runner.invoke(
        app, ["search", "x", "--db", db, "--explain", "--diverse", "0.2", "--json"]
    )
    hits = json.loads(result.stdout)
    assert set(hits[0]["explain"]) == {"candidate_rank", "exact_rank", "MMR_rank"}
    assert [h["explain"]["MMR_rank"] for h in hits] == [1, 2, 3, 4, 5]
    plain = runner.invoke(app, ["search", "x", "--db", db, "--explain", "-k", "2"])
    assert plain.exit_code == 0 and "exact_rank" in plain.stdout
