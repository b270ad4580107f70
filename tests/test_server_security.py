"""Security by default: loopback unless keyed, API keys, only files inside the indexed folders
(no traversal, no symlink escape), no internals in errors, CORS off unless configured."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipsearch.errors import ConfigError
from clipsearch.server import create_app
from clipsearch.server.service import SearchService
from clipsearch.storage.db import Database
from tests.serving import Collection, build_collection, make_service
from tests.serving import LocalClient as TestClient


def _client(collection: Collection, service: SearchService, **settings: object) -> TestClient:
    return TestClient(create_app(collection.settings(**settings), service))


def test_a_symlink_out_of_the_folders_is_searchable_but_never_served(
    collection: Collection, service: SearchService
) -> None:
    link_id = service.index.db.ids_by_path()[str(collection.escaping_link)]
    with _client(collection, service) as client:
        assert client.get(f"/api/items/{link_id}").status_code == 200  # it is indexed
        for url in (f"/api/items/{link_id}/file", f"/api/items/{link_id}/thumbnail"):
            response = client.get(url)
            assert response.status_code == 403, url
            assert "outside the indexed folders" in response.json()["error"]
            assert response.content != (collection.root / "outside" / "secret.jpg").read_bytes()


@pytest.mark.parametrize(
    "url",
    [
        "/static/../../outside/secret.jpg",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/api/items/..%2f..%2fetc%2fpasswd/file",
        "/api/items/1/../../../etc/passwd",
    ],
)
def test_path_traversal_reaches_nothing(
    collection: Collection, service: SearchService, url: str
) -> None:
    with _client(collection, service) as client:
        response = client.get(url)
        assert response.status_code in (400, 404), (url, response.status_code)
        assert b"root:" not in response.content


def test_a_file_gone_from_disk_is_404_with_a_hint(
    collection: Collection, service: SearchService, tmp_path: Path
) -> None:
    victim = collection.folder_b / "img_0105.jpg"
    item_id = service.index.db.ids_by_path()[str(victim)]
    shutil.copy(victim, tmp_path / "keep.jpg")
    victim.unlink()
    try:
        with _client(collection, service) as client:
            response = client.get(f"/api/items/{item_id}/file")
            assert response.status_code == 404 and "re-index" in response.json()["error"]
    finally:
        shutil.copy(tmp_path / "keep.jpg", victim)


def test_listening_beyond_loopback_needs_a_key(collection: Collection) -> None:
    with pytest.raises(ConfigError, match="API key"):
        create_app(collection.settings(host="0.0.0.0"))
    create_app(collection.settings(host="0.0.0.0", api_key="s3cret"))  # accepted
    create_app(collection.settings(host="::1"))  # IPv6 loopback needs none


def test_api_key_is_required_everywhere_but_the_page(
    collection: Collection, service: SearchService
) -> None:
    with _client(collection, service, api_key="s3cret") as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").status_code == 200
        for url in ("/api/health", "/api/search?q=x", "/api/items/1/file", "/api/openapi.json"):
            response = client.get(url)
            assert response.status_code == 401, url
            assert "API key" in response.json()["error"]
        assert client.get("/api/health", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/api/health", headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.get("/api/health", headers=bearer).status_code == 200
        client.cookies.set("clipsearch_key", "s3cret")
        assert client.get("/api/items/1/thumbnail").status_code == 200  # what <img> sends


def test_no_internals_in_a_500(
    collection: Collection, service: SearchService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("secret internal detail at /srv/private")

    monkeypatch.setattr(service, "stats", broken)
    with _client(collection, service) as client:
        client_raising = TestClient(client.app, raise_server_exceptions=False)
        response = client_raising.get("/api/stats")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error; the server log has the details", "status": 500,
    }  # fmt: skip


def test_cors_is_off_unless_configured(collection: Collection, service: SearchService) -> None:
    origin = {"Origin": "https://photos.example"}
    with _client(collection, service) as client:
        response = client.get("/api/health", headers=origin)
        assert "access-control-allow-origin" not in response.headers
    with _client(collection, service, cors_origins=("https://photos.example",)) as client:
        response = client.get("/api/health", headers=origin)
        assert response.headers["access-control-allow-origin"] == "https://photos.example"
        other = client.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_a_read_only_server_refuses_jobs(collection: Collection, service: SearchService) -> None:
    with _client(collection, service, read_only=True) as client:
        response = client.post("/api/jobs", json={"paths": [str(collection.new_folder)]})
        assert response.status_code == 403 and "read-only" in response.json()["error"]


def test_an_index_from_before_roots_were_recorded_derives_them(tmp_path: Path) -> None:
    old = build_collection(tmp_path)
    db = Database.open(Path(old.db))
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM meta WHERE key = 'roots'")
    db.close()
    service = make_service(old)
    try:
        assert set(service.index.roots()) == {old.folder_a, old.folder_b}
        ids = service.index.db.ids_by_path()
        with _client(old, service) as client:
            assert client.get(f"/api/items/{ids[str(old.tagged)]}/file").status_code == 200
            link = client.get(f"/api/items/{ids[str(old.escaping_link)]}/file")
            assert link.status_code == 403
    finally:
        service.close()


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 403),
        ("evil.example:8000", 403),
        ("127.0.0.1.evil.example", 403),
        ("localhost:8000", 200),
        ("127.0.0.1", 200),
        ("[::1]:8000", 200),
    ],
)
def test_a_server_without_a_key_answers_only_loopback_names(
    collection: Collection, service: SearchService, host: str, status: int
) -> None:
    """DNS rebinding: a page on evil.example resolves its name to 127.0.0.1, but its
    requests still carry `Host: evil.example`."""
    item = 1
    with _client(collection, service) as client:
        for url in ("/api/stats", f"/api/items/{item}/file", "/"):
            response = client.get(url, headers={"Host": host})
            assert response.status_code == status, (url, host)
            if status == 403:
                assert "localhost" in response.json()["error"]


def test_with_a_key_any_host_name_may_be_used(
    collection: Collection, service: SearchService
) -> None:
    key = "a+b/c=d"  # characters the page URL-encodes in its cookie
    with _client(collection, service, api_key=key) as client:
        headers = {"Host": "photos.example"}
        assert client.get("/api/stats", headers=headers).status_code == 401
        from urllib.parse import quote

        client.cookies.set("clipsearch_key", quote(key, safe=""))
        assert client.get("/api/stats", headers=headers).status_code == 200
