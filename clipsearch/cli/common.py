"""What every command shares: the app, the common options, opening the index, printing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from clipsearch import config
from clipsearch.cli.plain_help import WholeSummaries
from clipsearch.errors import ClipsearchError
from clipsearch.names import readable

T = TypeVar("T")

if TYPE_CHECKING:
    from clipsearch.index import Index
    from clipsearch.texts import TextHit

app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich reads "[default: ...]" in help texts as markup
    cls=WholeSummaries,
    name="clipsearch",
    help="Index a photo collection with CLIP and search it by words or by example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click inherits these into every command and group below.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        from clipsearch import __version__

        typer.echo(f"clipsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    """Index a photo collection with CLIP and search it by words or by example."""


DbOption = typer.Option(
    None,
    "--db",
    metavar="FOLDER|URL",
    help=(
        "Index folder (SQLite), or a PostgreSQL URL postgresql+psycopg://USER@HOST/NAME "
        "[env CLIPSEARCH_DB; default ~/.local/share/clipsearch]."
    ),
)
CacheDirOption = typer.Option(
    None,
    "--cache-dir",
    help=(
        "Local caches (FAISS files, thumbnails) of a PostgreSQL index [env "
        "CLIPSEARCH_CACHE_DIR; default ~/.cache/clipsearch/indexes; an SQLite index: its folder]."
    ),
)
ModelOption = typer.Option(
    None,
    "--model",
    metavar="SPEC",
    help=(
        "Model spec: 'tiny-random', 'ARCH:TAG' (e.g. ViT-B-32:laion2b_s34b_b79k, the default "
        "for a new index), 'ARCH:/path/to/checkpoint.pt'. Default: the index's own model."
    ),
)
DeviceOption = typer.Option(
    None, "--device", help="cpu, cuda or cuda:N [default: cuda if available]."
)
RuntimeOption = typer.Option(
    None,
    "--runtime",
    help=(
        "Run the model with torch, onnx (ONNX Runtime) or openvino; auto: the fastest measured "
        "on this machine [env CLIPSEARCH_RUNTIME; default: as the index was built, else auto]."
    ),
)
PrecisionOption = typer.Option(
    None,
    "--precision",
    help=(
        "fp32, int8 (quantised image tower, with --runtime onnx), or auto (int8 where it "
        "measures as good and faster on the first photos) [env CLIPSEARCH_PRECISION; default: "
        "as the index was built, else auto for a new index]."
    ),
)
JsonOption = typer.Option(False, "--json", help="Print JSON for machines.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar.")
WaitOption = typer.Option(
    False, "--wait", help="If another process is writing to the index, queue behind it."
)


def _fail(exc: ClipsearchError) -> typer.Exit:
    typer.echo(f"error: {readable(str(exc))}", err=True)
    return typer.Exit(code=1)


def _open(
    settings: config.Settings, *, create: bool, progress: bool = False, wait: bool = False
) -> Index:
    from clipsearch.index import open_index

    return open_index(
        settings.db,
        settings.model,
        cache_dir=settings.cache_dir,
        create=create,
        device=settings.device,
        runtime=settings.runtime,
        precision=settings.precision,
        batch_size=settings.batch_size,
        workers=settings.workers,
        max_pixels=settings.max_pixels,
        max_frames_per_video=settings.max_frames_per_video,
        progress=progress,
        wait=None if wait else 0.0,
    )


def _with_index(
    call: Callable[[Index], T],
    *,
    db: str | None,
    create: bool,
    cache_dir: Path | None = None,
    model: str | None = None,
    device: str | None = None,
    wait: bool = False,
    progress: bool = False,
) -> T:
    """Run `call` on the index the settings name; a library error exits with its message."""
    try:
        settings = config.resolve(db=db, model=model, device=device, cache_dir=cache_dir)
        with _open(settings, create=create, wait=wait, progress=progress) as idx:
            return call(idx)
    except ClipsearchError as exc:
        raise _fail(exc) from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _print_text_hits(hits: list[TextHit], as_json: bool) -> None:
    if as_json:
        _print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        typer.echo("no hits", err=True)
    for rank, hit in enumerate(hits, 1):
        about = f"  [{readable(hit.image_path)}]" if hit.image_path else ""
        typer.echo(f"{rank:>4}  {hit.score:>7.4f}  {hit.kind:<10}  {readable(hit.text)}{about}")
