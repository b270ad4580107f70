"""Adapters in the database: each fitted adapter with its settings and metrics, and which one
is active (meta `active_adapter`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clipsearch.adapters.model import Adapter, adapter_label
from clipsearch.errors import AdapterError
from clipsearch.storage.adapters import ACTIVE, AdapterRows, StoredAdapter
from clipsearch.storage.db import Database

__all__ = ["ACTIVE", "AdapterInfo", "AdapterTable"]


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter as `adapters list` shows it."""

    id: int
    kind: str
    label: str
    in_dim: int
    out_dim: int
    pairs: int
    created_at: float
    active: bool
    metrics: dict[str, Any]


class AdapterTable:
    """The fitted adapters of an index, as `Adapter`s (their rows: `storage.adapters`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.rows = AdapterRows(db)

    def add(self, adapter: Adapter, model_identity: str, pairs: int = 0) -> Adapter:
        """Store an adapter; returns it with its new id (not yet active)."""
        new_id = self.rows.add(
            adapter.kind, model_identity, adapter.in_dim, adapter.out_dim, pairs,
            json.dumps(adapter.metrics), adapter.to_bytes(),
        )  # fmt: skip
        return Adapter(
            adapter.w_img, adapter.b_img, adapter.w_txt, adapter.b_txt,
            kind=adapter.kind, id=new_id, metrics=adapter.metrics,
        )  # fmt: skip

    def _row(self, adapter_id: int) -> StoredAdapter:
        row = self.rows.get(adapter_id)
        if row is None:
            raise AdapterError(
                f"no adapter {adapter_id} in this index; `clipsearch adapters list` shows them"
            )
        return row

    def get(self, adapter_id: int) -> Adapter:
        row = self._row(adapter_id)
        return Adapter.from_bytes(row.params, row.kind, row.id, row.metrics_json)

    def model_identity(self, adapter_id: int) -> str:
        row = self.rows.get(adapter_id)
        return row.model_identity if row is not None else ""

    def active_id(self) -> int | None:
        return self.rows.active_id()

    def set_active(self, adapter_id: int | None) -> None:
        """Make an adapter the one applied (None: none), checking it exists."""
        if adapter_id is not None:
            self._row(adapter_id)
        self.rows.set_active(adapter_id)

    def infos(self) -> list[AdapterInfo]:
        active = self.active_id()
        return [self._info(r, r.id == active) for r in self.rows.all()]

    @staticmethod
    def _info(row: StoredAdapter, active: bool) -> AdapterInfo:
        label = adapter_label(row.id, row.kind, row.out_dim)  # no need to decode the params
        metrics = json.loads(row.metrics_json)
        return AdapterInfo(
            row.id, row.kind, label, row.in_dim, row.out_dim, row.pairs, row.created_at,
            active, metrics,
        )  # fmt: skip

    def remove(self, adapter_id: int) -> None:
        """Delete an adapter; removing the active one makes the index unadapted again."""
        self._row(adapter_id)
        if self.active_id() == adapter_id:
            self.set_active(None)
        self.rows.remove(adapter_id)
