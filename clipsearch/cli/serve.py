"""`clipsearch serve`: the HTTP API and the web page over one index."""

from __future__ import annotations

from pathlib import Path

import typer

from clipsearch import config
from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    DeviceOption,
    ModelOption,
    RuntimeOption,
    _fail,
    app,
)
from clipsearch.errors import ClipsearchError, IndexNotFoundError


@app.command()
def serve(
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; anything but loopback needs a key."
    ),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="CLIPSEARCH_API_KEY",
        help="Clients must send this as the X-API-Key header.",
    ),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest query upload."),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="Allow browser pages from this origin (repeatable); off if none."
    ),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse indexing jobs."),
    create: bool = typer.Option(
        False, "--create", help="Serve a new, empty index if --db holds none (fill it by jobs)."
    ),
    ensemble: list[str] = typer.Option(
        [],
        "--ensemble",
        metavar="FOLDER|URL",
        help="Another index of the same photos (another model) that requests may fuse with "
        "(repeatable; a request names it in `ensemble`).",
    ),
    batch_queries: bool = typer.Option(
        True, "--batch-queries/--no-batch-queries", help="Encode concurrent text queries together."
    ),
    device: str | None = DeviceOption,
    runtime: str | None = RuntimeOption,
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding processes of indexing jobs [default: cores, up to 4]."
    ),
    threads: int = typer.Option(4, "--threads", help="Worker threads for searches and files."),
    max_inflight: int = typer.Option(
        64, "--max-inflight", help="Searches answered at once; more are refused with 429."
    ),
    deadline: float = typer.Option(
        5.0, "--deadline", help="Seconds a search may wait for the model or a thread (then 503)."
    ),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="Seconds a client has to send a request's headers."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
    ray: str | None = typer.Option(
        None, "--ray", help="A Ray cluster for --shards: auto, HOST:PORT or local."
    ),
    shards: int = typer.Option(
        0, "--shards", help="Search vectors in N shards held by Ray actors [0: here]."
    ),
) -> None:
    """Serve the HTTP API (/api, schema at /api/openapi.json) and the search page (/)."""
    from clipsearch.server import ServerSettings, create_app
    from clipsearch.server.protocol import exit_when_stuck, run
    from clipsearch.server.service import SearchService
    from clipsearch.storage.location import locate

    try:
        resolved = config.resolve(
            db=db, model=model, device=device, runtime=runtime, workers=workers,
            cache_dir=cache_dir,
        )  # fmt: skip
        settings = ServerSettings(
            db=resolved.db,
            cache_dir=resolved.cache_dir,
            model=resolved.model,
            host=host,
            port=port,
            api_key=api_key or None,
            max_upload_bytes=int(max_upload_mb * 2**20),
            cors_origins=tuple(cors_origin),
            read_only=read_only,
            create=create,
            ensemble=tuple(ensemble),
            batch_queries=batch_queries,
            device=resolved.device,
            runtime=resolved.runtime,
            precision=resolved.precision,
            workers=resolved.workers,
            threads=threads,
            max_inflight=max_inflight,
            deadline=deadline,
            shards=shards,
            ray=ray,
        )
        settings.check()
        shown_db = locate(settings.db).label  # no password on the screen
        typer.echo(f"loading {shown_db} ...", err=True)
        service = SearchService(settings)
    except IndexNotFoundError as exc:
        more = "; or add --create to serve a new, empty index there (filled by indexing jobs)"
        raise _fail(IndexNotFoundError(f"{exc}{more}")) from None
    except ClipsearchError as exc:
        raise _fail(exc) from None
    try:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"serving {shown_db} on http://{shown}:{port}/", err=True)
        run(create_app(settings, service), host, port, log_level, header_timeout)
    finally:
        exit_when_stuck()
        service.close()
