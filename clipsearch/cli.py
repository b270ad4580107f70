"""The `clipsearch` command: parses, calls the library, prints. Nothing else lives here.

Results go to stdout (`--json` for machines); progress and errors go to stderr. Heavy imports
(torch, open_clip) happen inside the library only when a command needs the model.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from clipsearch import config
from clipsearch.errors import ClipsearchError
from clipsearch.search.query import DEFAULT_NEGATIVE_WEIGHT

if TYPE_CHECKING:
    from clipsearch.index import Index

app = typer.Typer(
    name="clipsearch",
    help="Index a photo collection with CLIP and search it by words or by example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = typer.Option(
    None, "--db", help="Index directory [env CLIPSEARCH_DB; default ~/.local/share/clipsearch]."
)
ModelOption = typer.Option(
    None,
    "--model",
    help=(
        "Model spec: 'tiny-random', 'ARCH:TAG' (e.g. ViT-B-32:laion2b_s34b_b79k, the default "
        "for a new index), 'ARCH:/path/to/checkpoint.pt'. Default: the index's own model."
    ),
)
DeviceOption = typer.Option(
    None, "--device", help="cpu, cuda or cuda:N [default: cuda if available]."
)
JsonOption = typer.Option(False, "--json", help="Print JSON for machines.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar.")


def _fail(exc: ClipsearchError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


def _open(settings: config.Settings, *, create: bool, progress: bool = False) -> Index:
    from clipsearch.index import open_index

    return open_index(
        settings.db,
        settings.model,
        create=create,
        device=settings.device,
        batch_size=settings.batch_size,
        workers=settings.workers,
        max_pixels=settings.max_pixels,
        progress=progress,
    )


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@app.command()
def index(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (walked recursively)."),
    db: Path | None = DbOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per model call [32]."),
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding processes [cores, max 4]."
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        help="Skip images larger than this (decompression-bomb guard) [150e6].",
    ),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Add images to the index; a re-run embeds only new or changed files."""
    try:
        settings = config.resolve(
            db=db,
            model=model,
            device=device,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
        )
        with _open(settings, create=True, progress=not quiet) as idx:
            summary = idx.add(paths)
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(summary.to_dict())
        return
    typer.echo(
        f"added {summary.added}, updated {summary.updated}, moved {summary.moved}, "
        f"removed {summary.removed}, unchanged {summary.unchanged}, skipped {len(summary.skipped)}"
    )
    for skip in summary.skipped:
        typer.echo(f"skipping {skip.path}: {skip.reason}", err=True)


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
    diverse: float | None = typer.Option(
        None, "--diverse", help="MMR diversity weight 0..1 (0.3 is a good start)."
    ),
    collapse: float | None = typer.Option(
        None, "--collapse", help="Drop near-duplicates above this cosine (e.g. 0.95)."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Show each hit's rank at every stage of the pipeline."
    ),
    k: int = typer.Option(10, "-k", "--top", help="How many hits."),
    db: Path | None = DbOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Find the images nearest to a text and/or example images (fused: see README)."""
    from clipsearch.search.filters import Filter
    from clipsearch.search.query import Query
    from clipsearch.search.rerank import MMR, CollapseNearDuplicates, Reranker

    if query is None and image is None and not like:
        typer.echo("error: give a text query, --image PATH or --like PATH", err=True)
        raise typer.Exit(code=2)
    try:
        fused = Query.of(
            text=query, image=image, image_weight=weight, like=like, unlike=unlike,
            not_text=not_text, negative_weight=not_weight,
        )  # fmt: skip
        filters = Filter(
            folder=str(folder) if folder else None, path_glob=glob, taken_after=after,
            taken_before=before, min_width=min_width, min_height=min_height,
            orientation=orientation,  # type: ignore[arg-type]  # checked by Filter
            formats=tuple(file_type),
        )  # fmt: skip
        rerankers: list[Reranker] = []
        if collapse is not None:
            rerankers.append(CollapseNearDuplicates(collapse))
        if diverse is not None:
            rerankers.append(MMR(diverse))
        settings = config.resolve(db=db, model=model, device=device)
        with _open(settings, create=False) as idx:
            hits = idx.search(
                query=fused, k=k, filters=filters, rerankers=rerankers, explain=explain
            )
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        typer.echo("no hits", err=True)
        return
    typer.echo(f"{'rank':>4}  {'score':>7}  {'id':>7}  path")
    for rank, hit in enumerate(hits, 1):
        typer.echo(f"{rank:>4}  {hit.score:>7.4f}  {hit.id:>7}  {hit.path}")
        if hit.explain:
            stages = ", ".join(f"{name} {value:g}" for name, value in hit.explain.items())
            typer.echo(f"{'':>23}{stages}")


@app.command()
def stats(db: Path | None = DbOption, as_json: bool = JsonOption) -> None:
    """Show what the index holds: count, model, dimension, index type, size on disk."""
    try:
        settings = config.resolve(db=db)
        with _open(settings, create=False) as idx:
            facts = idx.stats()
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(facts.to_dict())
        return
    for key, value in facts.to_dict().items():
        typer.echo(f"{key:>18}: {value}")


eval_app = typer.Typer(
    help="Measure retrieval quality (Recall@K, zero-shot accuracy, mAP) on a labelled set.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")
EvalDbOption = typer.Option(
    None, "--db", help="Keep the evaluation index here (re-runs are incremental) [a temp dir]."
)
BaselineOption = typer.Option(None, "--baseline", help="A previous --json report: print deltas.")
AnnOption = typer.Option(
    False, "--ann", help="Candidates from an HNSW index instead of exact search (Recall@K only)."
)


@contextlib.contextmanager
def _eval_index(
    db: Path | None, model: str | None, device: str | None, quiet: bool
) -> Iterator[Index]:
    """The evaluation index: `db` if given, else a temporary one removed afterwards."""
    with contextlib.ExitStack() as stack:
        directory = (
            db if db is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        settings = config.resolve(db=directory, model=model, device=device)
        yield stack.enter_context(_open(settings, create=True, progress=not quiet))


def _run_eval(
    evaluate: Callable[[Index], Any],
    db: Path | None,
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
    db: Path | None = EvalDbOption,
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
    db: Path | None = EvalDbOption,
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; committed batches are kept, re-run to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
