"""The user's folders that clipsearch keeps caches in."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache(override: str, name: str) -> Path:
    """`$override` when set, else `$XDG_CACHE_HOME/clipsearch/NAME` (`~/.cache/...`)."""
    explicit = os.environ.get(override)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "clipsearch" / name
