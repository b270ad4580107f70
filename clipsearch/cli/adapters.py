"""Commands on adapters: fit one (`tune`), list, switch, remove, and PCA reduction."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from clipsearch.cli.common import (
    CacheDirOption,
    DbOption,
    DeviceOption,
    JsonOption,
    ModelOption,
    WaitOption,
    _print_json,
    _with_index,
    app,
)
from clipsearch.cli.plain_help import WholeSummaries


def _recall_table(before: dict[str, float], after: dict[str, float]) -> str:
    lines = [f"{'validation':<22}{'before':>8}{'after':>8}"]
    for key in before:
        lines.append(f"{key:<22}{100 * before[key]:>7.1f}%{100 * after[key]:>7.1f}%")
    return "\n".join(lines)


@app.command()
def tune(
    pairs: Path = typer.Argument(..., help="CSV with an image,caption header (indexed images)."),
    images: Path | None = typer.Option(
        None, "--images", help="Folder the CSV's image paths are relative to [the CSV's]."
    ),
    validate_fraction: float = typer.Option(
        0.2, "--validate-fraction", help="Share of the photos held out for early stopping."
    ),
    rank: int | None = typer.Option(
        None, "--rank", help="Low-rank update W = I + U Vᵀ of this rank [full matrices]."
    ),
    epochs: int = typer.Option(200, "--epochs", help="At most this many passes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the training."),
    force: bool = typer.Option(False, "--force", help="Keep the adapter even if it is worse."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
    wait: bool = WaitOption,
) -> None:
    """Fit a projection adapter (z = W x + b per modality) on your captioned photos."""
    from clipsearch.errors import ClipsearchError
    from clipsearch.models.runtime.load import require_torch

    try:
        require_torch("fitting an adapter (clipsearch tune)")
        from clipsearch.adapters.fit import FitSettings

        settings = FitSettings(
            validate_fraction=validate_fraction, rank=rank, max_epochs=epochs, seed=seed
        )
    except ClipsearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    result = _with_index(
        lambda idx: idx.tune(pairs, settings, images=images, force=force),
        db=db, cache_dir=cache_dir, create=False, model=model, device=device, wait=wait,
    )  # fmt: skip
    if as_json:
        _print_json(result.to_dict())
    else:
        r = result.report
        typer.echo(
            f"fitted on {r.fit_images} photos / {r.fit_captions} captions, validated on "
            f"{r.validation_images} / {r.validation_captions}; best epoch {r.best_epoch} of "
            f"{r.epochs}, {r.seconds:.1f} s"
        )
        typer.echo(_recall_table(r.before, r.after))
        if result.saved:
            typer.echo(f"saved adapter {result.adapter.label}; active: {result.active}")
    if not result.saved:
        typer.echo(
            "error: the adapter did not improve validation recall, so it was not saved "
            "(--force keeps it anyway)",
            err=True,
        )
        raise typer.Exit(code=1)


adapters_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich reads "[default: ...]" in help texts as markup
    cls=WholeSummaries,
    help="Projection adapters of an index: list, use, remove, PCA reduction.",
    no_args_is_help=True,
)
app.add_typer(adapters_app, name="adapters")


@adapters_app.command("list")
def adapters_list(
    db: str | None = DbOption, cache_dir: Path | None = CacheDirOption, as_json: bool = JsonOption
) -> None:
    """Every adapter of the index, with its metrics; * marks the active one."""
    infos = _with_index(lambda idx: idx.adapters.infos(), db=db, cache_dir=cache_dir, create=False)
    if as_json:
        _print_json([i.__dict__ for i in infos])
        return
    if not infos:
        typer.echo("no adapters (fit one with `clipsearch tune PAIRS.csv`)", err=True)
    for i in infos:
        when = datetime.fromtimestamp(i.created_at).strftime("%Y-%m-%d %H:%M")
        summary = _summary(i.metrics)
        mark = "*" if i.active else " "
        typer.echo(f"{mark} {i.label:<16} {i.in_dim}→{i.out_dim}  {when}  {summary}")


def _summary(metrics: dict[str, Any]) -> str:
    after = metrics.get("after")
    if after:
        return (
            f"validation t→i R@10 {100 * after['text_to_image_R@10']:.1f}%, "
            f"i→t R@10 {100 * after['image_to_text_R@10']:.1f}%"
        )
    if "explained_variance" in metrics:
        return f"explained variance {100 * metrics['explained_variance']:.1f}%"
    return ""


@adapters_app.command("use")
def adapters_use(
    adapter: str = typer.Argument(..., help="An adapter id, or 'none' for the raw space."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    wait: bool = WaitOption,
) -> None:
    """Make an adapter the one applied to every search (the FAISS index is rebuilt)."""
    adapter_id = None if adapter.lower() == "none" else _parse_id(adapter)
    _with_index(
        lambda idx: idx.use_adapter(adapter_id), db=db, cache_dir=cache_dir, create=False, wait=wait
    )
    typer.echo(f"active adapter: {adapter}")


@adapters_app.command("remove")
def adapters_remove(
    adapter: str = typer.Argument(..., help="An adapter id."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    wait: bool = WaitOption,
) -> None:
    """Delete an adapter (removing the active one returns the index to the raw space)."""

    adapter_id = _parse_id(adapter)
    _with_index(
        lambda idx: idx.remove_adapter(adapter_id),
        db=db,
        cache_dir=cache_dir,
        create=False,
        wait=wait,
    )
    typer.echo(f"removed adapter {adapter}")


@adapters_app.command("pca")
def adapters_pca(
    dims: int = typer.Option(..., "--dims", help="Dimensions to keep, e.g. 128."),
    whiten: bool = typer.Option(False, "--whiten", help="Scale each component to unit variance."),
    db: str | None = DbOption,
    cache_dir: Path | None = CacheDirOption,
    wait: bool = WaitOption,
) -> None:
    """Reduce the index to fewer dimensions with PCA (a rectangular adapter)."""
    adapter = _with_index(
        lambda idx: idx.reduce(dims, whiten=whiten),
        db=db,
        cache_dir=cache_dir,
        create=False,
        wait=wait,
    )
    typer.echo(f"saved and activated adapter {adapter.label} ({adapter.in_dim}→{adapter.out_dim})")


def _parse_id(text: str) -> int:
    try:
        return int(text.split(":", 1)[0])
    except ValueError:
        typer.echo(
            f"error: {text!r} is not an adapter id (see `clipsearch adapters list`)", err=True
        )
        raise typer.Exit(code=2) from None
