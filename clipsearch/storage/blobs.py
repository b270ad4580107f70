"""Vectors as stored: little-endian float32 (or float16) blobs, one per row, read back into
float32 matrices. A damaged blob (truncated, overwritten, NULL) is left out of a read instead
of failing it; `clipsearch verify` names it and `clipsearch repair` quarantines it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from clipsearch.arrays import IdArray, Vector

#: How vectors may be stored: float32 (exact), or float16 (half the size; rescoring then
#: differs from float32 by about 1e-3 in cosine).
VECTOR_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def decode_vectors(blob: bytes, dtype: np.dtype[Any], rows: int = 1) -> Vector:
    """Stored bytes -> float32 matrix of `rows` rows."""
    return np.frombuffer(blob, dtype=dtype).astype(np.float32).reshape(rows, -1)


def decode_rows(blobs: Sequence[Any], dtype: np.dtype[Any]) -> tuple[Vector, list[bool]]:
    """Blobs of one table -> (matrix of the well-formed ones, which were well-formed). A blob
    is well-formed when it has the length most rows have; a damaged row (a truncated or
    overwritten blob, a NULL) is left out instead of failing the whole read; `verify` names
    it and `repair` quarantines it."""
    sizes = [len(b) if isinstance(b, bytes) else -1 for b in blobs]
    if len(set(sizes)) == 1 and sizes[0] > 0 and sizes[0] % dtype.itemsize == 0:
        return decode_vectors(b"".join(blobs), dtype, len(blobs)), [True] * len(blobs)
    valid = [n for n in sizes if n > 0 and n % dtype.itemsize == 0]
    width = max(set(valid), key=valid.count) if valid else -1
    ok = [n == width for n in sizes]
    good = [b for b, keep in zip(blobs, ok, strict=True) if keep]
    if not good:
        return np.zeros((0, 0), dtype=np.float32), ok
    return decode_vectors(b"".join(good), dtype, len(good)), ok


def vectors_for(
    engine: Engine,
    id_col: Any,
    label_col: Any,
    vector_col: Any,
    ids: Sequence[int],
    dtype: np.dtype[Any] = VECTOR_DTYPES["float32"],
) -> tuple[list[int], list[str], Vector]:
    """(ids, labels, float32 matrix) of the rows among `ids` that exist, from any table with a
    vector blob stored as `dtype`."""
    if not ids:
        return [], [], np.zeros((0, 0), dtype=np.float32)
    stmt = select(id_col, label_col, vector_col).where(id_col.in_(list(ids)))
    with engine.connect() as conn:  # Core, not an ORM session: this runs in every search
        rows = conn.execute(stmt).all()
    if not rows:
        return [], [], np.zeros((0, 0), dtype=np.float32)
    matrix, ok = decode_rows([r[2] for r in rows], dtype)
    kept = [r for r, keep in zip(rows, ok, strict=True) if keep]
    return [r[0] for r in kept], [r[1] for r in kept], matrix


def labels_for(
    engine: Engine,
    id_col: Any,
    label_col: Any,
    ids: Sequence[int],
    vector_col: Any = None,
    widths: Sequence[int] = (),
) -> tuple[list[int], list[str]]:
    """(ids, labels) of the rows among `ids` that exist, without reading their vectors. With
    `widths`, rows whose vector blob has none of those byte lengths (damaged, as
    `decode_rows` would leave out) are left out too."""
    if not ids:
        return [], []
    stmt = select(id_col, label_col).where(id_col.in_(list(ids)))
    if widths:
        stmt = stmt.where(func.length(vector_col).in_(list(widths)))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [r[0] for r in rows], [r[1] for r in rows]


def iter_vectors(
    engine: Engine,
    id_col: Any,
    vector_col: Any,
    chunk: int,
    dtype: np.dtype[Any] = VECTOR_DTYPES["float32"],
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[IdArray, Vector]]:
    """All (ids, vectors) of a table in id order, `chunk` rows at a time; with `shard`
    (s, n), only the rows whose id is s modulo n (selected by the database)."""
    last = 0
    with Session(engine) as session:
        while True:
            stmt = select(id_col, vector_col).where(id_col > last)
            if shard is not None:
                stmt = stmt.where(id_col % shard[1] == shard[0])
            rows = session.execute(stmt.order_by(id_col).limit(chunk)).all()
            if not rows:
                return
            last = int(rows[-1][0])
            matrix, ok = decode_rows([r[1] for r in rows], dtype)
            ids = np.fromiter((r[0] for r, keep in zip(rows, ok, strict=True) if keep), np.int64)
            if len(ids):
                yield ids, matrix


def stored_widths(dim: int | None) -> tuple[int, ...]:
    """The byte lengths a well-formed stored vector of `dim` dimensions may have (float32
    or float16); empty when the dimension is not known yet."""
    return tuple(dim * dtype.itemsize for dtype in VECTOR_DTYPES.values()) if dim else ()


def dtype_of(blob: bytes, dim: int | None, recorded: np.dtype[Any]) -> np.dtype[Any]:
    """A stored vector's type, from its length when the dimension is known."""
    if dim:
        return VECTOR_DTYPES["float16"] if len(blob) == 2 * dim else VECTOR_DTYPES["float32"]
    return recorded
