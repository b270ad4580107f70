"""Commands on texts: tag images, add / list / remove text sources."""

from __future__ import annotations

from pathlib import Path

import typer

from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    QuietOption,
    WaitOption,
    _print_json,
    _with_index,
    app,
)
from clipsearch.cli.plain_help import WholeSummaries
from clipsearch.names import readable


@app.command()
def tag(
    paths: list[Path] = typer.Argument(..., help="Image files, or folders of indexed images."),
    top: int = typer.Option(5, "-k", "--top", help="At most this many tags per image."),
    every: bool = typer.Option(
        False, "--top-k", help="Always the k nearest terms, not only those over each term's bar."
    ),
    vocabulary: Path | None = typer.Option(
        None, "--vocabulary", help="One term per line [clipsearch's own, ~1,900 terms]."
    ),
    store: bool = typer.Option(
        False, "--store", help="Keep the tags of indexed images, for `search --tag`."
    ),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
    wait: bool = WaitOption,
    quiet: bool = QuietOption,
) -> None:
    """Zero-shot tags for images: the vocabulary terms nearest to each (prompt ensembles)."""
    results = _with_index(
        lambda idx: idx.tag(
            paths, top=top, vocabulary=vocabulary, store=store, calibrated=not every
        ),
        db=db, cache_dir=cache_dir, create=True, model=model, device=device, wait=wait,
        progress=not quiet,
    )  # fmt: skip
    if as_json:
        _print_json([r.to_dict() for r in results])
        return
    for result in results:
        tags = ", ".join(f"{t} ({s:.2f})" for t, s in result.tags) or "(no tag over its bar)"
        typer.echo(f"{readable(result.path)}: {tags}")


texts_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich reads "[default: ...]" in help texts as markup
    cls=WholeSummaries,
    help="Texts to search (image→text, text→text): captions, records, vocabularies.",
    no_args_is_help=True,
)
app.add_typer(texts_app, name="texts")


@texts_app.command("add")
def texts_add(
    files: list[Path] = typer.Argument(
        ..., help="captions CSV (image,caption), JSONL ({id, text, ...}) or vocabulary .txt."
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="captions, jsonl or vocabulary [from the file name]."
    ),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    images: Path | None = typer.Option(
        None, "--images", help="Folder the image paths in the files are relative to [theirs]."
    ),
    as_json: bool = JsonOption,
    wait: bool = WaitOption,
    quiet: bool = QuietOption,
) -> None:
    """Add texts; re-adding a changed file replaces its texts, an unchanged one is skipped."""
    summaries = _with_index(
        lambda idx: [idx.texts.add(f, kind=kind, images=images) for f in files],
        db=db, cache_dir=cache_dir, create=True, model=model, device=device, wait=wait,
        progress=not quiet,
    )  # fmt: skip
    for s in summaries:
        if s.missing_images:
            typer.echo(
                f"warning: {s.missing_images} of {s.texts} texts in {s.source} name an image "
                f"that does not exist (first: {readable(s.first_missing or '')}); if the "
                "images are in another folder, add the file again with --images DIR",
                err=True,
            )
    if as_json:
        _print_json([s.to_dict() for s in summaries])
        return
    for s in summaries:
        state = "unchanged" if s.unchanged else f"{s.encoded} encoded"
        typer.echo(f"{s.source}: {s.texts} {s.kind} texts ({state})")


@texts_app.command("list")
def texts_list(
    db: str | None = DbOption, cache_dir: Path | None = CacheDirOption, as_json: bool = JsonOption
) -> None:
    """The text sources in the index, with how many texts each holds."""
    sources = _with_index(
        lambda idx: idx.texts.table.sources(), db=db, cache_dir=cache_dir, create=False
    )
    if as_json:
        _print_json([{"kind": s.kind, "source": s.path, "texts": s.texts} for s in sources])
        return
    for s in sources:
        typer.echo(f"{s.texts:>7}  {s.kind:<10}  {readable(s.path)}")


@texts_app.command("remove")
def texts_remove(
    source: str = typer.Argument(..., help="A source as `texts list` shows it."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    wait: bool = WaitOption,
) -> None:
    """Drop a text source and its texts."""
    _with_index(
        lambda idx: idx.texts.remove(source), db=db, cache_dir=cache_dir, create=False, wait=wait
    )
    typer.echo(f"removed {source}")
