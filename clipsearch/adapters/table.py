"""Adapters in the database: each fitted adapter with its settings and metrics, and which one
is active (meta `active_adapter`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clipsearch.adapters.model import Adapter, adapter_label
from clipsearch.errors import AdapterError
from clipsearch.storage.db import Database, put_meta
from clipsearch.storage.schema import AdapterRow, Meta

ACTIVE = "active_adapter"


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
    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine

    def add(self, adapter: Adapter, model_identity: str, pairs: int = 0) -> Adapter:
        """Store an adapter; returns it with its new id (not yet active)."""
        with Session(self.engine) as session, session.begin():
            row = AdapterRow(
                kind=adapter.kind,
                model_identity=model_identity,
                in_dim=adapter.in_dim,
                out_dim=adapter.out_dim,
                created_at=time.time(),
                pairs=pairs,
                metrics_json=json.dumps(adapter.metrics),
                params=adapter.to_bytes(),
            )
            session.add(row)
            session.flush()
            new_id = row.id
        return Adapter(
            adapter.w_img, adapter.b_img, adapter.w_txt, adapter.b_txt,
            kind=adapter.kind, id=new_id, metrics=adapter.metrics,
        )  # fmt: skip

    def get(self, adapter_id: int) -> Adapter:
        with Session(self.engine) as session:
            row = session.get(AdapterRow, adapter_id)
            if row is None:
                raise AdapterError(
                    f"no adapter {adapter_id} in this index; `clipsearch adapters list` shows them"
                )
            return Adapter.from_bytes(row.params, row.kind, row.id, row.metrics_json)

    def model_identity(self, adapter_id: int) -> str:
        with Session(self.engine) as session:
            row = session.get(AdapterRow, adapter_id)
            return row.model_identity if row is not None else ""

    def active_id(self) -> int | None:
        value = self.db.get_meta().get(ACTIVE)
        return int(value) if value else None

    def set_active(self, adapter_id: int | None) -> None:
        """Make an adapter the one applied (None: none), checking it exists."""
        if adapter_id is not None:
            self.get(adapter_id)
        with Session(self.engine) as session, session.begin():
            if adapter_id is None:
                session.execute(delete(Meta).where(Meta.key == ACTIVE))
            else:
                put_meta(session, ACTIVE, str(adapter_id))

    def infos(self) -> list[AdapterInfo]:
        active = self.active_id()
        with Session(self.engine) as session:
            rows = session.scalars(select(AdapterRow).order_by(AdapterRow.id)).all()
            return [self._info(r, r.id == active) for r in rows]

    @staticmethod
    def _info(row: AdapterRow, active: bool) -> AdapterInfo:
        label = adapter_label(row.id, row.kind, row.out_dim)  # no need to decode the params
        metrics = json.loads(row.metrics_json)
        return AdapterInfo(
            row.id, row.kind, label, row.in_dim, row.out_dim, row.pairs, row.created_at,
            active, metrics,
        )  # fmt: skip

    def remove(self, adapter_id: int) -> None:
        """Delete an adapter; removing the active one makes the index unadapted again."""
        self.get(adapter_id)
        if self.active_id() == adapter_id:
            self.set_active(None)
        with Session(self.engine) as session, session.begin():
            session.execute(delete(AdapterRow).where(AdapterRow.id == adapter_id))
