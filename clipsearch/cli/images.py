"""Commands on images: index, reindex, stats."""

from __future__ import annotations

import time
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
    PrecisionOption,
    QuietOption,
    RuntimeOption,
    WaitOption,
    _fail,
    _open,
    _print_json,
    _with_index,
    app,
)
from clipsearch.errors import ClipsearchError, IndexNotFoundError
from clipsearch.names import readable

if TYPE_CHECKING:
    from clipsearch.index import Index


@app.command()
def index(
    paths: list[Path] = typer.Argument(
        ..., help="Image and video files or folders (walked recursively)."
    ),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    runtime: str | None = RuntimeOption,
    precision: str | None = PrecisionOption,
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per model call [32]."),
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding processes [cores, max 4]."
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        help="Skip images larger than this (decompression-bomb guard) [150e6].",
    ),
    max_frames_per_video: int | None = typer.Option(
        None,
        "--max-frames-per-video",
        help="Keyframes kept per video at most (chosen to cover it) [64].",
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
    ocr: bool = typer.Option(
        False, "--ocr", help="Also read text in the photos (Tesseract), for keyword search."
    ),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    wait: bool = WaitOption,
) -> None:
    """Add images and videos to the index; a re-run embeds only new or changed files."""
    try:
        settings = config.resolve(
            db=db,
            cache_dir=cache_dir,
            model=model,
            device=device,
            runtime=runtime,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            max_pixels=max_pixels,
            max_frames_per_video=max_frames_per_video,
        )
        from clipsearch.storage.first_run import undone_on_failure

        missing = [str(p) for p in paths if not p.expanduser().exists()]
        if missing:  # before anything is created
            raise IndexNotFoundError(f"no such file or folder: {', '.join(missing)}")
        with (
            undone_on_failure(settings.db),
            _open(settings, create=True, progress=not quiet, wait=wait) as idx,
        ):
            if vector_dtype is not None:
                idx.store_vectors_as(vector_dtype)
            runner = None
            if ray is not None:
                from clipsearch.cluster import ClusterOptions, RayRunner

                cluster = ClusterOptions(ray, encoders, gpus_per_worker)
                runner = RayRunner(idx.options, cluster)
            summary = idx.add(paths, runner=runner, ocr=ocr)
    except ClipsearchError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json(summary.to_dict())
        return
    typer.echo(
        f"added {summary.added}, updated {summary.updated}, moved {summary.moved}, "
        f"removed {summary.removed}, unchanged {summary.unchanged}, skipped {len(summary.skipped)}"
    )
    if summary.text_in_photos is not None:
        read = summary.text_in_photos
        typer.echo(
            f"text: {read['read']} photos read, {read['with_text']} with words, "
            f"{read['prechecked_out']} passed over (no text seen), in {read['seconds']} s"
        )
        for failed in read["failed"]:
            typer.echo(f"not read {readable(failed['path'])}: {failed['reason']}", err=True)
    for skip in summary.skipped:
        typer.echo(f"skipping {readable(skip.path)}: {skip.reason}", err=True)


@app.command()
def reindex(
    index_type: str | None = typer.Option(
        None, "--index-type", help="auto (by size), flat (exact) or ivf-sq8 [keep the current]."
    ),
    nprobe: int | None = typer.Option(
        None, "--nprobe", help="ivf-sq8: lists scanned per query [nlist/64, at least 32]."
    ),
    max_frames_per_video: int | None = typer.Option(
        None,
        "--max-frames-per-video",
        help="Keyframes kept per video at most (chosen to cover it) [64].",
    ),
    vector_dtype: str | None = typer.Option(
        None, "--vector-dtype", help="Convert the stored vectors to float32 or float16."
    ),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    as_json: bool = JsonOption,
    wait: bool = WaitOption,
) -> None:
    """Rebuild the FAISS index from the stored vectors (no photo is read), as another type."""
    started = time.perf_counter()

    def rebuild(idx: Index) -> Any:
        if vector_dtype is not None:
            idx.store_vectors_as(vector_dtype)
        return idx.reindex(index_type, nprobe)

    built = _with_index(rebuild, db=db, cache_dir=cache_dir, create=False, wait=wait)
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
