"""What stands between the network and the index: the API key, the request-size limit, and
errors turned into JSON with the right status and no internals."""

from __future__ import annotations

import hmac
import logging
from urllib.parse import unquote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipsearch.errors import (
    ClipsearchError,
    ClusterError,
    DiskFullError,
    EmptyIndexError,
    ImageDecodeError,
    IndexBusyError,
    IndexDamagedError,
    IndexNotFoundError,
    ModelMismatchError,
    ReadOnlyIndexError,
    ShardUnavailableError,
)
from clipsearch.server.admission import OverloadedError
from clipsearch.server.asgi import ASGIApp, Message, Receive, Scope, Send, reject
from clipsearch.server.errors import (
    ForbiddenFileError,
    JobBusyError,
    NotFoundError,
    UnsupportedImageError,
    UploadTooLargeError,
)
from clipsearch.server.settings import is_loopback

log = logging.getLogger("clipsearch.server")

KEY_HEADER = "x-api-key"
KEY_COOKIE = "clipsearch_key"
#: Paths anyone may fetch: the page and its assets hold no data.
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/", "/favicon.ico")

_STATUS: list[tuple[type[ClipsearchError], int]] = [
    (OverloadedError, 503),
    (IndexBusyError, 409),
    (ReadOnlyIndexError, 403),
    (DiskFullError, 507),
    (IndexDamagedError, 503),
    (ShardUnavailableError, 503),
    (ClusterError, 503),
    (NotFoundError, 404),
    (IndexNotFoundError, 404),
    (ForbiddenFileError, 403),
    (UploadTooLargeError, 413),
    (UnsupportedImageError, 415),
    (ImageDecodeError, 415),
    (ModelMismatchError, 409),
    (JobBusyError, 409),
    (EmptyIndexError, 400),
]


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def status_of(exc: ClipsearchError) -> int:
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)


def install_error_handlers(app: FastAPI) -> None:
    async def library_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ClipsearchError)
        if isinstance(exc, OverloadedError):
            return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})
        return error_response(status_of(exc), str(exc))

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return error_response(400, "bad request: " + "; ".join(problems))

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error; the server log has the details")

    app.add_exception_handler(ClipsearchError, library_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


class Guard:
    """ASGI middleware: checks the API key (when one is set) and caps request bodies.

    Without a key (a loopback server), only requests addressed to a loopback name are
    served: a web page elsewhere can make a browser resolve its own domain to 127.0.0.1
    (DNS rebinding), but its requests still say `Host: evil.example`.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.api_key and not loopback_host(_header(scope, b"host")):
            await reject(
                send,
                403,
                "this server answers only requests addressed to localhost, 127.0.0.1 or [::1] "
                "(start it with --api-key to serve other names)",
            )
            return
        if self.api_key and not self._public(scope["path"]) and not self._authorised(scope):
            await reject(send, 401, "missing or wrong API key: send it as the X-API-Key header")
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await reject(send, 413, self._too_large())
            return
        await self.app(scope, self._capped(receive), send)

    def _too_large(self) -> str:
        return f"request body over the server's limit of {self.max_body / 2**20:.0f} MiB"

    def _capped(self, receive: Receive) -> Receive:
        """`receive` that stops a body sent without Content-Length at the limit."""
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self._too_large())
            return message

        return capped

    @staticmethod
    def _public(path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def _authorised(self, scope: Scope) -> bool:
        assert self.api_key is not None
        given = _header(scope, KEY_HEADER.encode())
        bearer = _header(scope, b"authorization")
        if given is None and bearer and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        if given is None:
            given = _cookie(scope, KEY_COOKIE)
        return given is not None and hmac.compare_digest(given.encode(), self.api_key.encode())


class BodyTooLarge(HTTPException):
    """Raised from inside a body read. An HTTPException, because FastAPI turns any other
    error met while parsing a body into a 400."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie") or ""
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return unquote(value)  # the page stores it URL-encoded (keys with + / =)
    return None


def loopback_host(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback interface (any port). A request
    without one (HTTP/1.0, not a browser) is let through."""
    if host is None:
        return True
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return is_loopback(name)
