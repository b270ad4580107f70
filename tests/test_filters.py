"""Filters select with the vector search: exactly the matching items, in brute-force order."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.index import Index
from clipsearch.search import searcher
from clipsearch.search.filters import Filter
from tests.conftest import make_image


@pytest.fixture(scope="module")
def index(
    tmp_path_factory: pytest.TempPathFactory, module_store: Callable[..., str]
) -> Iterator[Index]:
    """One collection, indexed on SQLite and on PostgreSQL (every test runs on both)."""
    root = tmp_path_factory.mktemp("filters")
    for i in range(40):
        size = (160, 100) if i % 3 else (90, 150)  # landscape, or portrait every third
        folder = root / "photos" / ("2020" if i < 20 else "2021")
        folder.mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        if i % 2 == 0:
            exif.get_ifd(0x8769)[36867] = f"{2020 + i // 20}:{1 + i % 12:02d}:15 10:00:00"
        ext = ".png" if i % 5 == 0 else ".jpg"
        make_image(i, size).save(folder / f"p{i:02d}{ext}", exif=exif.tobytes())
    with clipsearch.open(module_store(), model="tiny-random", workers=0) as idx:
        idx.add([root / "photos"])
        yield idx


def _brute_force(idx: Index, query: np.ndarray, k: int, keep: Callable[[Any], bool]) -> list[int]:
    rows = [r for r in idx.db.rows() if keep(r)]
    if not rows:
        return []
    scores = np.stack([np.frombuffer(r.vector, np.float32) for r in rows]) @ query
    return [rows[i].id for i in np.lexsort(([r.id for r in rows], -scores))[:k]]


CASES: list[tuple[Filter, Callable[[Any], bool]]] = [
    (Filter(folder="__ROOT__/photos/2021"), lambda r: "/2021/" in r.path),
    (Filter(path_glob="*/p1?.jpg"), lambda r: Path(r.path).name[:2] + r.path[-4:] == "p1.jpg"),
    (Filter(taken_after="2020-06"), lambda r: r.taken_at is not None and r.taken_at >= "2020-06"),
    (Filter(taken_before="2021"), lambda r: r.taken_at is not None and r.taken_at < "2021"),
    (Filter(orientation="portrait"), lambda r: r.width < r.height),
    (Filter(min_width=150), lambda r: r.width >= 150),
    (Filter(formats=("png",)), lambda r: r.format == "PNG"),
    (
        Filter(formats=("jpg",), orientation="landscape"),
        lambda r: (r.format, r.width > r.height) == ("JPEG", True),
    ),
]  # fmt: skip


@pytest.mark.parametrize("exact_limit", [4096, 0], ids=["exact-subset", "faiss-selector"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_filtered_search_equals_brute_force_with_the_same_filter(
    index: Index, case: int, exact_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(searcher, "EXACT_FILTER_LIMIT", exact_limit)
    flt, keep = CASES[case]
    if flt.folder:
        root = str(index.roots()[0].parent)
        flt = Filter(folder=flt.folder.replace("__ROOT__", root))
    query = index.embed_query(text="a red circle")
    matching = _brute_force(index, query, 1000, keep)
    assert matching, "the case must match something"
    for k in (1, 5, 100):
        hits = index.search(text="a red circle", k=k, filters=flt)
        assert [h.id for h in hits] == matching[:k]  # k hits whenever k items match


def test_a_filter_matching_nothing_returns_nothing(index: Index) -> None:
    assert index.search(text="x", filters=Filter(taken_after="2099-01-01")) == []


def test_bad_filter_values_are_clear_errors(index: Index) -> None:
    with pytest.raises(QueryError, match="ISO date"):
        index.search(text="x", filters=Filter(taken_after="last week"))
    with pytest.raises(QueryError, match="orientation"):
        index.search(text="x", filters=Filter(orientation="diagonal"))  # type: ignore[arg-type]


def test_cli_filters(index: Index) -> None:
    db = index.location.address
    args = ["search", "a red circle", "--db", db, "--json", "-k", "100"]
    result = CliRunner().invoke(app, [*args, "--orientation", "portrait", "--type", "png"])
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)
    rows = {r.id: r for r in index.db.rows()}
    expected = {i for i, r in rows.items() if r.width < r.height and r.format == "PNG"}
    assert {h["id"] for h in hits} == expected and expected
    result = CliRunner().invoke(app, [*args, "--after", "yesterday"])
    assert result.exit_code == 1 and "ISO date" in result.stderr
