"""Admission control: a server that cannot answer in time says so at once.

Searches in progress are counted (`Admission`, ASGI middleware around the search routes):
past `max_inflight`, a new one is answered 429 Too Many Requests with Retry-After at once,
instead of joining a queue that only grows (under overload every request would otherwise
wait longer and longer, and all of them time out). A search let in gets a `deadline`: if it
is still waiting when the deadline passes (for its text's batch, or for a worker thread),
its work is dropped and it is answered 503 with Retry-After. The health route, the web page
and file requests are never counted.
"""

from __future__ import annotations

import contextvars
import time

from clipsearch.errors import ClipsearchError
from clipsearch.server.asgi import ASGIApp, Receive, Scope, Send, reject

#: The routes admission control counts: those that run the model or search.
SEARCH_PATHS = ("/api/search", "/api/texts/search")
#: When the current search must be answered by (time.monotonic()), if it has a deadline.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "clipsearch_deadline", default=None
)


class OverloadedError(ClipsearchError):
    """The server is too busy to answer this request in time; try again after
    `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def deadline() -> float | None:
    """The current request's deadline (time.monotonic()), if it has one."""
    return _deadline.get()


def check_deadline(waiting_for: str) -> None:
    """Raise `OverloadedError` if the current request's deadline has passed (call it where
    a request has waited, before it starts work)."""
    due = _deadline.get()
    if due is not None and time.monotonic() > due:
        raise OverloadedError(
            f"the server is overloaded: this search waited for {waiting_for} past its "
            "deadline; retry shortly"
        )


class Admission:
    """ASGI middleware: counts searches in flight, refuses those over `max_inflight` with
    429, and gives each search let in a deadline `deadline_s` seconds away."""

    def __init__(self, app: ASGIApp, max_inflight: int, deadline_s: float) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.deadline_s = deadline_s
        self.inflight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(SEARCH_PATHS):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            self.refused += 1
            await reject(
                send, 429,
                f"the server is answering {self.inflight} searches, its limit "
                "(--max-inflight); retry shortly",
                retry_after=1,
            )  # fmt: skip
            return
        self.inflight += 1
        token = _deadline.set(time.monotonic() + self.deadline_s)
        try:
            await self.app(scope, receive, send)
        finally:
            _deadline.reset(token)
            self.inflight -= 1
