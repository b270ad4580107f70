"""The FastAPI app: the API under /api, the web page at /, guards around both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from clipsearch import __version__
from clipsearch.server import media
from clipsearch.server.admission import Admission
from clipsearch.server.api import router
from clipsearch.server.guards import Guard, install_error_handlers
from clipsearch.server.service import SearchService
from clipsearch.server.settings import ServerSettings

STATIC = Path(__file__).with_name("static")
#: Room for the multipart framing around an upload of the largest allowed size.
MULTIPART_OVERHEAD = 64 * 1024

DESCRIPTION = """Search an image collection by text, by example image, or both; find the
texts that describe an image; fetch thumbnails and originals; run indexing jobs.

With an API key set (required when the server listens beyond loopback), send it as the
`X-API-Key` header (or `Authorization: Bearer KEY`)."""


def create_app(settings: ServerSettings, service: SearchService | None = None) -> FastAPI:
    """The app for `settings`. The index is opened and its model loaded when the app starts
    (uvicorn's lifespan), unless a ready `service` is handed in."""
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        to_thread.current_default_thread_limiter().total_tokens = settings.threads
        own = service is None
        app.state.service = service if service is not None else SearchService(settings)
        try:
            yield
        finally:
            if own:
                app.state.service.close()

    app = FastAPI(
        title="clipsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load its scripts from a CDN; the schema is enough
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    if service is not None:
        app.state.service = service
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(media.router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # browsers ask for it whatever the page says
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Admission, max_inflight=settings.max_inflight, deadline_s=settings.deadline)
    # Added last = runs first: CORS answers preflights (which carry no key) before the guard.
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body=settings.max_upload_bytes + MULTIPART_OVERHEAD,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    return app
