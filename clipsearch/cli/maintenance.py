"""Commands that look after an index: verify, repair, backup, copy."""

from __future__ import annotations

from pathlib import Path

import typer

from clipsearch import config
from clipsearch.cli.common import DbOption, JsonOption, WaitOption, _fail, _print_json, app
from clipsearch.errors import ClipsearchError


def _folder(db: str | None, command: str) -> Path:
    """The SQLite index folder these commands work on; a PostgreSQL index is looked after by
    the server's own tools."""
    from clipsearch.storage.location import locate

    location = locate(config.resolve(db=db).db)
    if location.folder is None:
        raise ClipsearchError(
            f"`clipsearch {command}` works on SQLite index folders; {location.label} is a "
            "PostgreSQL database: look after it with PostgreSQL's own tools (pg_dump, "
            "pg_amcheck), or take a verified local copy with `clipsearch copy URL FOLDER`"
        )
    return location.folder


@app.command()
def verify(
    db: str | None = DbOption,
    files: bool = typer.Option(
        True, "--files/--no-files", help="Also check that every indexed file is on disk."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check the index: database integrity, every vector, the caches, texts, tags, files.
    Exits 1 when something is wrong."""
    from clipsearch.storage.verify import verify as run_verify

    try:
        report = run_verify(_folder(db, "verify"), files=files)
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(report.to_dict())
    else:
        typer.echo(f"{report.directory}: {report.images} images, {report.texts} texts")
        for note in report.notes:
            typer.echo(f"note: {note}")
        for p in report.problems:
            typer.echo(f"{p.kind}: {p.where}: {p.detail}")
        for kind, count in report.unlisted.items():
            typer.echo(f"{kind}: {count} more not listed")
        typer.echo("ok" if report.ok else f"{len(report.problems)} problems found", err=True)
    if not report.ok:
        raise typer.Exit(code=1)


@app.command()
def repair(db: str | None = DbOption, wait: bool = WaitOption, as_json: bool = JsonOption) -> None:
    """Salvage a damaged database into a fresh one (the old file is kept aside), quarantine
    damaged rows, drop orphaned tags and texts, rebuild the caches."""
    from clipsearch.maintenance.repair import repair as run_repair

    try:
        report = run_repair(_folder(db, "repair"), wait=None if wait else 0.0)
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(report.to_dict())
    else:
        if report.kept_aside:
            saved = ", ".join(f"{t} {n}" for t, n in report.salvaged.items() if n)
            typer.echo(f"salvaged rows into a fresh database: {saved or 'none'}")
            typer.echo(f"the damaged file is kept as {report.kept_aside}")
        if report.header_rebuilt:
            typer.echo(
                f"rebuilt the damaged file header (page size {report.header_rebuilt:,}) "
                "to read the pages behind it"
            )
        for table, count in report.lost.items():
            typer.echo(f"could not save up to {count} rows of {table}")
        for table in report.unreadable:
            typer.echo(f"could not read {table} at all: how many rows it held is unknown")
        if report.lost.get("images") or "images" in report.unreadable:
            typer.echo("run `clipsearch index` on your folders again to embed the lost images")
        if report.quarantined:
            typer.echo(
                f"quarantined {report.quarantined} rows with damaged vectors (listed in "
                "quarantine.jsonl; `clipsearch index` of their folder embeds them again)"
            )
        if report.orphans_removed:
            typer.echo(f"removed {report.orphans_removed} orphaned tags and texts")
        typer.echo(f"rebuilt: {', '.join(report.caches_rebuilt) or 'no cache needed'}")
        for line in report.remaining:
            typer.echo(f"still wrong: {line}", err=True)
    if report.remaining:
        raise typer.Exit(code=1)


@app.command()
def backup(
    dest: Path = typer.Argument(..., help="A new folder for the copy (an index folder itself)."),
    db: str | None = DbOption,
    force: bool = typer.Option(False, "--force", help="Overwrite a copy already in DEST."),
    as_json: bool = JsonOption,
) -> None:
    """Copy the index's database consistently, even while it is being written."""
    from clipsearch.storage.backup import backup as run_backup

    try:
        report = run_backup(_folder(db, "backup"), dest, force=force)
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(report.to_dict())
    else:
        typer.echo(
            f"backed up {report.images} images and {report.texts} texts "
            f"({report.bytes / 1e6:.1f} MB) to {report.target}"
        )


@app.command()
def copy(
    source: str = typer.Argument(..., help="The index to copy: a folder or a PostgreSQL URL."),
    target: str = typer.Argument(..., help="A new folder, or an empty PostgreSQL database."),
    wait: bool = WaitOption,
    as_json: bool = JsonOption,
) -> None:
    """Copy a whole index between stores (SQLite folder <-> PostgreSQL), ids kept, verified
    by row counts and a checksum of every vector."""
    from clipsearch.storage.transfer import copy as run_copy

    try:
        report = run_copy(source, target, wait=None if wait else 0.0)
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(report.to_dict())
        return
    rows = report.rows
    typer.echo(
        f"copied {rows['images']} images, {rows['texts']} texts, {rows['adapters']} adapters "
        f"from {report.source} to {report.target} in {report.seconds:.1f} s; verified "
        f"(images sha256 {report.vectors_sha256['images'][:12]})"
    )
