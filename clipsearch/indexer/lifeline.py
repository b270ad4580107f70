"""Decoding workers die with the process that forked them.

A run killed with `kill -9` cannot shut its worker pool down; workers blocked on their
task queue then lived on (over a minute, ignoring SIGTERM), holding copies of the run's
descriptors: the writer lock's file and the database connection of PostgreSQL's advisory
lock, so the next run found the index "busy" with a dead pid. Each worker asks the kernel
for SIGKILL when its parent dies (Linux `PR_SET_PDEATHSIG`; elsewhere a thread polls
the parent's pid), and `storage.lock` blanks the lock's descriptors in every forked child.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def die_with_parent(parent: int) -> None:
    """Called first thing in a worker: exit when the process `parent` (its creator) is
    gone, even if it is already gone by now."""
    if sys.platform.startswith("linux") and _set_death_signal():
        if os.getppid() != parent:  # died before the request took effect
            os._exit(1)
        return
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="lifeline").start()


def _set_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_SECONDS)
    os._exit(1)
