"""One `Index.add` run: scan, plan, apply moves and deletions, embed what is new or
changed, and keep the live FAISS index, its saved cache and the sidecar texts in step."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.errors import IndexNotFoundError
from clipsearch.facts import IndexSummary, Progress, SidecarSummary, Skip
from clipsearch.indexer.plan import EmbedJob, make_plan
from clipsearch.indexer.scan import NOT_UTF8, scan
from clipsearch.indexer.text_sources import SIDECAR
from clipsearch.items import record_roots
from clipsearch.names import is_text, readable
from clipsearch.storage import vector_index as vi
from clipsearch.storage.frames import frame_keys_of
from clipsearch.video.decode import is_video

if TYPE_CHECKING:
    from clipsearch.indexer.options import PipelineOptions
    from clipsearch.indexer.runners import Runner
    from clipsearch.indexer.scan import FileStat
    from clipsearch.indexer.sinks import EmbedCounts
    from clipsearch.models.base import Encoder, ModelInfo
    from clipsearch.storage.db import Database
    from clipsearch.storage.texts import TextTable


class ImageSpace(Protocol):
    """The space searches run in, as far as indexing goes: stored (raw) image vectors are
    mapped into it before they join the live vector index."""

    def images(self, raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]: ...


class Sidecars(Protocol):
    """The index's texts, as far as keeping sidecar descriptions in step goes."""

    table: TextTable

    def sync_sidecars(
        self, roots: Sequence[Path], images: Sequence[str], sidecars: Sequence[FileStat]
    ) -> SidecarSummary: ...


class IndexingHost(Protocol):
    """What one `add` run needs of the index it adds to (an `Index`): the store, the model,
    the live vector index with its backend, and the sidecar texts."""

    db: Database
    options: PipelineOptions

    @property
    def cache_dir(self) -> Path: ...

    @property
    def encoder(self) -> Encoder: ...

    @property
    def model_info(self) -> ModelInfo | None: ...

    @property
    def texts(self) -> Sidecars: ...

    def record_model(self) -> ModelInfo: ...

    def settle_precision(self, paths: Sequence[str]) -> None: ...

    def record_image_vectors(self) -> None: ...

    def space(self) -> ImageSpace: ...

    def vector_index(self) -> vi.IdIndex: ...

    def vector_backend(self) -> vi.FaissBackend: ...

    def index_choice(self) -> vi.IndexChoice: ...

    def reindex(self, index_type: str | None = None, nprobe: int | None = None) -> vi.IdIndex: ...

    def refresh(self) -> None: ...


Report = Callable[[Progress], None]


def add_paths(
    index: IndexingHost,
    paths: Iterable[str | os.PathLike[str]],
    report: Report,
    runner: Runner | None = None,
) -> IndexSummary:
    """`runner`: where reading and encoding run (default: `LocalRunner`, this machine)."""
    roots = [Path(os.path.abspath(Path(p).expanduser())) for p in paths]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise IndexNotFoundError(f"no such file or folder: {', '.join(missing)}")
    # A path the store cannot hold is skipped like one inside a folder; the others go on.
    unnamed = [Skip(readable(str(r)), NOT_UTF8) for r in roots if not is_text(str(r))]
    roots = [r for r in roots if is_text(str(r))]
    report(Progress("scanning"))
    scanned = scan(roots)
    scanned.skipped[:0] = [s for s in unnamed if s not in scanned.skipped]
    record_roots(index.db, roots)
    plan = make_plan(
        scanned.files,
        index.db.stored_files(),
        roots,
        unreadable=[s.path for s in scanned.skipped],
    )
    summary = IndexSummary(
        removed=len(plan.removed),
        moved=len(plan.moved),
        unchanged=plan.unchanged + len(plan.touched),
        skipped=[*scanned.skipped, *plan.skipped],
    )
    if plan.embed:
        index.record_model()
        index.settle_precision([j.file.path for j in plan.embed if not is_video(j.file.path)])
        index.record_image_vectors()
    info = index.model_info
    vectors = index.vector_index() if info is not None else None
    try:
        gone = frame_keys_of(index.db, plan.removed)
        changed = index.db.apply_file_changes(plan.removed, plan.moved, plan.touched)
        if changed and vectors is not None:
            vectors.remove(np.asarray([*plan.removed, *gone], dtype=np.int64))
            vectors.advanced_to(index.db.written_generation)
        if plan.embed:
            assert vectors is not None
            report(Progress("embedding", 0, len(plan.embed)))
            counts, summary.videos, summary.keyframes = _embed(
                index, plan.embed, vectors, report, runner
            )
            summary.added, summary.updated = counts.added, counts.updated
            summary.encoded = counts.encoded
            summary.removed += counts.removed
            summary.skipped.extend(counts.skipped)
    except BaseException:
        vi.CacheFiles(index.cache_dir).invalidate()  # the next open rebuilds from the store
        index.refresh()
        raise
    report(Progress("finishing"))
    if vectors is not None and info is not None:
        if vi.family_of(vectors.kind) != index.index_choice().family:
            index.reindex()  # grown past (or shrunk below) the size for another type
        elif not index.vector_backend().save(vectors):
            index.refresh()  # it missed a write from elsewhere: rebuilt on next use
    if scanned.sidecars or index.texts.table.sources(SIDECAR):
        sidecars = index.texts.sync_sidecars(
            roots, [f.path for f in scanned.files], scanned.sidecars
        )
        summary.sidecars = sidecars.added
        summary.skipped.extend(sidecars.skipped)
    return summary


def _embed(
    index: IndexingHost,
    jobs: list[EmbedJob],
    vectors: vi.IdIndex,
    report: Report,
    runner: Runner | None,
) -> tuple[EmbedCounts, int, int]:
    """Embed the jobs into the store, which keeps the live FAISS index in step batch by
    batch (searches see each batch as it commits): photos with the runner through the SQL
    sink, then videos one by one here; returns the counts, the videos and the keyframes
    stored."""
    from clipsearch.indexer.runners import LocalRunner
    from clipsearch.indexer.sinks import SqlSink

    space = index.space()

    def on_commit(ids: Any, matrix: Any, replaced: Any) -> None:
        vectors.remove(replaced)
        if len(ids):
            vectors.add(ids, space.images(matrix))
        vectors.advanced_to(index.db.written_generation)

    def on_progress(done: int, total: int) -> None:
        report(Progress("embedding", done, total))

    photos = [job for job in jobs if not is_video(job.file.path)]
    videos = [job for job in jobs if is_video(job.file.path)]
    sink = SqlSink(index.db, on_commit)
    if photos:
        runner = runner or LocalRunner(index.options)
        runner.run(photos, index.encoder, sink, sink.reuse, on_progress)
    stored = keyframes = 0
    if videos:
        from clipsearch.indexer.videos import embed_videos

        def on_video(done: int, total: int) -> None:
            report(Progress("embedding videos", done, total))

        stored, keyframes = embed_videos(
            index.db, videos, index.encoder, index.options, on_commit, sink.counts, on_video
        )
    return sink.counts, stored, keyframes
