"""Evaluation: metrics on hand-built rankings, and the harness end to end on known answers."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError, TextSourceError
from clipsearch.evaluation import evaluate_captions, evaluate_classes
from clipsearch.evaluation.classes import LabelledQuery
from clipsearch.evaluation.metrics import (
    average_precision,
    first_relevant_rank,
    median_rank,
    precision_at,
    recall_at,
)
from clipsearch.evaluation.report import flatten, format_table
from clipsearch.models import ModelInfo

# -- metrics on hand-built cases ------------------------------------------------------------


def test_perfect_ranking_scores_one() -> None:
    ranked = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    ranks = first_relevant_rank(ranked, [{1}, {2}, {3}])
    assert recall_at(ranks, 1) == 1.0 and median_rank(ranks) == 1.0


def test_reversed_ranking_gives_the_computed_values() -> None:
    # Ten items; each query's relevant item is ranked last, second last, ...
    ranked = [list(range(10))[::-1]] * 10
    ranks = first_relevant_rank(ranked, [{i} for i in range(10)])
    assert list(ranks) == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert recall_at(ranks, 1) == 0.1
    assert recall_at(ranks, 5) == 0.5
    assert recall_at(ranks, 10) == 1.0
    assert median_rank(ranks) == 5.5


def test_never_retrieved_is_a_miss_at_every_k() -> None:
    ranks = first_relevant_rank([[1, 2], [3, 4]], [{9}, {3}])
    assert np.isinf(ranks[0]) and recall_at(ranks, 10) == 0.5


def test_precision_and_average_precision() -> None:
    assert precision_at([1, 0, 1, 0], {1}, 4) == 0.5
    assert precision_at([1], {1}, 10) == 0.1  # missing positions are not relevant
    assert average_precision([5, 0, 6, 0], {5, 6}) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([0, 0, 5], {5, 6}) == pytest.approx((1 / 3) / 2)
    assert average_precision([1, 2], set()) == 0.0


def test_report_table_shows_deltas_against_a_baseline() -> None:
    current = {"a": {"R@1": 0.5}, "queries": [{"query": "a dog", "precision_at_10": 0.7}]}
    before = {"a": {"R@1": 0.25}, "queries": [{"query": "a dog", "precision_at_10": 0.9}]}
    assert flatten(current) == {"a.R@1": 0.5, "queries.a dog.precision_at_10": 0.7}
    table = format_table(current, before)
    assert "+0.2500" in table and "-0.2000" in table


# -- the harness on a collection whose right answers are known ------------------------------

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 210)}


class ColourEncoder:
    """A fake encoder for which the right answers are known: an image's vector is its mean
    colour; a text's vector is the colour it names (so a perfect harness scores 1.0)."""

    info = ModelInfo(spec="colour-oracle", identity="colour-oracle", dim=3)
    input_size = 8

    @staticmethod
    def preprocess(image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.resize((8, 8)), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        mean = pixels.mean(dim=(2, 3)).numpy() - 0.45
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            name = next(c for c in COLOURS if c in text or (c == "red" and "crimson" in text))
            rgb = np.array(COLOURS[name], dtype=np.float32) / 255 - 0.45
            out.append(rgb / np.linalg.norm(rgb))
        return np.stack(out)


def _solid(path: Path, rgb: tuple[int, int, int], jitter: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), tuple(min(255, c + jitter) for c in rgb)).save(path)


@pytest.fixture
def colour_index(tmp_path: Path) -> Any:
    with clipsearch.open(tmp_path / "db", encoder=ColourEncoder(), workers=0) as idx:
        yield idx


def test_class_evaluation_on_an_oracle_is_perfect(colour_index: Any, tmp_path: Path) -> None:
    for name, rgb in COLOURS.items():
        for i in range(12):
            _solid(tmp_path / "classes" / name / f"{i}.png", rgb, jitter=i)
    report = evaluate_classes(
        colour_index, tmp_path / "classes",
        [LabelledQuery("something crimson", "red"), LabelledQuery("blue things", "blue")],
    )  # fmt: skip
    assert report.images == 36 and report.classes == ["blue", "green", "red"]
    assert report.zero_shot_accuracy == 1.0
    assert report.mean_precision_at_10 == 1.0 and report.mean_average_precision == 1.0
    assert report.mean_query_precision_at_10 == 1.0


def test_caption_evaluation_on_an_oracle(colour_index: Any, tmp_path: Path) -> None:
    images = tmp_path / "photos"
    rows = []
    for name, rgb in COLOURS.items():
        _solid(images / f"{name}.png", rgb, jitter=0)
        rows += [(f"{name}.png", f"a {name} square"), (f"{name}.png", f"something {name}")]
    csv_path = tmp_path / "captions.csv"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *rows])
    report = evaluate_captions(colour_index, images, csv_path)
    assert (report.images, report.captions) == (3, 6)
    assert report.text_to_image["R@1"] == 1.0 and report.image_to_text["R@1"] == 1.0
    assert report.text_to_image["median_rank"] == 1.0
    assert report.chance["text_to_image_R@10"] == 1.0  # 10 >= 3 images: any ranking hits


def test_ann_candidates_are_measured_through_hnsw(colour_index: Any, tmp_path: Path) -> None:
    for name, rgb in COLOURS.items():
        for i in range(12):
            _solid(tmp_path / "classes" / name / f"{i}.png", rgb, jitter=i)
    report = evaluate_classes(colour_index, tmp_path / "classes", ann=True)
    assert report.search == "hnsw" and report.zero_shot_accuracy == 1.0
    assert report.mean_precision_at_10 == 1.0


def test_hnsw_finds_nearly_what_exact_search_finds() -> None:
    from clipsearch.storage.vector_index import FlatIndex, HNSWIndex

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    data = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 32))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(100, 5100, dtype=np.int64)
    exact, approx = FlatIndex(32), HNSWIndex(32)
    exact.add(ids, data)
    approx.add(ids, data)
    queries = data[:200] + 0.05
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall > 0.9


def test_bad_caption_files_are_clear_errors(colour_index: Any, tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\nx.png,hello\n")
    with pytest.raises(TextSourceError, match="'image' and 'caption'"):
        evaluate_captions(colour_index, tmp_path / "photos", bad)
    bad.write_text("image,caption\nx.png,\n")
    with pytest.raises(TextSourceError, match=r"empty image or caption on line\(s\) 2;"):
        evaluate_captions(colour_index, tmp_path / "photos", bad)
    _solid(tmp_path / "photos" / "a.png", (1, 2, 3), 0)
    bad.write_text("image,caption\na.png,red\nmissing.png,blue\n")
    with pytest.raises(QueryError, match=r"not in the index: .*missing\.png"):
        evaluate_captions(colour_index, tmp_path / "photos", bad)


def test_eval_cli_with_a_real_model_prints_json_and_deltas(tmp_path: Path) -> None:
    from tests.conftest import write_images

    for i, name in enumerate(["cats", "dogs"]):
        write_images(tmp_path / "classes" / name, 4, start=10 * i)
    runner = CliRunner()
    args = ["eval", "classes", str(tmp_path / "classes"), "--model", "tiny-random", "-q"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 8 and 0.0 <= report["zero_shot_accuracy"] <= 1.0
    (tmp_path / "before.json").write_text(result.stdout)
    result = runner.invoke(app, [*args, "--baseline", str(tmp_path / "before.json")])
    assert result.exit_code == 0 and "+0.0000" in result.stdout  # same model: no change


def test_eval_keeps_its_index_where_db_says_on_either_store(
    tmp_path: Path, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--db` is a folder or a PostgreSQL URL, as for every other command: a URL was once
    read as a path (`postgresql+psycopg:/@/name`), so the run quietly made a SQLite index
    in a folder of that name under the working directory."""
    from tests.conftest import write_images

    for i, name in enumerate(["cats", "dogs"]):
        write_images(tmp_path / "classes" / name, 3, start=10 * i)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    where = store("eval")
    args = ["eval", "classes", str(tmp_path / "classes"), "--model", "tiny-random", "-q"]
    result = CliRunner().invoke(app, [*args, "--db", where, "--json"])
    assert result.exit_code == 0, result.stderr
    assert list(work.iterdir()) == []  # nothing made beside the index
    with clipsearch.open(where) as idx:
        assert idx.stats().count == 6  # the index is where --db said
