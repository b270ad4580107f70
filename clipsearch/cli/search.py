"""`clipsearch search`: images (or texts) by words and/or example images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipsearch import config
from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    RuntimeOption,
    _fail,
    _open,
    _print_json,
    _print_text_hits,
    app,
)
from clipsearch.errors import ClipsearchError
from clipsearch.names import readable
from clipsearch.search.query import DEFAULT_NEGATIVE_WEIGHT
from clipsearch.video import clock

if TYPE_CHECKING:
    from clipsearch.index import Index


@app.command()
def search(
    query: str | None = typer.Argument(None, help="What to look for, in words."),
    image: Path | None = typer.Option(None, "--image", help="Search by an example image."),
    like: list[Path] = typer.Option(
        [], "--like", help="More example images to be like (repeatable): 'more like these'."
    ),
    unlike: list[Path] = typer.Option([], "--unlike", help="Example images to avoid (repeatable)."),
    not_text: list[str] = typer.Option([], "--not", help="Words to avoid (repeatable)."),
    weight: float = typer.Option(
        1.0, "--weight", help="Weight of the example image(s) against the text's 1.0."
    ),
    not_weight: float = typer.Option(
        DEFAULT_NEGATIVE_WEIGHT, "--not-weight", help="Weight of each --not / --unlike part."
    ),
    folder: Path | None = typer.Option(None, "--folder", help="Only images under this folder."),
    glob: str | None = typer.Option(None, "--glob", help="Only paths matching, e.g. '*/2021/*'."),
    after: str | None = typer.Option(None, "--after", help="Taken on or after (ISO date)."),
    before: str | None = typer.Option(None, "--before", help="Taken before (ISO date)."),
    min_width: int | None = typer.Option(None, "--min-width", help="At least this wide (px)."),
    min_height: int | None = typer.Option(None, "--min-height", help="At least this tall (px)."),
    orientation: str | None = typer.Option(
        None, "--orientation", help="landscape, portrait or square."
    ),
    file_type: list[str] = typer.Option(
        [], "--type", help="Only this format, e.g. jpeg, png (repeatable)."
    ),
    tag: list[str] = typer.Option(
        [], "--tag", help="Only images with this tag (repeatable: all must hold)."
    ),
    texts: bool = typer.Option(
        False, "--texts", help="Search the indexed texts instead of the images."
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="With --texts: only captions, jsonl, vocabulary or sidecar texts."
    ),
    diverse: float | None = typer.Option(
        None, "--diverse", help="MMR diversity weight 0..1 (0.3 is a good start)."
    ),
    collapse: float | None = typer.Option(
        None, "--collapse", help="Drop near-duplicates above this cosine (e.g. 0.95)."
    ),
    ensemble: list[str] = typer.Option(
        [],
        "--ensemble",
        metavar="FOLDER|URL",
        help="Another index of the same photos (another model) to fuse with.",
    ),
    ensemble_weight: float = typer.Option(
        1.0, "--ensemble-weight", help="Weight of each --ensemble index against this one's 1.0."
    ),
    fusion: str = typer.Option("score", "--fusion", help="Ensemble fusion: score or rrf."),
    explain: bool = typer.Option(
        False, "--explain", help="Show each hit's rank at every stage of the pipeline."
    ),
    mode: str = typer.Option(
        "hybrid", "--mode", help="hybrid (words and meaning), semantic, or keyword."
    ),
    sort: str = typer.Option(
        "relevance", "--sort", help="relevance, or date (taken, newest first) among the hits."
    ),
    min_relevance: str = typer.Option(
        "off",
        "--min-relevance",
        help="auto (say 'no good match' when nothing is), off, or a relevance from 0 to 1.",
    ),
    k: int = typer.Option(10, "-k", "--top", help="How many hits."),
    offset: int = typer.Option(0, "--offset", help="Skip this many hits first (the next page)."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    runtime: str | None = RuntimeOption,
    as_json: bool = JsonOption,
) -> None:
    """Find the images (or with --texts the texts) nearest to words and/or example images."""
    from clipsearch.search.filters import Filter
    from clipsearch.search.request import SearchRequest

    if query is None and image is None and not like:
        typer.echo("error: give a text query, --image PATH or --like PATH", err=True)
        raise typer.Exit(code=2)
    image_only = {
        "--folder": folder, "--glob": glob, "--after": after, "--before": before,
        "--min-width": min_width, "--min-height": min_height, "--orientation": orientation,
        "--type": file_type, "--tag": tag, "--diverse": diverse, "--collapse": collapse,
        "--ensemble": ensemble, "--explain": explain, "--offset": offset,
    }  # fmt: skip
    given = [flag for flag, value in image_only.items() if value not in (None, False, [])]
    if texts and given:
        typer.echo(
            f"error: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to image "
            "searches, not to --texts (which takes --kind); drop it or drop --texts",
            err=True,
        )
        raise typer.Exit(code=2)
    if kind is not None and not texts:
        typer.echo("error: --kind chooses which texts --texts searches; add --texts", err=True)
        raise typer.Exit(code=2)
    try:
        filters = Filter(
            folder=str(folder) if folder else None, path_glob=glob, taken_after=after,
            taken_before=before, min_width=min_width, min_height=min_height,
            orientation=orientation,  # type: ignore[arg-type]  # checked by Filter
            formats=tuple(file_type), tags=tuple(tag),
        )  # fmt: skip
        request = SearchRequest.of(
            text=query, image=image, image_weight=weight, like=like, unlike=unlike,
            not_text=not_text, negative_weight=not_weight, k=k, offset=offset,
            filters=filters, mode=mode,
            min_relevance=min_relevance, sort=sort, diverse=diverse, collapse=collapse,
            ensemble=tuple(ensemble), ensemble_weight=ensemble_weight, fusion=fusion,
            explain=explain,
        )  # fmt: skip
        settings = config.resolve(
            db=db, model=model, device=device, runtime=runtime, cache_dir=cache_dir
        )
        with _open(settings, create=False) as idx:
            if texts:
                found = idx.search_texts(query=request.query, k=k, kind=kind)
                _print_text_hits(found, as_json)
                return
            judged = idx.find(request, members=_member)
            hits, note, weaker = judged.hits, judged.note, judged.weaker
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        typer.echo(_empty_message(note, weaker), err=True)
        return
    graded = any(h.relevance is not None for h in hits)
    typer.echo(f"{'rank':>4}  {'score':>7}  {'relevance':>9}  {'id':>7}  path" if graded
               else f"{'rank':>4}  {'score':>7}  {'id':>7}  path")  # fmt: skip
    for rank, hit in enumerate(hits, offset + 1):
        grade = f"{hit.relevance:>9.2f}  " if hit.relevance is not None else ""
        where = readable(hit.path) + (f" @ {clock(hit.time)}" if hit.time is not None else "")
        typer.echo(f"{rank:>4}  {hit.score:>7.4f}  {grade}{hit.id:>7}  {where}")
        if hit.explain:
            stages = ", ".join(f"{name} {value:g}" for name, value in hit.explain.items())
            typer.echo(f"{'':>23}{stages}")


def _empty_message(note: str | None, weaker: int) -> str:
    if note is None:
        return "no hits"
    more = f"; {weaker} weaker hits are left out (--min-relevance off shows them)" if weaker else ""
    return note + more


def _member(where: str) -> Index:
    """An ensemble index, opened with the settings (environment, config file) as `--db` is."""
    return _open(config.resolve(db=where), create=False)
