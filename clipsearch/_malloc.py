"""Keep freed heap memory in the process while models run on the CPU.

With glibc's defaults, every large activation buffer is mmap'ed and unmapped again on each
forward pass; on virtual machines the page faults that follow made CPU encoding swing 3x in
speed (see benchmarks/results). Raising the mmap and trim thresholds keeps those buffers in
the heap for reuse. `CLIPSEARCH_MALLOC_TUNING=0` turns this off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum for this setting
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest it can express
_done = False


def keep_freed_memory() -> bool:
    """Apply the glibc tuning once; returns whether it is in effect."""
    global _done
    if _done:
        return True
    if os.environ.get("CLIPSEARCH_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, jemalloc preloaded as libc, ...)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    _done = bool(ok)
    return _done
