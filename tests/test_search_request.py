"""One search request for all three faces: every field of `SearchRequest` (and of its query
and filters) is offered by the CLI, the HTTP API and the Python API, and each face gives
the same answer: re-rankers (MMR, near-duplicate collapse) and ensembles over HTTP too."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

import clipsearch
from clipsearch.cli import app as cli_app
from clipsearch.index import Index
from clipsearch.search.filters import Filter
from clipsearch.search.query import Query
from clipsearch.search.request import SearchRequest
from clipsearch.server import ServerSettings, create_app
from clipsearch.server.service import SearchService
from tests.conftest import write_images
from tests.serving import LocalClient

#: Each field a face must offer, and the name it has there: CLI option, HTTP (GET
#: parameter, POST body field, or the upload route's form field), Python keyword. A new
#: field fails the test until it is here and on every face.
FACES: dict[str, tuple[str, str, str]] = {
    # the query's parts (`Query.of`)
    "text": ("QUERY", "GET q / POST text", "text"),
    "image": ("--image", "upload file", "image"),
    "like": ("--like", "POST like", "like"),
    "unlike": ("--unlike", "POST unlike", "unlike"),
    "not_text": ("--not", "POST not_text", "not_text"),
    "image_weight": ("--weight", "POST image_weight", "image_weight"),
    "negative_weight": ("--not-weight", "POST negative_weight", "negative_weight"),
    # the request's own fields
    "k": ("--top", "GET k", "k"),
    "offset": ("--offset", "GET offset", "offset"),
    "mode": ("--mode", "GET mode", "mode"),
    "min_relevance": ("--min-relevance", "GET min_relevance", "min_relevance"),
    "sort": ("--sort", "GET sort", "sort"),
    "diverse": ("--diverse", "GET diverse", "diverse"),
    "collapse": ("--collapse", "GET collapse", "collapse"),
    "ensemble": ("--ensemble", "GET ensemble", "ensemble"),
    "ensemble_weight": ("--ensemble-weight", "GET ensemble_weight", "ensemble_weight"),
    "fusion": ("--fusion", "GET fusion", "fusion"),
    "explain": ("--explain", "GET explain", "explain"),
    # the filters
    "folder": ("--folder", "GET folder", "filters"),
    "path_glob": ("--glob", "GET path_glob", "filters"),
    "taken_after": ("--after", "GET taken_after", "filters"),
    "taken_before": ("--before", "GET taken_before", "filters"),
    "min_width": ("--min-width", "GET min_width", "filters"),
    "min_height": ("--min-height", "GET min_height", "filters"),
    "orientation": ("--orientation", "GET orientation", "filters"),
    "formats": ("--type", "GET format", "filters"),
    "tags": ("--tag", "GET tag", "filters"),
}


def _fields() -> set[str]:
    own = {f.name for f in dataclasses.fields(SearchRequest)} - {"query", "filters"}
    query = set(inspect.signature(Query.of).parameters) - {"cls"}
    return own | query | {f.name for f in dataclasses.fields(Filter)}


def test_every_field_of_a_request_is_offered_by_every_face() -> None:
    assert _fields() == set(FACES), "a request field is new (or gone): say where each face has it"
    search = next(
        c for c in typer.main.get_command(cli_app).commands.values() if c.name == "search"
    )  # type: ignore[attr-defined]
    cli = {opt for p in search.params for opt in getattr(p, "opts", [])} | {
        p.name.upper() for p in search.params if p.param_type_name == "argument"
    }
    api = create_app(ServerSettings(db=Path("unused"))).openapi()
    get = {p["name"] for p in api["paths"]["/api/search"]["get"]["parameters"]}
    post = set(api["components"]["schemas"]["SearchIn"]["properties"])
    upload = {"file"} if "/api/search/image" in api["paths"] else set()
    python = set(inspect.signature(Index.search).parameters) | {
        f.name for f in dataclasses.fields(SearchRequest)
    }
    for field, (option, http, keyword) in FACES.items():
        assert option in cli, f"the CLI's search has no {option} ({field})"
        names = {name.split()[-1] for name in http.split(" / ")}
        where = get | post | upload
        assert names & where, f"the HTTP API has no {http} ({field})"
        assert keyword in python, f"Index.search takes no {keyword} ({field})"


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The same photos (three of them twice over) indexed by two models."""
    root = tmp_path_factory.mktemp("request")
    photos = write_images(root / "photos", 10)
    for n, photo in enumerate(photos[:3]):
        shutil.copy(photo, root / "photos" / f"copy_{n}.jpg")
    write_images(root / "first", 3, start=50)  # only mini holds these: its ids are shifted
    for model, name in (("tiny-random", "tiny"), ("clipsearch-mini", "mini")):
        with clipsearch.open(root / name, model=model, workers=0) as idx:
            if name == "mini":
                idx.add([root / "first"])
            idx.add([root / "photos"])
    yield root / "tiny", root / "mini"


@pytest.fixture(scope="module")
def served(twins: tuple[Path, Path]) -> Iterator[tuple[LocalClient, Index]]:
    tiny, mini = twins
    settings = ServerSettings(db=tiny, workers=0, ensemble=(str(mini),))
    service = SearchService(settings)
    try:
        with LocalClient(create_app(settings, service)) as client:
            yield client, service.index
    finally:
        service.close()


def _paths(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["path"] for h in response.json()["hits"]]


def test_re_rankers_and_ensembles_answer_alike_on_http_and_in_python(
    served: tuple[LocalClient, Index], twins: tuple[Path, Path]
) -> None:
    client, _ = served
    tiny, mini = twins
    asks: list[dict[str, Any]] = [
        {"diverse": 0.6},
        {"collapse": 0.999},
        {"ensemble": (str(mini),), "ensemble_weight": 2.0, "mode": "semantic"},
        {"ensemble": (str(mini),), "fusion": "rrf", "mode": "semantic", "offset": 2},
    ]
    with clipsearch.open(tiny, create=False) as idx:
        plain = [h.path for h in idx.search("a red square", k=13)]
        for ask in asks:
            expected = [h.path for h in idx.search("a red square", k=5, **ask)]
            params = {**ask, "ensemble": list(ask.get("ensemble", ()))}
            got = _paths(client.get("/api/search", params={"q": "a red square", "k": 5, **params}))
            assert got == expected, ask
            posted = client.post("/api/search", json={"text": "a red square", "k": 5, **params})
            assert _paths(posted) == expected, ask
    collapsed = _paths(
        client.get("/api/search", params={"q": "a red square", "k": 13, "collapse": 0.999})
    )
    assert len(plain) == 13 and len(collapsed) == 10  # each copy collapsed into its original
    assert collapsed != plain[:10]
    diverse = _paths(
        client.get("/api/search", params={"q": "a red square", "k": 13, "diverse": 0.6})
    )
    assert sorted(diverse) == sorted(plain) and diverse != plain  # the same hits, reordered


def test_an_indexed_item_in_an_ensemble_query_is_the_same_photo_in_every_member(
    served: tuple[LocalClient, Index], twins: tuple[Path, Path]
) -> None:
    """Ids are each index's own: "like item 8" once meant another photo in the second
    model's index (its ids are shifted here by three photos only it holds)."""
    client, index = served
    for item in (2, 8):
        path = index.items([item])[0].path
        body = {"like": [item], "k": 3, "ensemble": [str(twins[1])], "ensemble_weight": 20,
                "mode": "semantic"}  # fmt: skip
        assert _paths(client.post("/api/search", json=body))[0] == path


def test_an_ensemble_the_server_does_not_hold_or_cannot_fuse_is_a_400(
    served: tuple[LocalClient, Index], tmp_path: Path, twins: tuple[Path, Path]
) -> None:
    client, _ = served
    other = client.get("/api/search", params={"q": "a boat", "ensemble": str(tmp_path)})
    assert other.status_code == 400 and "holds no ensemble index" in other.json()["error"]
    judged = client.get(
        "/api/search",
        params={"q": "a boat", "ensemble": str(twins[1]), "min_relevance": "auto"},
    )
    assert judged.status_code == 400 and "not to an ensemble" in judged.json()["error"]
    bad = client.get("/api/search", params={"q": "a boat", "diverse": 2})
    assert bad.status_code in (400, 422)


def test_the_cli_pages_with_offset(twins: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    tiny, _ = twins
    args = ["search", "a red square", "--db", str(tiny), "--json", "--mode", "semantic"]
    whole = CliRunner().invoke(cli_app, [*args, "-k", "6"])
    page = CliRunner().invoke(cli_app, [*args, "-k", "3", "--offset", "3"])
    assert whole.exit_code == 0 and page.exit_code == 0, page.output
    import json

    assert [h["id"] for h in json.loads(page.stdout)] == [
        h["id"] for h in json.loads(whole.stdout)
    ][3:]


def test_example_image_paths_expand_the_home_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `clipsearch.open("~/…")` and `Index.add(["~/…"])` do (the README's example)."""
    monkeypatch.setenv("HOME", "/home/ann")
    request = SearchRequest.of(image="~/beach.jpg", like=["~/a.jpg"], unlike=["~/b.jpg"])
    assert [p.value for p in request.query.parts] == [
        "/home/ann/beach.jpg", "/home/ann/a.jpg", "/home/ann/b.jpg",
    ]  # fmt: skip


def test_a_query_and_its_parts_are_not_given_both(twins: tuple[Path, Path]) -> None:
    with clipsearch.open(twins[0], create=False) as idx:
        with pytest.raises(clipsearch.errors.QueryError, match=r"not both"):
            idx.search(query=Query.of("a boat"), not_text=["people"])
        assert idx.search(query=Query.of("a boat"), k=2)  # alone, as before


def test_the_cli_numbers_a_later_page_from_its_offset(twins: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    args = ["search", "a red square", "--db", str(twins[0]), "-k", "2", "--offset", "4"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    ranks = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert ranks == ["5", "6"]
    texts = CliRunner().invoke(cli_app, [*args, "--texts"])
    assert texts.exit_code == 2 and "--offset" in texts.stderr


def test_a_server_names_an_ensemble_index_it_cannot_open(
    twins: tuple[Path, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "no-index"
    with pytest.raises(clipsearch.errors.ConfigError, match=r"^--ensemble .*no clipsearch index"):
        SearchService(ServerSettings(db=twins[0], workers=0, ensemble=(str(missing),)))
    assert not missing.exists()
