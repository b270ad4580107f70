"""`Index`-level adapter operations: fit one on a pairs file (`tune`), or a PCA reduction.

Both read the stored raw vectors (no image is decoded), store the adapter with its metrics,
and make it active unless told not to; a failed or refused fit changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.adapters.model import Adapter
from clipsearch.adapters.pca import fit_pca
from clipsearch.adapters.table import AdapterTable
from clipsearch.errors import AdapterError
from clipsearch.indexer.text_sources import read_captions

if TYPE_CHECKING:
    from clipsearch.adapters.fit import FitReport, FitSettings
    from clipsearch.models.base import Encoder, ModelInfo
    from clipsearch.storage.db import Database
    from clipsearch.storage.vectors import VectorTable


class AdapterHost(Protocol):
    """What fitting an adapter needs of the index it is for (an `Index`): its stored
    vectors, its model (to embed the captions), and its adapter table."""

    db: Database

    @property
    def encoder(self) -> Encoder: ...

    @property
    def adapters(self) -> AdapterTable: ...

    def stored_image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]: ...

    def text_table(self) -> VectorTable: ...

    def record_model(self) -> ModelInfo: ...

    def use_adapter(self, adapter_id: int | None) -> None: ...


_SHOWN = 5


@dataclass
class TuneResult:
    adapter: Adapter  # as stored (with its id) when saved
    report: FitReport
    saved: bool
    active: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter.label if self.saved else None,
            "saved": self.saved,
            "active": self.active,
            **asdict(self.report),
        }


def _listing(paths: list[str]) -> str:
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(paths[:_SHOWN]) + more


def read_pairs(
    index: AdapterHost, pairs_csv: Path, images: Path | None = None
) -> tuple[list[int], list[str], list[int]]:
    """(image ids, captions, each caption's position in the image ids) from an
    `image,caption` CSV (image paths relative to `images`, default the CSV's folder) whose
    images must all be indexed; otherwise one error listing the missing files and the files
    not in the index."""
    rows = read_captions(pairs_csv)
    base = images if images is not None else pairs_csv.parent
    paths = [os.path.abspath(base / image) for image, _ in rows]
    unique = list(dict.fromkeys(paths))
    ids = index.db.ids_for_paths(unique)
    missing = [p for p in unique if not os.path.exists(p)]
    unindexed = [p for p in unique if p not in ids and os.path.exists(p)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} image(s) do not exist: {_listing(missing)}")
    if unindexed:
        problems.append(
            f"{len(unindexed)} image(s) are not in the index (run `clipsearch index` on them "
            f"first): {_listing(unindexed)}"
        )
    if problems:
        raise AdapterError(f"{pairs_csv}: " + "; ".join(problems) + "; nothing was changed")
    position = {p: i for i, p in enumerate(unique)}
    return [ids[p] for p in unique], [c for _, c in rows], [position[p] for p in paths]


def tune(
    index: AdapterHost,
    pairs_csv: str | os.PathLike[str],
    settings: FitSettings | None = None,
    *,
    images: str | os.PathLike[str] | None = None,
    force: bool = False,
    activate: bool = True,
) -> TuneResult:
    """Fit `z = W x + b` per modality on the pairs (see `adapters.fit`), report validation
    Recall@1/5/10 before and after, and store it unless it made validation worse."""
    from clipsearch.adapters.fit import fit_adapter

    base = Path(images) if images is not None else None
    image_ids, captions, image_of = read_pairs(index, Path(pairs_csv), base)
    image_vectors = index.stored_image_vectors(image_ids)
    text_vectors = np.asarray(index.encoder.encode_texts(captions), dtype=np.float32)
    adapter, report = fit_adapter(image_vectors, text_vectors, image_of, settings)
    if not report.improved and not force:
        return TuneResult(adapter, report, saved=False, active=False)
    info = index.record_model()
    stored = index.adapters.add(
        Adapter(adapter.w_img, adapter.b_img, adapter.w_txt, adapter.b_txt,
                kind=adapter.kind, metrics=report.to_dict()),
        info.identity, pairs=len(captions),
    )  # fmt: skip
    if activate:
        index.use_adapter(stored.id)
    return TuneResult(stored, report, saved=True, active=activate)


def reduce(
    index: AdapterHost, dims: int, *, whiten: bool = False, activate: bool = True
) -> Adapter:
    """A PCA adapter to `dims` dimensions over the index's stored image and text vectors."""
    info = index.record_model()
    images = np.concatenate(
        [v for _, v in index.db.iter_vectors()] or [np.zeros((0, info.dim), dtype=np.float32)]
    )
    texts = np.concatenate(
        [v for _, v in index.text_table().iter_vectors()]
        or [np.zeros((0, info.dim), dtype=np.float32)]
    )
    adapter = fit_pca(images.astype(np.float32), texts.astype(np.float32), dims, whiten=whiten)
    stored = index.adapters.add(adapter, info.identity, pairs=0)
    if activate:
        index.use_adapter(stored.id)
    return stored
