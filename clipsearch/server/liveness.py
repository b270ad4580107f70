"""What `/api/health` reads, on a thread of its own: it must answer while every worker
thread is busy (a liveness probe that waits behind a queue of searches would get a healthy
server restarted), and within a bound even when the store is slow to answer (issue 28)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: How long the health check waits for the store before it answers with what it read last.
READ_SECONDS = 0.8

_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipsearch-health")
_last: dict[int, Any] = {}
_guard = threading.Lock()


async def read_within(key: int, read: Callable[[], T], before: T) -> T:
    """`read()` run on the health thread; when it takes longer than `READ_SECONDS`, what it
    returned last time for `key` (`before` the first time)."""
    try:
        found = await asyncio.wait_for(asyncio.wrap_future(_lane.submit(read)), READ_SECONDS)
    except asyncio.TimeoutError:
        with _guard:
            last: T = _last.get(key, before)
            return last
    with _guard:
        _last[key] = found
    return found
