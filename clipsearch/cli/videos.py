"""Commands on videos and single pictures: summarize, ask."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    JsonOption,
    ModelOption,
    _print_json,
    _with_index,
    app,
)
from clipsearch.names import readable
from clipsearch.video import clock

if TYPE_CHECKING:
    from clipsearch.asking import Answers
    from clipsearch.index import Index
    from clipsearch.video.summary import Summary


def _video_or_id(value: str) -> int | str:
    return int(value) if value.isdigit() else value


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

    summary, made = _with_index(run, db=db, cache_dir=cache_dir, model=model, create=False)
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

    found = _with_index(run, db=db, cache_dir=cache_dir, model=model, create=False)
    if as_json:
        _print_json(found.to_dict())
        return
    typer.echo(found.best)
    for answer in found.answers:
        typer.echo(f"  {answer.probability:>6.1%}  {answer.answer}", err=True)
