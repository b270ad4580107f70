"""What can go wrong in a request beyond the library's own errors; each maps to one HTTP
status in `guards` (the library's errors map there too)."""

from __future__ import annotations

from clipsearch.errors import ClipsearchError


class NotFoundError(ClipsearchError):
    """An id the index does not hold, or a file no longer on disk."""


class ForbiddenFileError(ClipsearchError):
    """A file outside the indexed folders (for instance through a symlink)."""


class ReadOnlyError(ForbiddenFileError):
    """A change asked of a server started with --read-only."""


class UnsupportedImageError(ClipsearchError):
    """An upload that is not a readable image."""


class UploadTooLargeError(ClipsearchError):
    """An upload (or the image in it) over the server's limits."""


class JobBusyError(ClipsearchError):
    """An indexing job is already running; the server runs one at a time."""
