"""Commands on images: index, search, stats."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from clipsearch import config
from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    QuietOption,
    WaitOption,
    _fail,
    _open,
    _print_json,
    _print_text_hits,
    _with_index,
    app,
)
from clipsearch.errors import ClipsearchError, IndexNotFoundError
from clipsearch.names import readable
from clipsearch.search.query import DEFAULT_NEGATIVE_WEIGHT

if TYPE_CHECKING:
    from clipsearch.index import Index
    from clipsearch.search.filters import Filter
    from clipsearch.search.query import Query
    from clipsearch.search.searcher import Hit


@app.command()
def index(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (walked recursively)."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
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
    vector_dtype: str | None = typer.Option(
        None, "--vector-dtype", help="Store vectors as float32 or float16 (half the size)."
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Read and encode on a Ray cluster: auto (the one `ray start` made here), "
        "HOST:PORT, or local (a cluster of this machine). Files must be readable at the "
        "same paths on every node.",
    ),
    encoders: int | None = typer.Option(
        None, "--encoders", help="With --ray: encoder actors [one per GPU, else per node]."
    ),
    gpus_per_worker: float = typer.Option(
        0.0, "--gpus-per-worker", help="With --ray: GPUs each encoder actor holds [0]."
    ),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    wait: bool = WaitOption,
) -> None:
    """Add images to the index; a re-run embeds only new or changed files."""
    try:
        settings = config.resolve(
            db=db,
            cache_dir=cache_dir,
            model=model,
            device=device,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
        )
        missing = [str(p) for p in paths if not p.expanduser().exists()]
        if missing:  # before anything is created
            raise IndexNotFoundError(f"no such file or folder: {', '.join(missing)}")
        with (
            _new_index_undone_on_failure(settings.db),
            _open(settings, create=True, progress=not quiet, wait=wait) as idx,
        ):
            if vector_dtype is not None:
                idx.store_vectors_as(vector_dtype)
            runner = None
            if ray is not None:
                from clipsearch.cluster import ClusterOptions, RayRunner

                cluster = ClusterOptions(ray, encoders, gpus_per_worker)
                runner = RayRunner(idx.options, cluster)
            summary = idx.add(paths, runner=runner)
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
        typer.echo(f"skipping {readable(skip.path)}: {skip.reason}", err=True)


@contextlib.contextmanager
def _new_index_undone_on_failure(db: str) -> Iterator[None]:
    """A first `index` run into a folder that fails before storing anything leaves no index
    behind (nor the folder, if it made it)."""
    from clipsearch.storage.db import DB_FILENAME
    from clipsearch.storage.location import locate

    directory = locate(db).folder
    if directory is None:
        yield  # a server database: its empty tables cost nothing and may be shared
        return
    folder_existed = directory.exists()
    if (directory / DB_FILENAME).exists():
        yield
        return
    try:
        yield
    except BaseException:
        _discard_if_empty(directory, folder_existed)
        raise


def _discard_if_empty(directory: Path, keep_folder: bool) -> None:
    """Remove the index a failed first run made, if it is still empty and nobody else is
    writing to it (another first run on the same folder may be)."""
    import sqlite3

    from clipsearch.errors import ClipsearchError
    from clipsearch.storage.db import DB_FILENAME
    from clipsearch.storage.lock import LOCK_FILENAME, WriterLock

    path = directory / DB_FILENAME
    try:
        lock = WriterLock(directory, wait=0)
        lock.acquire()
    except ClipsearchError:
        return  # busy: it is someone else's now
    try:
        try:  # read-only: a plain connect would create the file it is asked about
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                stored = sum(
                    int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                    for table in ("images", "texts")
                )
        except sqlite3.Error:
            if path.exists():
                return  # not ours to judge: leave it
            stored = 0
        if stored:
            return
        for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
            (directory / name).unlink(missing_ok=True)
    finally:
        lock.release()
    if not keep_folder:
        (directory / LOCK_FILENAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else lives there
            directory.rmdir()


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
    ensemble: list[Path] = typer.Option(
        [], "--ensemble", help="Another index of the same photos (another model) to fuse with."
    ),
    ensemble_weight: float = typer.Option(
        1.0, "--ensemble-weight", help="Weight of each --ensemble index against this one's 1.0."
    ),
    fusion: str = typer.Option("score", "--fusion", help="Ensemble fusion: score or rrf."),
    explain: bool = typer.Option(
        False, "--explain", help="Show each hit's rank at every stage of the pipeline."
    ),
    k: int = typer.Option(10, "-k", "--top", help="How many hits."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Find the images (or with --texts the texts) nearest to words and/or example images."""
    from clipsearch.search.filters import Filter
    from clipsearch.search.query import Query
    from clipsearch.search.rerank import MMR, CollapseNearDuplicates, Reranker

    if query is None and image is None and not like:
        typer.echo("error: give a text query, --image PATH or --like PATH", err=True)
        raise typer.Exit(code=2)
    image_only = {
        "--folder": folder, "--glob": glob, "--after": after, "--before": before,
        "--min-width": min_width, "--min-height": min_height, "--orientation": orientation,
        "--type": file_type, "--tag": tag, "--diverse": diverse, "--collapse": collapse,
        "--ensemble": ensemble, "--explain": explain,
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
        fused = Query.of(
            text=query, image=image, image_weight=weight, like=like, unlike=unlike,
            not_text=not_text, negative_weight=not_weight,
        )  # fmt: skip
        filters = Filter(
            folder=str(folder) if folder else None, path_glob=glob, taken_after=after,
            taken_before=before, min_width=min_width, min_height=min_height,
            orientation=orientation,  # type: ignore[arg-type]  # checked by Filter
            formats=tuple(file_type), tags=tuple(tag),
        )  # fmt: skip
        rerankers: list[Reranker] = []
        if collapse is not None:
            rerankers.append(CollapseNearDuplicates(collapse))
        if diverse is not None:
            rerankers.append(MMR(diverse))
        settings = config.resolve(db=db, model=model, device=device, cache_dir=cache_dir)
        with _open(settings, create=False) as idx:
            if texts:
                _print_text_hits(idx.search_texts(query=fused, k=k, kind=kind), as_json)
                return
            if ensemble:
                hits = _ensemble_search(
                    idx, ensemble, ensemble_weight, fusion, fused, k, filters, explain
                )
            else:
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
        typer.echo(f"{rank:>4}  {hit.score:>7.4f}  {hit.id:>7}  {readable(hit.path)}")
        if hit.explain:
            stages = ", ".join(f"{name} {value:g}" for name, value in hit.explain.items())
            typer.echo(f"{'':>23}{stages}")


def _ensemble_search(
    idx: Index,
    others: list[Path],
    weight: float,
    fusion: str,
    query: Query,
    k: int,
    filters: Filter,
    explain: bool,
) -> list[Hit]:
    from clipsearch.search.ensemble import Ensemble, Member

    with contextlib.ExitStack() as stack:
        members = [Member(idx)]
        for directory in others:
            other = stack.enter_context(_open(config.resolve(db=directory), create=False))
            members.append(Member(other, weight))
        ensemble = Ensemble(members, fusion)  # type: ignore[arg-type]  # checked by Ensemble
        return ensemble.search(query, k, filters, explain)


@app.command()
def reindex(
    index_type: str | None = typer.Option(
        None, "--index-type", help="auto (by size), flat (exact) or ivf-sq8 [keep the current]."
    ),
    nprobe: int | None = typer.Option(
        None, "--nprobe", help="ivf-sq8: lists scanned per query [nlist/64, at least 32]."
    ),
    vector_dtype: str | None = typer.Option(
        None, "--vector-dtype", help="Convert the stored vectors to float32 or float16."
    ),
    db: str | None = DbOption,
    as_json: bool = JsonOption,
    wait: bool = WaitOption,
) -> None:
    """Rebuild the FAISS index from the stored vectors (no photo is read), as another type."""
    started = time.perf_counter()

    def rebuild(idx: Index) -> Any:
        if vector_dtype is not None:
            idx.store_vectors_as(vector_dtype)
        return idx.reindex(index_type, nprobe)

    built = _with_index(rebuild, db=db, create=False, wait=wait)
    facts = {"index_type": built.kind, "vectors": built.ntotal,
             "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
    if as_json:
        _print_json(facts)
    else:
        typer.echo(f"rebuilt {facts['index_type']} with {facts['vectors']} vectors "
                   f"in {facts['seconds']} s")  # fmt: skip


@app.command()
def stats(
    db: str | None = DbOption, cache_dir: Path | None = CacheDirOption, as_json: bool = JsonOption
) -> None:
    """Show what the index holds: count, model, dimension, index type, size on disk."""
    facts = _with_index(lambda idx: idx.stats(), db=db, create=False, cache_dir=cache_dir)
    if as_json:
        _print_json(facts.to_dict())
        return
    for key, value in facts.to_dict().items():
        typer.echo(f"{key:>18}: {value}")
