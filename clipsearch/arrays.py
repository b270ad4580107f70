"""The array types every module speaks: float32 matrices of unit vectors, and int64 ids."""

from __future__ import annotations

from typing import Any

import numpy as np

#: (N, dim) float32, one vector per row (usually L2-normalised).
Matrix = np.ndarray[Any, np.dtype[np.float32]]
#: One float32 vector (dim,) or a stack of them: the same type, named for the reader.
Vector = Matrix
#: int64 row ids.
IdArray = np.ndarray[Any, np.dtype[np.int64]]

__all__ = ["IdArray", "Matrix", "Vector"]
