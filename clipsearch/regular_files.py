"""Open and read only regular files: the one way the indexer reads a file a folder holds.

A folder may hold a named pipe called `pipe.jpg` (opening it blocks until a writer comes)
or a link `zero.jpg` to `/dev/zero` (reading it never ends). Every file is opened without
blocking (`O_NONBLOCK`), checked on the opened descriptor (`fstat`: a regular file, or
refused with the kind it is), and read no further than the size the descriptor declares.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

_CHUNK = 1 << 20

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


class NotRegularFile(OSError):
    """A path that is a pipe, device, socket or folder where a file was expected; its
    `strerror` says which."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file but {kind}", path)


def kind_of(mode: int) -> str | None:
    """What a non-regular file is, from its `st_mode`; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


@contextmanager
def open_regular(path: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, int]]:
    """The file open for reading and its size, or `NotRegularFile` (an `OSError`) at once,
    without blocking, when it is anything but a regular file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        kind = kind_of(st.st_mode)
        if kind is not None:
            raise NotRegularFile(os.fspath(path), kind)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of a regular file, at most the size it had when opened; a file larger
    than `limit` raises `OSError(EFBIG)` without being read."""
    with open_regular(path) as (f, size):
        if limit is not None and size > limit:
            raise OSError(
                errno.EFBIG, f"too large to read ({size:,} bytes, the limit is {limit:,})"
            )
        return f.read(size)


def read_named(path: str | os.PathLike[str], limit: int) -> bytes:
    """A file the user named on the command line: a regular file, or a pipe or character
    device (`<(cmd)`, `/dev/stdin`) read to its end; more than `limit` bytes raise
    `OSError(EFBIG)`. Opened blocking: a named pipe's writer is the user's own command."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            return f.read(st.st_size)
        if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise NotRegularFile(os.fspath(path), kind_of(st.st_mode) or "a special file")
        chunks, total = [], 0
        while chunk := f.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise OSError(errno.EFBIG, f"more than {limit:,} bytes came through it")
            chunks.append(chunk)
        return b"".join(chunks)


def sha256_regular(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a regular file's first `size` bytes (its size when opened)."""
    with open_regular(path) as (f, size):
        return sha256_of(f, size)


def sha256_of(f: BinaryIO, size: int) -> str:
    """The SHA-256 of the next `size` bytes of an open file (fewer if it ends first), read
    a chunk at a time."""
    digest = hashlib.sha256()
    left = size
    while left > 0 and (chunk := f.read(min(_CHUNK, left))):
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()
