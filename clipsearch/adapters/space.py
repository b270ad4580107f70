"""The space an index is searched in: the model's raw embedding space, or the image of it
under the active adapter. Everything that compares vectors goes through one of these."""

from __future__ import annotations

from typing import Any

import numpy as np

from clipsearch.adapters.applied import AdaptedStore
from clipsearch.adapters.model import Adapter
from clipsearch.adapters.table import ACTIVE, AdapterTable
from clipsearch.arrays import Matrix
from clipsearch.facts import recorded_info
from clipsearch.models.base import ModelInfo
from clipsearch.storage.db import Database
from clipsearch.storage.vectors import VectorTable


class SearchSpace:
    def __init__(self, info: ModelInfo, adapter: Adapter | None = None) -> None:
        self.info = info
        self.adapter = adapter

    @property
    def identity(self) -> str:
        """What FAISS caches are stamped with: a new adapter makes them stale."""
        if self.adapter is None:
            return self.info.identity
        return f"{self.info.identity}+adapter:{self.adapter.label}"

    @property
    def dim(self) -> int:
        return self.adapter.out_dim if self.adapter is not None else self.info.dim

    @property
    def adapter_label(self) -> str | None:
        return self.adapter.label if self.adapter is not None else None

    def images(self, raw: np.ndarray[Any, Any]) -> Matrix:
        """Raw image embeddings (N, model dim) -> vectors in this space."""
        raw = np.asarray(raw, dtype=np.float32)
        return self.adapter.images(raw) if self.adapter is not None else raw

    def texts(self, raw: np.ndarray[Any, Any]) -> Matrix:
        raw = np.asarray(raw, dtype=np.float32)
        return self.adapter.texts(raw) if self.adapter is not None else raw

    def image_store(self, stored: VectorTable) -> VectorTable:
        return stored if self.adapter is None else AdaptedStore(stored, self.images)

    def text_store(self, stored: VectorTable) -> VectorTable:
        return stored if self.adapter is None else AdaptedStore(stored, self.texts)


def stored_space(db: Database, meta: dict[str, str] | None = None) -> SearchSpace | None:
    """The space an index's database says searches run in now: its model's, through the
    active adapter if one is set (None: no model recorded yet). `meta`: the meta table, if
    the caller has just read it."""
    meta = meta if meta is not None else db.get_meta()
    info = recorded_info(meta)
    if info is None:
        return None
    active = meta.get(ACTIVE)
    return SearchSpace(info, AdapterTable(db).get(int(active)) if active else None)
