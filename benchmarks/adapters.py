"""Adapters: what `clipsearch tune` buys on photos and captions it never saw, what it costs,
and what PCA reduction costs in recall.

For each base model, one index holds the Flickr8k fit split (600 photos; `clipsearch tune`
fits there on its 2,967 captions, with its own 20% validation part for early stopping) and
another the validation split (200 photos, 1,000 captions, never used for fitting); the fitted
adapter is copied into the second and `clipsearch eval captions` runs there with and without.

Base models: the shipped clipsearch-mini, whose image tower was itself trained on the fit
split's photos in its last epochs, and a CIFAR-only checkpoint of the same recipe that never
saw a Flickr photo (the situation the adapter is for: a model meeting a new domain):

    .venv/bin/python benchmarks/train_reference_model.py --epochs 8 --flickr-epochs 0 \\
        --out ~/.cache/clipsearch-data/clipsearch-mini-cifar.pt
    .venv/bin/python benchmarks/adapters.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clipsearch
from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from clipsearch.adapters.fit import FitSettings
from clipsearch.adapters.model import Adapter
from clipsearch.evaluation import evaluate_captions
from clipsearch.index import Index

CIFAR_ONLY = datasets.cache_dir() / "clipsearch-mini-cifar.pt"
PCA_DIMS = (256, 128, 64, 32)


def copy_adapter(adapter: Adapter, source: Index, target: Index) -> None:
    """Make `target` (the same model, other photos) use an adapter fitted in `source`."""
    assert source.model_info == target.model_info, "adapters only move between one model's indexes"
    info = target.record_model()
    target.use_adapter(target.adapters.add(adapter, info.identity).id)


def recall_row(report: dict[str, Any]) -> list[str]:
    t, i = report["text_to_image"], report["image_to_text"]
    return [f"{100 * t[f'R@{k}']:.1f}" for k in (1, 5, 10)] + [
        f"{100 * i[f'R@{k}']:.1f}" for k in (1, 5, 10)
    ]


@dataclass
class Split:
    """The fit and validation photos of Flickr8k-dev, each in an index of one model."""

    fit: Index
    val: Index
    fit_images: Path
    fit_csv: Path
    val_images: Path
    val_csv: Path

    def evaluate(self) -> dict[str, Any]:
        return evaluate_captions(self.val, self.val_images, self.val_csv).to_dict()


@contextlib.contextmanager
def flickr_split(model: str, root: Path) -> Iterator[Split]:
    fit, val = datasets.flickr_split()
    fit_images, fit_csv = datasets.flickr_eval_folder(fit, root / "fit")
    val_images, val_csv = datasets.flickr_eval_folder(val, root / "val")
    with (
        clipsearch.open(root / "fit-db", model=model) as fit_idx,
        clipsearch.open(root / "val-db", model=model) as val_idx,
    ):
        fit_idx.add([fit_images])
        yield Split(fit_idx, val_idx, fit_images, fit_csv, val_images, val_csv)


def tune_rows(model: str, root: Path, settings: dict[str, FitSettings]) -> tuple[list, dict]:  # type: ignore[type-arg]
    rows, raw = [], {}
    with flickr_split(model, root) as split:
        fit_idx, val_idx = split.fit, split.val
        before = split.evaluate()
        rows.append(["none", "-", "-", "-", *recall_row(before)])
        raw["none"] = before
        for name, fit_settings in settings.items():
            started = time.perf_counter()
            result = fit_idx.tune(
                split.fit_csv, fit_settings, images=split.fit_images, force=True, activate=False
            )
            wall = time.perf_counter() - started
            copy_adapter(result.adapter, fit_idx, val_idx)
            after = split.evaluate()
            val_idx.use_adapter(None)
            r = result.report
            verdict = "saved" if r.improved else "refused without --force"
            rows.append(
                [name, f"{r.seconds:.1f} s fit / {wall:.1f} s in all",
                 f"{r.best_epoch} of {r.epochs}", verdict, *recall_row(after)]
            )  # fmt: skip
            raw[name] = {"report": result.report.to_dict(), "tune_wall_s": wall, "eval": after}
    return rows, raw


def pca_rows(model: str, root: Path) -> tuple[list, dict]:  # type: ignore[type-arg]
    rows, raw = [], {}
    with flickr_split(model, root) as split:
        fit_idx, val_idx = split.fit, split.val
        fit_idx.texts.add(split.fit_csv)  # PCA sees both modalities of the fit split
        full = split.evaluate()
        dim = val_idx.space().dim
        rows.append([f"none ({dim})", "1.00", f"{4 * dim} B", *recall_row(full)])
        raw["none"] = full
        for dims in PCA_DIMS:
            for whiten in (False, True):
                adapter = fit_idx.reduce(dims, whiten=whiten, activate=False)
                copy_adapter(adapter, fit_idx, val_idx)
                report = split.evaluate()
                val_idx.use_adapter(None)
                name = f"PCA {dims}" + (" whitened" if whiten else "")
                variance = adapter.metrics["explained_variance"]
                rows.append([name, f"{variance:.2f}", f"{4 * dims} B", *recall_row(report)])
                raw[name] = report
    return rows, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar-checkpoint", type=Path, default=CIFAR_ONLY)
    args = parser.parse_args()
    models = {"clipsearch-mini (shipped)": "clipsearch-mini"}
    if args.cifar_checkpoint.exists():
        models["clipsearch-mini, CIFAR-only"] = f"clipsearch-mini:{args.cifar_checkpoint}"
    else:
        print(f"no {args.cifar_checkpoint}: see the docstring to train it; skipping that model")
    settings = {
        "full W (default)": FitSettings(),
        "low rank 32": FitSettings(rank=32),
    }
    recall_headers = ["t→i R@1", "R@5", "R@10", "i→t R@1", "R@5", "R@10"]
    sections, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec in models.items():
            print(f"tuning on {label}", flush=True)
            rows, raw[label] = tune_rows(spec, Path(tmp) / label.replace(" ", "_"), settings)
            table = markdown_table(["adapter", "fit time", "best epoch", "own validation",
                                    *recall_headers], rows)  # fmt: skip
            sections.append(f"### {label}\n\n{table}")
        print("PCA", flush=True)
        pca, raw["pca"] = pca_rows("clipsearch-mini", Path(tmp) / "pca")
    pca_table = markdown_table(
        ["reduction", "explained variance", "FAISS bytes / vector", *recall_headers], pca
    )
    notes = (
        "Recall in % on the Flickr8k validation split (200 photos, 1,000 captions, pool = the "
        "200 photos / 1,000 captions), which no adapter was fitted on; adapters fitted by "
        "`clipsearch tune` on the fit split (600 photos, 2,967 captions; `--validate-fraction "
        "0.2` of its photos for early stopping, seed 0) and copied into the validation index. "
        "'own validation' is tune's verdict on its held-out fit photos (--force was used to "
        "measure refused ones too). Fit time: the fitting alone / the whole `tune` call "
        "(reading pairs, encoding the captions, fitting, storing). PCA is fitted on the fit "
        "split's 600 photo and 2,967 caption vectors of the shipped model; SQLite keeps the "
        "raw vectors, so only the FAISS index shrinks."
    )
    body = (
        "\n\n".join(sections)
        + f"\n\n### PCA reduction (shipped clipsearch-mini)\n\n{pca_table}\n\n{notes}"
    )
    path = write_result("adapters", "Adapters: tune and PCA", body)
    (RESULTS / "adapters.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
