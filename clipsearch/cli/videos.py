"""Commands on videos and single pictures: summarize, ask."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from clipsearch import config
from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    JsonOption,
    ModelOption,
    _fail,
    _open,
    _print_json,
    app,
)
from clipsearch.errors import ClipsearchError, IndexNotFoundError
from clipsearch.names import readable
from clipsearch.video import clock

T = TypeVar("T")

if TYPE_CHECKING:
    from clipsearch.asking import Answers
    from clipsearch.index import Index
    from clipsearch.video.summary import Summary


def _video_or_id(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _indexed_or_not(
    call: Callable[[Index], T],
    target: str,
    *,
    db: str | None,
    cache_dir: Path | None,
    model: str | None,
) -> T:
    """`call` on the index `--db` names; where none is there and `target` is a file, on a
    scratch index of `--model` in a temporary folder (removed after): a loose picture or
    video needs no index."""
    try:
        settings = config.resolve(db=db, model=model, cache_dir=cache_dir)
        try:
            with _open(settings, create=False) as idx:
                return call(idx)
        except IndexNotFoundError as exc:
            if target.isdigit() or not Path(target).is_file():
                raise
            if model is None:
                raise IndexNotFoundError(
                    f"{exc}; or, for a file without an index, name the model: --model SPEC"
                ) from None
        with tempfile.TemporaryDirectory(prefix="clipsearch-scratch-") as scratch:
            loose = config.resolve(db=scratch, model=model)
            with _open(loose, create=True) as idx:
                idx.record_model()  # the space a loose file is embedded in
                return call(idx)
    except ClipsearchError as exc:
        raise _fail(exc) from None


@app.command()
def summarize(
    video: str = typer.Argument(..., help="A video file (indexed or not) or an indexed id."),
    k: int = typer.Option(8, "-k", "--frames", help="Frames in the summary."),
    query: str | None = typer.Option(
        None, "--query", help="Draw the summary towards what this text describes."
    ),
    sheet: Path | None = typer.Option(
        None, "--sheet", help="Also write a contact sheet of the frames (JPEG) here."
    ),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """A video in k frames that cover it (representative, diverse, spread over its time)."""
    from clipsearch.video.summary import contact_sheet

    def run(idx: Index) -> tuple[Summary, Path | None]:
        summary = idx.summarize(_video_or_id(video), k, query=query)
        made = contact_sheet(summary, sheet, idx.options.max_pixels) if sheet else None
        return summary, made

    summary, made = _indexed_or_not(run, video, db=db, cache_dir=cache_dir, model=model)
    data = summary.to_dict()
    if made is not None:
        data["sheet"] = str(made)
    if as_json:
        _print_json(data)
        return
    typer.echo(
        f"{readable(data['path'])}: {len(data['frames'])} of {data['keyframes']} keyframes, "
        f"{clock(data['duration'])} long"
    )
    for n, frame in enumerate(data["frames"], 1):
        score = f"  {frame['score']:.4f}" if "score" in frame else ""
        typer.echo(f"{n:>4}  {frame['clock']}  ({frame['time']:.2f} s){score}")
    if made is not None:
        typer.echo(f"contact sheet: {made}", err=True)


@app.command()
def ask(
    image: str = typer.Argument(..., help="An image file (indexed or not) or an indexed id."),
    question: str = typer.Argument(..., help='e.g. "what animal is this?" or "is there a dog?"'),
    answers: str | None = typer.Option(
        None, "--answers", help="Candidate answers, comma-separated [the tag vocabulary]."
    ),
    top: int = typer.Option(5, "--top", help="Answers shown."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Answer a question about a picture, zero-shot, with probabilities."""
    choices = [a.strip() for a in answers.split(",") if a.strip()] if answers else None

    def run(idx: Index) -> Answers:
        return idx.ask(_video_or_id(image), question, answers=choices, top=top)

    found = _indexed_or_not(run, image, db=db, cache_dir=cache_dir, model=model)
    if as_json:
        _print_json(found.to_dict())
        return
    typer.echo(found.best)
    for answer in found.answers:
        typer.echo(f"  {answer.probability:>6.1%}  {answer.answer}", err=True)
