"""Change detection: compare a scan with the stored rows and decide what to do per file.

- same path, same size and mtime: unchanged, not even read;
- same path, other size or mtime: hashed; same hash -> only the stat is refreshed
  ("touched"), other hash -> re-embedded ("updated");
- new path whose content hash equals a stored row whose file is gone: "moved", re-pointed
  without embedding (only new files whose size matches a gone row are hashed up front);
- stored rows under the scanned roots whose file is gone and not moved: "removed";
- everything else new: "added", decoded and embedded by the pipeline.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipsearch.facts import Skip
from clipsearch.indexer.scan import FileStat
from clipsearch.regular_files import sha256_regular
from clipsearch.storage.db import Move, StoredFile


@dataclass(frozen=True)
class EmbedJob:
    file: FileStat
    replaces: int | None  # the row id this updates, None for a new file


@dataclass
class WorkPlan:
    embed: list[EmbedJob] = field(default_factory=list)
    moved: list[Move] = field(default_factory=list)
    touched: list[Move] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skip] = field(default_factory=list)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def make_plan(
    files: Iterable[FileStat],
    stored: Iterable[StoredFile],
    roots: Iterable[Path],
    unreadable: Iterable[str] = (),
) -> WorkPlan:
    """`unreadable`: paths the scan saw but could not stat; their rows are kept, not removed."""
    plan = WorkPlan()
    root_strs = [os.path.abspath(r) for r in roots]
    stored_by_path = {s.path: s for s in stored}
    files = list(files)
    scanned = {f.path for f in files} | set(unreadable)

    # Rows whose file did not turn up in this scan: gone if under a scanned root, and
    # possibly gone (checked on demand) if elsewhere. Both can be the source of a move.
    absent = [s for s in stored_by_path.values() if s.path not in scanned]
    absent_by_size: dict[int, list[StoredFile]] = defaultdict(list)
    for s in absent:
        absent_by_size[s.size].append(s)
    claimed: set[int] = set()

    for f in files:
        old = stored_by_path.get(f.path)
        try:
            if old is not None:
                _plan_known(plan, f, old)
            else:
                source = _find_move_source(f, absent_by_size.get(f.size, []), root_strs, claimed)
                if source is not None:
                    claimed.add(source.id)
                    plan.moved.append(Move(source.id, f.path, f.size, f.mtime_ns))
                else:
                    plan.embed.append(EmbedJob(f, replaces=None))
        except OSError as exc:
            plan.skipped.append(Skip(f.path, f"unreadable: {exc.strerror or exc}"))

    plan.removed = [s.id for s in absent if s.id not in claimed and _under(s.path, root_strs)]
    return plan


def _plan_known(plan: WorkPlan, f: FileStat, old: StoredFile) -> None:
    if (old.size, old.mtime_ns) == (f.size, f.mtime_ns):
        plan.unchanged += 1
    elif f.size == old.size and sha256_regular(f.path) == old.sha256:
        plan.touched.append(Move(old.id, f.path, f.size, f.mtime_ns))
    else:
        plan.embed.append(EmbedJob(f, replaces=old.id))


def _find_move_source(
    f: FileStat, candidates: list[StoredFile], roots: Sequence[str], claimed: set[int]
) -> StoredFile | None:
    candidates = [
        c
        for c in candidates
        if c.id not in claimed and (_under(c.path, roots) or not os.path.exists(c.path))
    ]
    if not candidates:
        return None
    digest = sha256_regular(f.path)
    return next((c for c in candidates if c.sha256 == digest), None)
