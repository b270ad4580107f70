"""`clipsearch eval`: retrieval quality on labelled collections."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from clipsearch import config
from clipsearch.cli.common import (
    DeviceOption,
    JsonOption,
    ModelOption,
    QuietOption,
    _fail,
    _open,
    _print_json,
    app,
)
from clipsearch.cli.plain_help import WholeSummaries
from clipsearch.errors import ClipsearchError

if TYPE_CHECKING:
    from clipsearch.index import Index

eval_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich reads "[default: ...]" in help texts as markup
    cls=WholeSummaries,
    help="Measure retrieval quality (Recall@K, zero-shot accuracy, mAP) on a labelled set.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")
EvalDbOption = typer.Option(
    None,
    "--db",
    metavar="FOLDER|URL",
    help=(
        "Keep the evaluation index here, a folder or a PostgreSQL URL (re-runs are "
        "incremental) [a temp dir]."
    ),
)
BaselineOption = typer.Option(None, "--baseline", help="A previous --json report: print deltas.")
AnnOption = typer.Option(
    False, "--ann", help="Candidates from an HNSW index instead of exact search (Recall@K only)."
)


@contextlib.contextmanager
def _eval_index(
    db: str | None, model: str | None, device: str | None, quiet: bool
) -> Iterator[Index]:
    """The evaluation index: `db` (a folder or a database URL) if given, else a temporary
    folder removed afterwards."""
    with contextlib.ExitStack() as stack:
        where = db if db is not None else stack.enter_context(tempfile.TemporaryDirectory())
        settings = config.resolve(db=where, model=model, device=device)
        yield stack.enter_context(_open(settings, create=True, progress=not quiet))


def _run_eval(
    evaluate: Callable[[Index], Any],
    db: str | None,
    model: str | None,
    device: str | None,
    quiet: bool,
    as_json: bool,
    baseline: Path | None,
) -> None:
    """Run one evaluation on its index and print the report (with deltas to `baseline`)."""
    from clipsearch.evaluation.report import format_table

    try:
        previous = None
        if baseline is not None:
            try:
                previous = json.loads(baseline.read_text())
            except (OSError, ValueError) as exc:
                raise ClipsearchError(f"cannot read baseline {baseline}: {exc}") from exc
        with _eval_index(db, model, device, quiet) as idx:
            report = evaluate(idx).to_dict()
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(report)
    else:
        typer.echo(format_table(report, previous))


@eval_app.command("classes")
def eval_classes(
    root: Path = typer.Argument(..., help="Folder of class folders: ROOT/<class>/*.jpg."),
    queries: Path | None = typer.Option(
        None, "--queries", help='JSON list of {"query": ..., "class": ...}: precision@10 each.'
    ),
    db: str | None = EvalDbOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
    baseline: Path | None = BaselineOption,
    ann: bool = AnnOption,
    quiet: bool = QuietOption,
) -> None:
    """Zero-shot accuracy (prompt ensembles), text→image precision@10 and mAP per class."""
    from clipsearch.evaluation import evaluate_classes
    from clipsearch.evaluation.classes import read_queries

    try:
        labelled = read_queries(queries) if queries is not None else []
    except ClipsearchError as exc:
        raise _fail(exc) from None
    _run_eval(
        lambda idx: evaluate_classes(idx, root, labelled, ann=ann),
        db, model, device, quiet, as_json, baseline,
    )  # fmt: skip


@eval_app.command("captions")
def eval_captions(
    captions: Path = typer.Argument(..., help="CSV with an image,caption header."),
    images: Path = typer.Option(..., "--images", help="Folder holding the CSV's images."),
    db: str | None = EvalDbOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
    baseline: Path | None = BaselineOption,
    ann: bool = AnnOption,
    quiet: bool = QuietOption,
) -> None:
    """Recall@1/5/10 and median rank, text→image and image→text (Flickr30k/COCO protocol)."""
    from clipsearch.evaluation import evaluate_captions

    _run_eval(
        lambda idx: evaluate_captions(idx, images, captions, ann=ann),
        db, model, device, quiet, as_json, baseline,
    )  # fmt: skip
