"""Where an index lives: a folder (SQLite, the embedded default) or a PostgreSQL URL.

`--db ~/photos-index` keeps everything in that folder, as always: the database file, the
FAISS caches, the writer lock. `--db postgresql+psycopg://user@host/name` keeps every row in
PostgreSQL and the local caches (FAISS files, thumbnails) in a cache folder on this machine,
keyed by the database's own id (`store_id` in its meta table), so two spellings of one URL
share a cache and a database dropped and made anew never trusts the old one's files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipsearch.errors import ConfigError
from clipsearch.user_dirs import user_cache

#: URL schemes clipsearch stores an index in; a bare `postgresql://` uses psycopg 3 too.
POSTGRES_SCHEMES = ("postgresql+psycopg", "postgresql", "postgres")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def default_cache_root() -> Path:
    """`$CLIPSEARCH_CACHE_DIR`, else `$XDG_CACHE_HOME/clipsearch/indexes`
    (`~/.cache/clipsearch/indexes`)."""
    return user_cache("CLIPSEARCH_CACHE_DIR", "indexes")


@dataclass(frozen=True)
class StoreLocation:
    """An index's address. `folder` is set for SQLite (the index folder); `url` is the
    SQLAlchemy URL of a server database (None for SQLite)."""

    folder: Path | None
    url: str | None
    cache_root: Path | None = None  # --cache-dir of a server database; None: the default

    @property
    def is_sqlite(self) -> bool:
        return self.folder is not None

    @property
    def address(self) -> str:
        """What `--db` takes to open this index again (a URL keeps its password)."""
        return str(self.folder) if self.folder is not None else str(self.url)

    @property
    def label(self) -> str:
        """How messages name the index: its folder, or its URL without a password."""
        if self.folder is not None:
            return str(self.folder)
        return _without_password(self.url or "")

    def cache_dir(self, store_id: str) -> Path:
        """The folder for this index's local caches: an SQLite index keeps them in its own
        folder, as it always has; a server database's go to the cache root, by store id."""
        if self.folder is not None:
            return self.folder
        return (self.cache_root or default_cache_root()) / store_id


def locate(
    db: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> StoreLocation:
    """The location `--db` names: a URL with a scheme, or a folder path."""
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else None
    text = os.fspath(db)
    match = _SCHEME.match(text)
    if match is None:
        return StoreLocation(Path(text).expanduser(), None, cache_root)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        raise ConfigError(
            f"--db {text}: give an SQLite index as its folder (e.g. --db ~/photos-index), "
            "not as a sqlite:// URL"
        )
    if scheme not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"--db {_without_password(text)}: clipsearch stores an index in a folder (SQLite) "
            f"or in PostgreSQL (postgresql+psycopg://USER@HOST/NAME), not in {scheme!r}"
        )
    return StoreLocation(None, "postgresql+psycopg" + text[len(scheme) :], cache_root)


def _without_password(url: str) -> str:
    return re.sub(r"^([^:/]+://[^:/@]+):[^@]*@", r"\1:***@", url)
