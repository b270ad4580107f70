"""Schema-driven fuzzing (schemathesis) of every operation in the OpenAPI spec: whatever
the generated request, the server answers with a status and body its schema allows, never
a 500. The server is read-only here, so fuzzed indexing jobs cannot crawl the disk.

(schemathesis's own pytest plugin does not run under pytest 9, so each operation's
hypothesis strategy is driven here directly.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from clipsearch.server import ServerSettings, create_app
from tests.serving import LocalClient as TestClient
from tests.serving import build_collection, make_service

QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much]
#: CI replays the same examples every run (a red CI then means a change broke something);
#: local runs draw new ones, so fuzzing keeps exploring.
REPLAY = os.environ.get("CI") == "true"
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=REPLAY,
    suppress_health_check=QUIET,
)
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, methods in create_app(ServerSettings(db=Path("unused"))).openapi()["paths"].items()
    for method in methods
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    collection = build_collection(tmp_path_factory.mktemp("fuzzed"))
    service = make_service(collection)
    app = create_app(collection.settings(read_only=True, max_upload_bytes=200_000), service)
    with TestClient(app):
        yield app
    service.close()


def _addressed_to_loopback(app: FastAPI) -> Any:
    """The app as a browser on this machine reaches it: schemathesis's ASGI client says
    `Host: testserver`, which a server without an API key refuses."""

    async def local(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"]
            scope = {**scope, "headers": [*headers, (b"host", b"127.0.0.1")]}
        await app(scope, receive, send)

    return local


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/api/openapi.json", _addressed_to_loopback(app))


def test_every_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) >= 14 and "POST /api/search/image" in OPERATIONS


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_operation_fails_or_breaks_its_schema(
    api_schema: schemathesis.BaseSchema, label: str
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    strategy = operation.as_strategy()

    @given(case=strategy)
    @FUZZ
    def fuzz(case: schemathesis.Case) -> None:
        # Every check but one: a schema cannot say which calendar dates exist, so a
        # well-formed 2021-02-31 is rightly a 400 that "positive data acceptance" would flag.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    fuzz()


# JSON bodies and integer path parameters: there a schema violation is a real one. (In a
# query string a "false" for a list of tags is just the tag "false".)
@pytest.mark.parametrize("label", ["POST /api/search", "GET /api/items/{item_id}"])
def test_malformed_requests_are_400s(api_schema: schemathesis.BaseSchema, label: str) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)

    @given(case=strategy)
    @FUZZ
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call()
        assert response.status_code in (400, 404, 409, 413, 415), case.as_curl_command()

    fuzz()
