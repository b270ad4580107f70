"""The writer lock: one process at a time changes an index.

The database already serialises single transactions, but an indexing run is many
transactions plus a FAISS index kept in memory and saved at the end; two such runs
interleaved leave a cache that reflects neither. So every writing operation (index, texts
add/remove, tag --store, reindex, tune, adapters) holds the index's writer lock for its whole
run: for an SQLite index an exclusive `flock` on `<index>/write.lock` (the file holds the
owner's pid, so a second writer can say who is busy), for a PostgreSQL one a session-level
advisory lock (its connection carries the owner's pid and host). Either is dropped when its
process dies, so a killed run never leaves the index locked. Searches take no lock.

Only the process that took a lock holds its descriptor: a forked child (a decoding worker)
finds /dev/null in its place, so a worker orphaned by a killed run cannot keep the lock
file's flock or the advisory lock's connection alive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol

from sqlalchemy import Connection, Engine

from clipsearch.errors import IndexBusyError, ReadOnlyIndexError
from clipsearch.storage import dialect

LOCK_FILENAME = "write.lock"
#: Descriptors of the locks this process holds (a lock file, a lock's connection socket).
_HELD: set[int] = set()
#: How often a waiting writer retries.
POLL_SECONDS = 0.1

if sys.platform != "win32":
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

else:  # pragma: no cover - no flock on Windows; the lock is then advisory only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _blank_in_child() -> None:
    """After a fork, in the child: /dev/null in place of every held lock's descriptor."""
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in _HELD:
            os.dup2(null, fd)
    finally:
        os.close(null)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_blank_in_child)


def lock_owner(directory: Path) -> str | None:
    """Who holds (or last held) the lock: 'pid N on HOST', or None if unknown."""
    try:
        text = (directory / LOCK_FILENAME).read_text().strip()
    except OSError:
        return None
    return text or None


class ProcessLock(Protocol):
    """What keeps other processes out: a file lock, or a database's advisory lock."""

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    def owner(self) -> str | None: ...


class FileLock:
    """An exclusive `flock` on `<folder>/write.lock`, which holds the owner's pid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is None:
            self._fd = self._open()
        if not _try_lock(self._fd):
            return False
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        _HELD.add(self._fd)
        return True

    def _open(self) -> int:
        try:
            return os.open(self.directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise ReadOnlyIndexError(
                    f"the index folder {self.directory} is read-only ({exc.strerror}): "
                    "searching works, but changing the index needs write access to the folder"
                ) from None
            raise ReadOnlyIndexError(
                f"cannot lock the index folder {self.directory} for writing: {exc.strerror}"
            ) from None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _HELD.discard(fd)
            with contextlib.suppress(OSError):
                _unlock(fd)
            os.close(fd)

    def owner(self) -> str | None:
        return lock_owner(self.directory)


class AdvisoryLock:
    """A PostgreSQL advisory lock, held by one connection of its own for the whole run;
    `shared` lets several holders of the shared kind in at once (never with an exclusive)."""

    def __init__(self, engine: Engine, shared: bool = False, key: int = dialect.ADVISORY_KEY):
        self.engine = engine
        self.shared = shared
        self.key = key
        self._conn: Connection | None = None
        self._socket: int | None = None

    def try_acquire(self) -> bool:
        conn = self.engine.connect()
        try:
            got = dialect.try_advisory_lock(conn, self.shared, self.key)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        self._socket = _socket_of(conn)
        if self._socket is not None:
            _HELD.add(self._socket)
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._socket is not None:
            _HELD.discard(self._socket)
            self._socket = None
        try:
            dialect.advisory_unlock(conn, self.shared, self.key)
            conn.commit()
        finally:
            conn.close()

    def owner(self) -> str | None:
        with self.engine.connect() as conn:
            return dialect.advisory_holder(conn, self.key)


def _socket_of(conn: Connection) -> int | None:
    """The descriptor of a connection's socket, where its driver tells it."""
    fileno = getattr(conn.connection.dbapi_connection, "fileno", None)
    try:
        return int(fileno()) if fileno is not None else None
    except Exception:  # a closed or driver-specific connection: nothing to blank
        return None


class WriterLock:
    """A re-entrant (within one object) lock on an index, exclusive by default.

    `process`: what excludes other processes (a `FileLock` on the index folder by default);
    `shared_process`: a lock several processes may hold at once, but never with `process`
    (PostgreSQL's indexing runs; None: shared requests are exclusive too). `label`: how
    messages name the index. `wait`: seconds to wait for another writer to finish; 0 fails
    at once with `IndexBusyError`, None waits as long as it takes. A request made while this
    object already holds the lock joins it, in whichever mode it was taken.
    """

    def __init__(
        self,
        directory: Path | None,
        wait: float | None = 0.0,
        *,
        process: ProcessLock | None = None,
        shared_process: ProcessLock | None = None,
        label: str | None = None,
    ) -> None:
        if process is None:
            if directory is None:
                raise ValueError("a WriterLock needs a folder or a process lock")
            process = FileLock(directory)
        self.process = process
        self.shared_process = shared_process
        self._active = process
        self.label = label or str(directory)
        self.wait = wait
        self._depth = 0
        # Threads of one process (a server's indexing job and an adapter switch) queue here;
        # the process lock only excludes other processes.
        self._threads = threading.RLock()

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, shared: bool = False) -> None:
        if not self._threads.acquire(timeout=-1 if self.wait is None else self.wait):
            raise IndexBusyError(
                f"the index at {self.label} is busy: this process is already writing to it"
            )
        if self._depth:
            self._depth += 1
            return
        self._active = self.shared_process if shared and self.shared_process else self.process
        try:
            self._lock_process()
        except BaseException:
            self._threads.release()
            raise
        self._depth = 1

    def _lock_process(self) -> None:
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while not self._active.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                self._active.release()
                owner = self._active.owner() or "another process"
                waited = f" after waiting {self.wait:g} s" if self.wait else ""
                raise IndexBusyError(
                    f"the index at {self.label} is busy: {owner} is writing to it{waited}; "
                    "let it finish, or run again with --wait to queue behind it"
                )
            time.sleep(POLL_SECONDS)

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0:
            self._active.release()
        self._threads.release()

    @contextlib.contextmanager
    def holding(self, shared: bool = False) -> Iterator[None]:
        """The lock for a `with` block; `shared` where the store allows several writers."""
        self.acquire(shared)
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
