"""Walk folders for image and video files and stat them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clipsearch.facts import Skip
from clipsearch.names import is_text, readable
from clipsearch.regular_files import kind_of
from clipsearch.video.decode import NO_PYAV, VIDEO_EXTENSIONS, pyav_available

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
SIDECAR_EXTENSIONS = frozenset({".txt", ".xmp"})
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | HEIF_EXTENSIONS | VIDEO_EXTENSIONS
NOT_UTF8 = (
    "the file name is not valid UTF-8 (shown with \\xNN for the bad bytes); rename it to "
    "UTF-8 to index it, e.g. with `convmv -f latin1 -t utf8`"
)


@dataclass(frozen=True)
class FileStat:
    path: str  # absolute, normalised
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[FileStat] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    #: `.txt` / `.xmp` files seen on the way: sidecar descriptions, if an image matches.
    sidecars: list[FileStat] = field(default_factory=list)


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def scan(roots: Iterable[Path]) -> ScanResult:
    """Every image and video file under `roots` (files or folders), recursively, by path.

    Symlinked files are followed; symlinked folders are not (no cycles, no escaping the tree).
    A file that cannot be stat'ed, or is no regular file (a named pipe, a link to a device),
    is reported as skipped with the reason.
    """
    result = ScanResult()
    heif = heif_available()
    videos = pyav_available()
    seen: set[str] = set()
    for root in roots:
        for path in _walk(root, result):
            ext = os.path.splitext(path)[1].lower()
            if ext in HEIF_EXTENSIONS and not heif:
                result.skipped.append(
                    Skip(
                        path,
                        "HEIC/HEIF needs the pillow-heif plugin: pip install 'clipsearch[heic]'",
                    )
                )
                continue
            if ext in VIDEO_EXTENSIONS and not videos:
                result.skipped.append(Skip(path, NO_PYAV))
                continue
            is_sidecar = ext in SIDECAR_EXTENSIONS
            if not is_sidecar and ext not in MEDIA_EXTENSIONS:
                continue
            if path in seen:
                continue
            seen.add(path)
            if not is_text(path):
                if not is_sidecar:
                    result.skipped.append(Skip(readable(path), NOT_UTF8))
                continue
            try:
                st = os.stat(path)
            except OSError as exc:
                if not is_sidecar:
                    result.skipped.append(Skip(path, f"unreadable: {exc.strerror or exc}"))
                continue
            kind = kind_of(st.st_mode)
            if kind is not None:  # a pipe would block the reader, a device never end
                if not is_sidecar:
                    result.skipped.append(Skip(path, f"not a regular file but {kind}"))
                continue
            found = FileStat(path, st.st_size, st.st_mtime_ns)
            (result.sidecars if is_sidecar else result.files).append(found)
    result.files.sort(key=lambda f: f.path)
    result.sidecars.sort(key=lambda f: f.path)
    return result


def _walk(root: Path, result: ScanResult) -> Iterable[str]:
    root = Path(os.path.abspath(root.expanduser()))
    try:
        is_folder = stat.S_ISDIR(os.stat(root).st_mode)
    except OSError as exc:
        reason = "no such file or folder" if isinstance(exc, FileNotFoundError) else exc.strerror
        result.skipped.append(Skip(str(root), f"{reason}"))
        return
    if not is_folder:  # a file named on the command line: any kind, `scan` tells them apart
        yield str(root)
        return

    def on_error(exc: OSError) -> None:
        result.skipped.append(Skip(str(exc.filename), f"unreadable folder: {exc.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                yield os.path.join(dirpath, name)
