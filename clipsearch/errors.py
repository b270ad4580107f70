"""Typed exceptions. The library raises these; only the CLI prints them and exits."""

from __future__ import annotations


class ClipsearchError(Exception):
    """Base class: every error a user can act on derives from this."""


class ConfigError(ClipsearchError):
    """A setting (flag, environment variable, config file) is invalid."""


class ModelSpecError(ClipsearchError):
    """A `--model` spec cannot be parsed or names an unknown architecture."""


class ModelLoadError(ClipsearchError):
    """The model's weights could not be loaded (missing file, no network, bad checkpoint)."""


class ModelMismatchError(ClipsearchError):
    """The index was built with another model than the one asked for."""


class IndexNotFoundError(ClipsearchError):
    """No index exists at the given location."""


class SchemaVersionError(ClipsearchError):
    """The index was written by a newer clipsearch than this one."""


class EmptyIndexError(ClipsearchError):
    """A search was run against an index that holds no vectors."""


class QueryError(ClipsearchError):
    """A query is malformed: no text and no image, an unreadable query image, bad k."""


class QueryImageError(QueryError):
    """A query image cannot be used; `reason` says why (as `ImageDecodeError` does)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"query image {path}: {reason}")
        self.path = path
        self.reason = reason


class ImageDecodeError(ClipsearchError):
    """One image could not be decoded; `reason` says why in words a user can act on."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class TextSourceError(ClipsearchError):
    """A file of texts to index (captions CSV, JSONL, vocabulary, sidecar) is unreadable or
    malformed; the message lists the bad lines. Nothing from the file was added."""


class AdapterError(ClipsearchError):
    """An adapter cannot be fitted, stored or applied: bad pairs file, unknown adapter id, a
    fit that makes validation worse, or an adapter for another model's space."""


class IndexBusyError(ClipsearchError):
    """Another process (or thread) is writing to the index; `--wait` queues behind it."""


class ReadOnlyIndexError(ClipsearchError):
    """The index folder or database cannot be written: searching works, changing it does not."""


class IndexDamagedError(ClipsearchError):
    """The index database is damaged (truncated, overwritten, missing tables);
    `clipsearch verify` says what, `clipsearch repair` salvages what it can."""


class DiskFullError(ClipsearchError):
    """The disk filled up while writing; nothing committed before is lost."""


class StoreUnavailableError(ClipsearchError):
    """The database server of an index cannot be reached (down, wrong URL, refused login)."""


class ClusterError(ClipsearchError):
    """The Ray cluster cannot be used: Ray is not installed, the address cannot be reached,
    or the cluster lost work it could not redo."""


class ShardUnavailableError(ClusterError):
    """A vector shard is starting or being rebuilt (after its actor died): retry shortly."""
