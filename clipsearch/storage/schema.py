"""The schema (SQLAlchemy 2.0 declarative) and its numbered migrations, for SQLite and
PostgreSQL alike.

The database is the source of truth: every image and text row carries its embedding, so the
FAISS indexes can always be rebuilt from here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Connection,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    inspect,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 6

#: A 64-bit integer (file sizes, nanosecond times, ids at scale). SQLite's INTEGER already is
#: one, and its ids must be declared exactly INTEGER to be row ids, so there it stays that.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


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

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInt)
    mtime_ns: Mapped[int] = mapped_column(BigInt)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[str | None] = mapped_column(String(19))  # ISO 8601, from EXIF
    camera: Mapped[str | None] = mapped_column(Text)  # EXIF make and model
    ocr: Mapped[str | None] = mapped_column(Text)  # text read in the photo ('' none; NULL unread)
    embedded: Mapped[str | None] = mapped_column(Text)  # IPTC/XMP titles, captions, keywords
    duration: Mapped[float | None] = mapped_column(Float)  # seconds, for a video (NULL: a photo)
    indexed_at: Mapped[float] = mapped_column(Float)  # unix time
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, dim values


class FrameRow(Base):
    """A keyframe of a video: its time and its vector (the video's own row in `images`
    holds the mean of its keyframes' vectors)."""

    __tablename__ = "frames"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's protocol

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        BigInt, ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    time: Mapped[float] = mapped_column(Float)  # seconds from the start of the video
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # like images.vector


class TextSource(Base):
    """A file texts were read from (captions CSV, JSONL, vocabulary, sidecar), so that a
    re-add of an unchanged file costs nothing and a changed one replaces its texts."""

    __tablename__ = "text_sources"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's protocol

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # captions | jsonl | vocabulary | sidecar
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInt)
    mtime_ns: Mapped[int] = mapped_column(BigInt)
    added_at: Mapped[float] = mapped_column(Float)


class TextRow(Base):
    __tablename__ = "texts"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's protocol

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    source_id: Mapped[int] = mapped_column(
        BigInt, ForeignKey("text_sources.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str | None] = mapped_column(Text)  # the JSONL id, or the term of a vocabulary
    text: Mapped[str] = mapped_column(Text)
    image_path: Mapped[str | None] = mapped_column(Text, index=True)  # the image it describes
    metadata_json: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, like images.vector


class ImageTag(Base):
    """A tag on an image: from zero-shot tagging (score = cosine) or an XMP keyword (1.0)."""

    __tablename__ = "image_tags"

    image_id: Mapped[int] = mapped_column(
        BigInt, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(Text, primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)
    origin: Mapped[str] = mapped_column(String(16))  # ZERO_SHOT | XMP


ZERO_SHOT = "zero-shot"
XMP = "xmp"
#: The meta key of the folders and files an index was built from (a JSON list).
ROOTS_KEY = "roots"


class AdapterRow(Base):
    """A fitted map z = W x + b per modality over the stored (raw) embeddings; the one named
    by meta `active_adapter` is applied to the index and to every query."""

    __tablename__ = "adapters"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy's protocol

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # contrastive | pca | identity
    model_identity: Mapped[str] = mapped_column(Text)  # the raw space it maps from
    in_dim: Mapped[int] = mapped_column(Integer)
    out_dim: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    pairs: Mapped[int] = mapped_column(Integer)  # image-caption pairs it was fitted on
    metrics_json: Mapped[str] = mapped_column(Text)  # settings, split sizes, before/after recall
    params: Mapped[bytes] = mapped_column(LargeBinary)  # .npz: w_img, b_img, w_txt, b_txt


class CachedQuery(Base):
    """A text query's raw embedding, so that repeating a search needs no model at all."""

    __tablename__ = "query_cache"

    identity: Mapped[str] = mapped_column(Text, primary_key=True)  # the model's
    text: Mapped[str] = mapped_column(Text, primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    used_at: Mapped[float] = mapped_column(Float, index=True)


def _create(conn: Connection, *names: str) -> None:
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[n] for n in names])


def _v1(conn: Connection) -> None:
    _create(conn, "meta", "images")


def _v2(conn: Connection) -> None:
    """Texts as a searchable modality, and tags on images."""
    _create(conn, "text_sources", "texts", "image_tags")


def _v3(conn: Connection) -> None:
    """Projection adapters over the stored embeddings."""
    _create(conn, "adapters")


def _v4(conn: Connection) -> None:
    """A cache of text-query embeddings."""
    _create(conn, "query_cache")


def _v5(conn: Connection) -> None:
    """Words for the keyword index: the camera (EXIF make and model), titles and keywords
    embedded in the file (IPTC, XMP) and text read in the photo (OCR). Images indexed before
    keep NULL until their file changes (or `--ocr` runs)."""
    columns = {c["name"] for c in inspect(conn).get_columns("images")}
    for name in ("camera", "ocr", "embedded"):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE images ADD COLUMN {name} TEXT"))


def _v6(conn: Connection) -> None:
    """Videos: an item with a duration, and its keyframes with their times and vectors."""
    columns = {c["name"] for c in inspect(conn).get_columns("images")}
    if "duration" not in columns:
        conn.execute(text("ALTER TABLE images ADD COLUMN duration FLOAT"))
    _create(conn, "frames")


#: MIGRATIONS[n] brings a database from version n to n + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]
assert len(MIGRATIONS) == SCHEMA_VERSION


def read_version(conn: Connection) -> int:
    if not inspect(conn).has_table("meta"):
        return 0
    row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
    return int(row[0]) if row else 0
