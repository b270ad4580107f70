"""uvicorn's HTTP/1.1 protocol with a deadline for a request's headers.

uvicorn closes idle keep-alive connections, but a connection that is opened and then sends
its request line and headers slowly (or never) is held open forever: a few thousand of them
exhaust the server's sockets ("slowloris"). This protocol gives every request
`HEADER_TIMEOUT` seconds, from the moment the connection is idle, for its headers to arrive
complete; past that the connection is closed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a complete request line and headers.
HEADER_TIMEOUT = 10.0
#: Seconds a stopping server (SIGTERM, Ctrl-C) lets requests in flight finish; then they are
#: cancelled (a thread still computing one is left behind, see `exit_when_stuck`).
GRACEFUL_SECONDS = 5.0
#: Seconds the process may then take to close the index and exit before it is ended.
EXIT_SECONDS = 3.0


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
    return {
        "http": timely_protocol(header_timeout),
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
    }


def run(app: Any, host: str, port: int, log_level: str, header_timeout: float) -> None:
    """Serve `app` with uvicorn until stopped (SIGINT, SIGTERM), with this module's
    protocol and shutdown settings."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, **uvicorn_options(header_timeout))


def exit_when_stuck(seconds: float = EXIT_SECONDS) -> None:
    """End the process `seconds` from now unless it has ended by itself: a worker thread
    still inside a model call or a query cannot be interrupted, and the interpreter would
    wait for it at exit, so a stopped server could outlive its SIGTERM (issue 28)."""

    def end() -> None:
        others = [t for t in threading.enumerate() if t is not threading.main_thread()]
        busy = [t.name for t in others if not t.daemon and t.is_alive()]
        print(
            f"clipsearch serve: {len(busy)} thread(s) still busy {seconds:.0f} s after the "
            f"server stopped ({', '.join(busy)}); exiting without them",
            file=sys.stderr,
            flush=True,
        )
        os._exit(0)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
