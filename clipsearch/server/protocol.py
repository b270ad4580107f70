"""uvicorn's HTTP/1.1 protocol with a deadline for a request's headers.

uvicorn closes idle keep-alive connections, but a connection that is opened and then sends
its request line and headers slowly (or never) is held open forever: a few thousand of them
exhaust the server's sockets ("slowloris"). This protocol gives every request
`HEADER_TIMEOUT` seconds, from the moment the connection is idle, for its headers to arrive
complete; past that the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a complete request line and headers.
HEADER_TIMEOUT = 10.0


def timely_protocol(header_timeout: float = HEADER_TIMEOUT) -> type[H11Protocol]:
    """An `H11Protocol` class (uvicorn's `http=` setting) with this header deadline."""

    class TimelyH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_deadline: asyncio.TimerHandle | None = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _too_slow(self) -> None:
            self._header_deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request is in: the app's own time from here

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimelyH11Protocol


def uvicorn_options(header_timeout: float = HEADER_TIMEOUT) -> dict[str, Any]:
    return {"http": timely_protocol(header_timeout)}
