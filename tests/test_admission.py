"""Admission control on a real server: past --max-inflight searches are refused at once with
429 and Retry-After; a search that waits past --deadline is answered 503 with Retry-After and
costs no model call; the health route answers throughout; nothing else fails."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.serving import Collection, collection, start_server, stop_server

__all__ = ["collection"]  # the fixture, used by the tests below

CLIENTS = 40


async def _burst(base: str, count: int) -> tuple[list[httpx.Response], list[int]]:
    """`count` searches with never-seen texts at once, and health checks meanwhile."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        searches = [
            client.get("/api/search", params={"q": f"a photo of thing {n} in the rain"})
            for n in range(count)
        ]
        health = [client.get("/api/health") for _ in range(5)]
        found = await asyncio.gather(*searches, *health)
    return list(found[:count]), [r.status_code for r in found[count:]]


def test_searches_over_the_limit_are_refused_at_once_with_retry_after(
    collection: Collection,
) -> None:
    process, base = start_server(collection, "--max-inflight", "2")
    try:
        found, health = asyncio.run(_burst(base, CLIENTS))
        codes = Counter(r.status_code for r in found)
        assert set(codes) <= {200, 429}, [r.text for r in found if r.status_code not in (200, 429)]
        assert codes[429] > 0 and codes[200] >= 2, codes
        refused = next(r for r in found if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert "--max-inflight" in refused.json()["error"]
        assert health == [200] * 5
        # Once the burst is over, searches are served again.
        assert httpx.get(f"{base}/api/search", params={"q": "red"}, timeout=30).status_code == 200
    finally:
        stop_server(process)


def test_a_search_past_its_deadline_is_answered_503_without_a_model_call(
    collection: Collection,
) -> None:
    process, base = start_server(collection, "--deadline", "0.001")
    try:
        found, health = asyncio.run(_burst(base, 10))
        assert {r.status_code for r in found} == {503}, [r.text for r in found]
        assert all(r.headers["retry-after"] == "1" for r in found)
        assert "deadline" in found[0].json()["error"]
        assert health == [200] * 5
        stats = httpx.get(f"{base}/api/stats", timeout=30).json()
        # Searches queued behind the first batch's model call waited past their deadline:
        # dropped unencoded (the first batch may be encoded before its millisecond is over).
        batching = stats["query_batching"]
        assert batching["dropped"] + batching["requests"] == 10, batching
        assert batching["dropped"] >= 1 and batching["model_calls"] <= 1, batching
    finally:
        stop_server(process)


@pytest.mark.parametrize(("flag", "value"), [("--max-inflight", "0"), ("--deadline", "0")])
def test_admission_settings_are_checked(collection: Collection, flag: str, value: str) -> None:
    from typer.testing import CliRunner

    from clipsearch.cli import app

    result = CliRunner().invoke(app, ["serve", "--db", str(collection.db), flag, value])
    assert result.exit_code != 0
    assert flag in result.output
