"""The SQLite schema (SQLAlchemy 2.0 declarative) and its numbered migrations.

SQLite is the source of truth: every image row carries its embedding, so the FAISS index can
always be rebuilt from here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Float, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the index: schema version, model, dimension, generation."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImageRow(Base):
    __tablename__ = "images"
    # AUTOINCREMENT: ids are never reused, so an id handed to a client stays that image's.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's protocol

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[str | None] = mapped_column(String(19))  # ISO 8601, from EXIF
    indexed_at: Mapped[float] = mapped_column(Float)  # unix time
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, dim values


def _v1(conn: Connection) -> None:
    Base.metadata.create_all(conn)


#: MIGRATIONS[n] brings a database from version n to n + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
assert len(MIGRATIONS) == SCHEMA_VERSION


def read_version(conn: Connection) -> int:
    has_meta = conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'")
    ).first()
    if not has_meta:
        return 0
    row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
    return int(row[0]) if row else 0
