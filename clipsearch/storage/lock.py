"""The writer lock: one process at a time changes an index.

SQLite already serialises single transactions, but an indexing run is many transactions plus a
FAISS index kept in memory and saved at the end; two such runs interleaved leave a cache that
reflects neither. So every writing operation (index, texts add/remove, tag --store, reindex,
tune, adapters) holds an exclusive `flock` on `<index>/write.lock` for its whole run. The file
holds the owner's pid, so a second writer can say who is busy. The kernel drops the lock when
its process dies, so a killed run never leaves the index locked. Searches take no lock.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from clipsearch.errors import IndexBusyError, ReadOnlyIndexError

LOCK_FILENAME = "write.lock"
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


def lock_owner(directory: Path) -> str | None:
    """Who holds (or last held) the lock: 'pid N on HOST', or None if unknown."""
    try:
        text = (directory / LOCK_FILENAME).read_text().strip()
    except OSError:
        return None
    return text or None


class WriterLock:
    """An exclusive, re-entrant (within one object) lock on an index folder.

    `wait`: seconds to wait for another writer to finish; 0 fails at once with
    `IndexBusyError`, None waits as long as it takes.
    """

    def __init__(self, directory: Path, wait: float | None = 0.0) -> None:
        self.directory = directory
        self.wait = wait
        self._fd: int | None = None
        self._depth = 0
        # Threads of one process (a server's indexing job and an adapter switch) queue here;
        # the flock below only excludes other processes.
        self._threads = threading.RLock()

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> None:
        if not self._threads.acquire(timeout=-1 if self.wait is None else self.wait):
            raise IndexBusyError(
                f"the index at {self.directory} is busy: this process is already writing to it"
            )
        if self._depth:
            self._depth += 1
            return
        try:
            self._lock_file()
        except BaseException:
            self._threads.release()
            raise
        self._depth = 1

    def _lock_file(self) -> None:
        path = self.directory / LOCK_FILENAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise ReadOnlyIndexError(
                    f"the index folder {self.directory} is read-only ({exc.strerror}): "
                    "searching works, but changing the index needs write access to the folder"
                ) from None
            raise ReadOnlyIndexError(
                f"cannot lock the index folder {self.directory} for writing: {exc.strerror}"
            ) from None
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while not _try_lock(fd):
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                owner = lock_owner(self.directory) or "another process"
                waited = f" after waiting {self.wait:g} s" if self.wait else ""
                raise IndexBusyError(
                    f"the index at {self.directory} is busy: {owner} is writing to it{waited}; "
                    "let it finish, or run again with --wait to queue behind it"
                )
            time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            _unlock(fd)
            os.close(fd)
        self._threads.release()

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
