"""The HTTP API through httpx against the app, over a real index (tiny-random model, real
SQLite and PostgreSQL, real FAISS, real files), on each runtime (torch, ONNX Runtime,
OpenVINO): every endpoint answers what the Python API answers."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipsearch
from clipsearch.search.query import Query, QueryPart
from clipsearch.server import create_app
from clipsearch.server.service import SearchService
from tests.conftest import need_runtime
from tests.serving import Collection, build_collection, make_service
from tests.serving import LocalClient as TestClient


@pytest.fixture(scope="module", params=["torch", "onnx", "openvino"])
def runtime(request: pytest.FixtureRequest) -> str:
    """Every API test runs on each runtime too (issue 28: the suite once per runtime)."""
    need_runtime(request.param)
    return str(request.param)


@pytest.fixture(scope="module")
def collection(
    tmp_path_factory: pytest.TempPathFactory, module_store: Callable[..., str], runtime: str
) -> Collection:
    """This module's collection, indexed into SQLite and into PostgreSQL in turn, afresh
    for each runtime (tests change it): every API test runs on both stores."""
    return build_collection(tmp_path_factory.mktemp("served"), module_store(f"index-{runtime}"))


@pytest.fixture(scope="module")
def service(collection: Collection, runtime: str) -> Iterator[SearchService]:
    service = make_service(collection, runtime=runtime)
    yield service
    service.close()


@pytest.fixture(scope="module")
def client(collection: Collection, service: SearchService, runtime: str) -> Iterator[TestClient]:
    with TestClient(create_app(collection.settings(runtime=runtime), service)) as client:
        yield client


def _ids(response: object) -> list[int]:
    body = response.json()  # type: ignore[attr-defined]
    return [h["id"] for h in body["hits"]]


def _jpeg(seed: int = 3) -> bytes:
    from tests.conftest import make_image

    buffer = io.BytesIO()
    make_image(seed).save(buffer, "JPEG")
    return buffer.getvalue()


def test_health_and_stats(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health == {"status": "ok", "version": clipsearch.__version__, "images": 18,
                      "model": "tiny-random"}  # fmt: skip
    stats = client.get("/api/stats").json()
    assert stats["count"] == 18 and stats["texts"] == 2 and stats["job"] is None
    assert stats["videos"] == 0 and stats["keyframes"] == 0
    assert stats["index_type"] == "flat-ip"


def test_text_search_matches_the_python_api(client: TestClient, service: SearchService) -> None:
    response = client.get("/api/search", params={"q": "a red square", "k": 5})
    assert response.status_code == 200
    expected = service.index.search("a red square", k=5)
    hits = response.json()["hits"]
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["path"] for h in hits] == [h.path for h in expected]
    assert np.allclose([h["score"] for h in hits], [h.score for h in expected], atol=1e-6)


def test_pages_join_up_to_one_long_result(client: TestClient) -> None:
    whole = _ids(client.get("/api/search", params={"q": "boats", "k": 12}))
    pages = [
        _ids(client.get("/api/search", params={"q": "boats", "k": 5, "offset": o}))
        for o in (0, 5, 10)
    ]
    assert pages[0] + pages[1] + pages[2][:2] == whole
    assert len(pages[2]) == 5


def test_filters_act_on_folder_and_tags(client: TestClient, collection: Collection) -> None:
    body = client.get(
        "/api/search", params={"q": "photo", "k": 20, "folder": str(collection.folder_b)}
    ).json()
    assert len(body["hits"]) == 6
    assert all(h["path"].startswith(str(collection.folder_b)) for h in body["hits"])
    tagged = client.get("/api/search", params={"q": "photo", "tag": "Harbour"}).json()
    assert [h["path"] for h in tagged["hits"]] == [str(collection.tagged)]


def test_search_by_uploaded_image(client: TestClient, service: SearchService) -> None:
    path = Path(service.index.items([3])[0].path)
    response = client.post(
        "/api/search/image", params={"k": 4}, files={"file": ("x.jpg", path.read_bytes())}
    )
    assert response.status_code == 200
    assert _ids(response) == [h.id for h in service.index.search(image=path, k=4)]
    assert _ids(response)[0] == 3  # the photo itself is its own best match
    fused = client.post(
        "/api/search/image",
        params={"k": 4, "text": "a dog", "image_weight": 0.5},
        files={"file": ("x.jpg", path.read_bytes())},
    )
    query = Query((QueryPart("text", "a dog"), QueryPart("image", str(path), 0.5)))
    assert _ids(fused) == [h.id for h in service.index.search(query=query, k=4)]


def test_similar_leaves_the_item_out(client: TestClient, service: SearchService) -> None:
    body = client.get("/api/items/5/similar", params={"k": 4}).json()
    expected = [h.id for h in service.index.search(query=Query((QueryPart("item", 5),)), k=5)]
    assert [h["id"] for h in body["hits"]] == [i for i in expected if i != 5][:4]
    assert client.get("/api/items/9999/similar").status_code == 404
    pages = [
        _ids(client.get("/api/items/5/similar", params={"k": 4, "offset": o})) for o in (0, 4, 8)
    ]
    whole = _ids(client.get("/api/items/5/similar", params={"k": 12}))
    assert pages[0] + pages[1] + pages[2] == whole and 5 not in whole


def test_fused_query_with_filters(
    client: TestClient, service: SearchService, collection: Collection
) -> None:
    body = {
        "text": "a dog", "like": [2], "unlike": [4], "not_text": ["snow"], "k": 3,
        "filters": {"folder": str(collection.folder_a)},
    }  # fmt: skip
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    query = Query(
        (QueryPart("text", "a dog"), QueryPart("item", 2)),
        (QueryPart("text", "snow", 0.5), QueryPart("item", 4, 0.5)),
    )
    expected = service.index.search(
        query=query, k=3, filters=clipsearch.Filter(folder=str(collection.folder_a))
    )
    assert _ids(response) == [h.id for h in expected]


def test_errors_have_the_right_status_and_a_message(client: TestClient) -> None:
    cases = [
        (client.get("/api/search"), 400, "q"),
        (client.get("/api/search", params={"q": "x", "k": 0}), 400, "k"),
        (client.get("/api/search", params={"q": "x", "taken_after": "July"}), 400, "taken_after"),
        (client.post("/api/search", json={"like": [12345]}), 404, "12345"),
        (client.post("/api/search", json={"k": 3}), 400, "text"),
        (client.post("/api/search", json={"text": "x", "model": "ViT-B-32:openai"}), 409, "built"),
        (client.get("/api/items/12345"), 404, "12345"),
        (client.get("/api/items/abc"), 400, "item_id"),
        (client.get("/api/jobs/77"), 404, "77"),
        (client.get("/api/items/1/thumbnail", params={"size": 300}), 400, "size"),
    ]
    for response, status, word in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["status"] == status and word in body["error"], body
        assert "Traceback" not in response.text


def test_uploads_that_are_not_images(client: TestClient, collection: Collection) -> None:
    def upload(data: bytes) -> object:
        return client.post("/api/search/image", files={"file": ("q.jpg", data)})

    jpeg = _jpeg()
    assert upload(b"").status_code == 415  # type: ignore[attr-defined]
    assert upload(b"#!/bin/sh\necho hi\n").status_code == 415  # type: ignore[attr-defined]
    truncated = upload(jpeg[: len(jpeg) // 2])
    assert truncated.status_code == 415, truncated.text  # type: ignore[attr-defined]
    assert "readable image" in truncated.json()["error"]  # type: ignore[attr-defined]


def test_oversized_uploads_are_refused(collection: Collection, service: SearchService) -> None:
    small = collection.settings(max_upload_bytes=4000)
    with TestClient(create_app(small, service)) as client:
        big = client.post("/api/search/image", files={"file": ("q.jpg", b"\xff" * 100_000)})
        assert big.status_code == 413 and "limit" in big.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold mid-stream
            yield b'{"text": "'
            for _ in range(100):
                yield b"x" * 1000
            yield b'"}'

        streamed = client.post(
            "/api/search", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in {k.lower() for k in streamed.request.headers}
        assert streamed.status_code == 413 and "limit" in streamed.json()["error"]

    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")  # 400 MP in a few kB
    with TestClient(create_app(collection.settings(), service)) as client:
        response = client.post("/api/search/image", files={"file": ("b.png", bomb.getvalue())})
        assert response.status_code == 413 and "too large" in response.json()["error"]


def test_an_extreme_strip_upload_is_searched_in_bounded_memory(
    collection: Collection, service: SearchService
) -> None:
    """A 100000x1 PNG (a few hundred bytes) once cost 2.7 GB per upload; it is searched like
    any picture now, and this process's peak resident memory barely moves."""
    import resource

    strip = io.BytesIO()
    Image.new("RGB", (100_000, 1), (200, 30, 30)).save(strip, "PNG", optimize=True)
    with TestClient(create_app(collection.settings(), service)) as client:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(2):
            response = client.post(
                "/api/search/image", files={"file": ("strip.png", strip.getvalue())}
            )
            assert response.status_code == 200 and response.json()["hits"]
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def test_item_metadata_and_texts(client: TestClient, collection: Collection) -> None:
    items = {Path(h["path"]).name: h["id"] for h in client.get(
        "/api/search", params={"q": "x", "k": 50}).json()["hits"]}  # fmt: skip
    tagged = client.get(f"/api/items/{items['img_0100.jpg']}").json()
    assert tagged["path"] == str(collection.tagged)
    assert (tagged["width"], tagged["height"], tagged["format"]) == (160, 120, "JPEG")
    assert [t["tag"] for t in tagged["tags"]] == ["harbour"]
    rotated = client.get(f"/api/items/{items['rotated.jpg']}").json()
    assert (rotated["width"], rotated["height"]) == (100, 200)

    texts = client.get(f"/api/items/{items['img_0000.jpg']}/texts", params={"k": 2}).json()
    assert {h["text"] for h in texts["hits"]} == {
        "a red square on grass", "two dogs playing in the snow",
    }  # fmt: skip
    by_text = client.get("/api/texts/search", params={"q": "dogs in snow", "k": 1}).json()
    assert by_text["hits"][0]["text"] == "two dogs playing in the snow"
    upload = client.post(
        "/api/texts/search/image", files={"file": ("q.jpg", collection.tagged.read_bytes())}
    )
    assert upload.status_code == 200 and len(upload.json()["hits"]) == 2


def test_zero_shot_tags(client: TestClient) -> None:
    body = client.get("/api/items/1/tags", params={"k": 3}).json()
    assert body["id"] == 1 and len(body["suggested"]) == 3
    scores = [t["score"] for t in body["suggested"]]
    assert scores == sorted(scores, reverse=True)


def test_thumbnails_are_upright_cached_and_revalidated(
    client: TestClient, service: SearchService, collection: Collection
) -> None:
    rotated_id = service.index.db.ids_by_path()[str(collection.rotated)]
    response = client.get(f"/api/items/{rotated_id}/thumbnail", params={"size": 128})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.size == (64, 128)  # EXIF orientation applied: portrait
    sha = service.index.items([rotated_id])[0].sha256
    cached = service.thumbnails.path_for(sha, 128)
    assert cached.read_bytes() == response.content
    before = cached.stat().st_mtime_ns
    again = client.get(f"/api/items/{rotated_id}/thumbnail", params={"size": 128})
    assert again.content == response.content and cached.stat().st_mtime_ns == before
    etag = response.headers["etag"]
    not_modified = client.get(
        f"/api/items/{rotated_id}/thumbnail", params={"size": 128},
        headers={"If-None-Match": etag},
    )  # fmt: skip
    assert not_modified.status_code == 304


def test_original_file_download(client: TestClient, collection: Collection) -> None:
    item_id = 1
    path = Path(client.get(f"/api/items/{item_id}").json()["path"])
    response = client.get(f"/api/items/{item_id}/file")
    assert response.status_code == 200 and response.content == path.read_bytes()


def test_tags_are_served_while_a_writer_holds_the_index(
    client: TestClient, service: SearchService
) -> None:
    """Zero-shot tags read a stored vocabulary: an indexing job holding the writer lock must
    not make them wait (or fail) once the vocabulary is in."""
    import threading

    assert client.get("/api/items/1/tags").status_code == 200  # stores the vocabulary once
    held, release = threading.Event(), threading.Event()

    def job() -> None:
        with service.index.writing():
            held.set()
            release.wait(60)

    writer = threading.Thread(target=job)
    writer.start()
    try:
        assert held.wait(30)
        response = client.get("/api/items/2/tags")
        assert response.status_code == 200 and response.json()["suggested"]
    finally:
        release.set()
        writer.join()


def test_nul_in_any_query_or_filter_is_searched_without_it(
    client: TestClient, collection: Collection
) -> None:
    """PostgreSQL cannot hold NUL in text: each of these was a 500 there (psycopg
    DataError). Now a NUL is dropped in one place for both stores, and the answer is the
    one without it."""
    folder = str(collection.folder_a)
    pairs = [
        *[("/api/search", {"q": "a dog", "mode": mode}) for mode in ("hybrid", "semantic",
                                                                      "keyword")],
        ("/api/search", {"q": "a dog", "folder": folder}),
        ("/api/search", {"q": "a dog", "path_glob": "*/img_000*"}),
        ("/api/search", {"q": "a dog", "tag": "harbour"}),
        ("/api/texts/search", {"q": "dogs in snow"}),
    ]  # fmt: skip
    for path, params in pairs:
        plain = client.get(path, params=params)
        for name, value in params.items():
            if name == "mode":
                continue
            poisoned = client.get(path, params={**params, name: value + "\x00"})
            assert poisoned.status_code == 200, (path, name, poisoned.text)
            assert _ids(poisoned) == _ids(plain), (path, name)
    body = {"text": "a dog\u0000", "k": 3, "filters": {"folder": folder + "\u0000"}}
    posted = client.post("/api/search", json=body)
    assert posted.status_code == 200, posted.text
    plain = client.post(
        "/api/search", json={"text": "a dog", "k": 3, "filters": {"folder": folder}}
    )
    assert _ids(posted) == _ids(plain)


def test_a_page_of_hits_is_written_as_its_schema_says() -> None:
    """Search responses are written without pydantic (20 hits cost as much as the search):
    the JSON must be what `SearchOut` would give, every field of a hit included."""
    import json

    from clipsearch.search.judge import Judged
    from clipsearch.search.searcher import Hit
    from clipsearch.server.api import _page
    from clipsearch.server.schemas import HitOut, SearchOut

    hits = [
        Hit(1, "/photos/a.jpg", 0.5, {"candidate_rank": 1.0}, "my adapter", 0.75, 1.25,
            "2020-01-02T03:04:05", 2.5, (1.0, 3.0)),
        Hit(2, "/photos/été/ß.jpg", 0.25),
    ]  # fmt: skip
    written = _page(Judged(hits, 3, "a note"), 20, 40, 1.5)
    schema = SearchOut(
        hits=[HitOut(**h.to_dict()) for h in hits], k=20, offset=40, took_ms=1.5,
        note="a note", weaker=3,
    )  # fmt: skip
    assert json.loads(written.body) == schema.model_dump(mode="json")
    assert written.headers["content-type"] == "application/json"
    assert set(HitOut.model_fields) == set(hits[0].to_dict())  # a new field reaches both


def test_query_parameters_repeat_and_unknown_ones_are_left_alone(client: TestClient) -> None:
    """The search's query string is read into one model (server.query_params): a repeated
    list parameter keeps every value, an unknown parameter changes nothing."""
    both = client.get(
        "/api/search", params=[("q", "red"), ("format", "JPEG"), ("format", "PNG"), ("x", "1")]
    )
    png = client.get("/api/search", params=[("q", "red"), ("format", "PNG")])
    plain = client.get("/api/search", params={"q": "red"})
    assert both.status_code == png.status_code == plain.status_code == 200
    assert png.json()["hits"] == []
    assert _ids(both) == _ids(plain) != []
    listed = client.get("/api/openapi.json").json()["paths"]["/api/search"]["get"]
    assert {"q", "k", "format", "tag", "taken_after"} <= {p["name"] for p in listed["parameters"]}
