"""The adapters' table: each fitted adapter's parameters (as bytes) and facts, and which one
is active (meta `active_adapter`). `adapters.table.AdapterTable` turns rows into `Adapter`s."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clipsearch.storage.db import Database, put_meta
from clipsearch.storage.schema import AdapterRow, Meta

ACTIVE = "active_adapter"


@dataclass(frozen=True)
class StoredAdapter:
    id: int
    kind: str
    model_identity: str
    in_dim: int
    out_dim: int
    pairs: int
    created_at: float
    metrics_json: str
    params: bytes


class AdapterRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self, kind: str, model_identity: str, in_dim: int, out_dim: int, pairs: int,
        metrics_json: str, params: bytes,
    ) -> int:  # fmt: skip
        """Store an adapter's row (not active); returns its id."""
        with Session(self.db.engine) as session, session.begin():
            row = AdapterRow(
                kind=kind, model_identity=model_identity, in_dim=in_dim, out_dim=out_dim,
                created_at=time.time(), pairs=pairs, metrics_json=metrics_json, params=params,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return int(row.id)

    def get(self, adapter_id: int) -> StoredAdapter | None:
        with Session(self.db.engine) as session:
            row = session.get(AdapterRow, adapter_id)
            return None if row is None else _stored(row)

    def all(self) -> list[StoredAdapter]:
        with Session(self.db.engine) as session:
            return [_stored(r) for r in session.scalars(select(AdapterRow).order_by(AdapterRow.id))]

    def active_id(self) -> int | None:
        value = self.db.get_meta().get(ACTIVE)
        return int(value) if value else None

    def set_active(self, adapter_id: int | None) -> None:
        with Session(self.db.engine) as session, session.begin():
            if adapter_id is None:
                session.execute(delete(Meta).where(Meta.key == ACTIVE))
            else:
                put_meta(session, ACTIVE, str(adapter_id))

    def remove(self, adapter_id: int) -> None:
        with Session(self.db.engine) as session, session.begin():
            session.execute(delete(AdapterRow).where(AdapterRow.id == adapter_id))


def _stored(row: AdapterRow) -> StoredAdapter:
    return StoredAdapter(
        row.id, row.kind, row.model_identity, row.in_dim, row.out_dim, row.pairs,
        row.created_at, row.metrics_json, row.params,
    )  # fmt: skip
