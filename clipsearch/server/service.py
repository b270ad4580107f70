"""What the server does, over one open `Index`: blocking methods that the routes call on
worker threads, and one coroutine, `encode_query_texts`, that waits for the query batcher on
the event loop without holding a thread.

The model is loaded once, when the service starts. Searches see an indexing job's images
batch by batch (the job adds to the same live FAISS index); changes another process makes
(`clipsearch index` next to a running server) are picked up on the next request.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path

from clipsearch.arrays import Vector
from clipsearch.asking import Answers
from clipsearch.errors import (
    ClipsearchError,
    ConfigError,
    EmptyIndexError,
    ImageDecodeError,
    IndexNotFoundError,
    ModelMismatchError,
    QueryError,
    QueryImageError,
)
from clipsearch.facts import IndexStats, IndexSummary, Progress
from clipsearch.index import Index, open_index
from clipsearch.indexer.decode import TOO_LARGE
from clipsearch.items import Item, inside_roots
from clipsearch.models import model_identity
from clipsearch.search.filters import Filter
from clipsearch.search.hybrid import Mode, without_quotes
from clipsearch.search.judge import Judged
from clipsearch.search.query import Query, QueryPart
from clipsearch.search.relevance import MinRelevance
from clipsearch.search.request import SearchRequest
from clipsearch.search.sorting import Sort
from clipsearch.server.admission import deadline
from clipsearch.server.batching import BatchingEncoder, BatchStats
from clipsearch.server.errors import (
    ForbiddenFileError,
    NotFoundError,
    ReadOnlyError,
    UnsupportedImageError,
    UploadTooLargeError,
)
from clipsearch.server.jobs import Jobs
from clipsearch.server.settings import ServerSettings
from clipsearch.server.thumbnails import Thumbnails
from clipsearch.storage.location import locate
from clipsearch.storage.query_cache import QueryCache
from clipsearch.texts import BUILTIN_VOCABULARY, TextHit

EMPTY_NOTE = "nothing is indexed yet: start an indexing job (POST /api/jobs)"


class SearchService:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.index, self._batcher = _open(settings)
        self._ensemble: dict[str, Index] = {}  # by label: a URL without its password
        try:
            for where in settings.ensemble:
                self._ensemble[locate(where).label] = _member(where, settings)
        except BaseException:
            self.close()
            raise
        self.thumbnails = Thumbnails(self.index.cache_dir, self.index.options.max_pixels)
        self.jobs = Jobs(self._run_job, on_finish=self._note_generation)
        self._refresh_lock = threading.Lock()
        self._roots_cache: tuple[int, list[Path]] | None = None
        self._seen_generation = self.index.generation()
        self._warm()

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        for member in self._ensemble.values():
            member.close()
        self.index.close()

    @property
    def batch_stats(self) -> BatchStats | None:
        return self._batcher.stats if self._batcher is not None else None

    # -- searches -------------------------------------------------------------------------

    async def encode_query_texts(self, query: Query) -> None:
        """Put the query's texts in the query cache, encoding those it lacks through the
        batcher. Awaited on the event loop, so a request waiting for its batch holds no
        worker thread: the threads stay free for searches that need the CPU now. (An image
        search reads its texts without quote marks: those are encoded too.)"""
        parts = [*query.parts, *without_quotes(query).parts]
        texts = list(dict.fromkeys(str(p.value) for p in parts if p.kind == "text"))
        cache = self._batcher.cache if self._batcher is not None else None
        if self._batcher is None or not isinstance(cache, QueryTexts) or not texts:
            return
        held = cache.held(texts)  # in memory: no thread, no read
        missing = [t for t in texts if t not in held]
        if missing:  # the batcher reads the table for its whole batch, then encodes the rest
            submitted = self._batcher.submit(missing, cached=True, deadline=deadline())
            await asyncio.wrap_future(submitted)

    def find(self, request: SearchRequest) -> Judged:
        """One page of images for a request (`Index.find`); its ensemble indexes are those
        this server holds open (`--ensemble`)."""
        request = request.but(ensemble=tuple(locate(e).label for e in request.ensemble))
        unknown = [e for e in request.ensemble if e not in self._ensemble]
        if unknown:
            held = ", ".join(self._ensemble) or "none"
            raise QueryError(
                f"this server holds no ensemble index {unknown[0]!r} (it holds: {held}); "
                "start it with --ensemble FOLDER|URL for each"
            )
        try:
            with self.index.db.snapshot():
                self._refresh()
                return self.index.find(request, members=self._member)
        except EmptyIndexError:
            return Judged([], note=EMPTY_NOTE)

    def _member(self, where: str) -> AbstractContextManager[Index]:
        return nullcontext(self._ensemble[where])

    def search(
        self,
        query: Query,
        k: int,
        offset: int,
        filters: Filter | None,
        explain: bool = False,
        min_relevance: MinRelevance = "off",
        mode: Mode = "hybrid",
        sort: Sort = "relevance",
    ) -> Judged:
        """One page of images for a query: hits offset..offset+k, those under
        `min_relevance` left out (and counted in `weaker`)."""
        return self.find(
            SearchRequest(
                query, k=k, offset=offset, filters=filters, explain=explain,
                min_relevance=min_relevance, mode=mode, sort=sort,
            )
        )  # fmt: skip

    def search_upload(
        self,
        data: bytes,
        text: str | None,
        image_weight: float,
        k: int,
        offset: int,
        filters: Filter | None,
        min_relevance: MinRelevance = "off",
        sort: Sort = "relevance",
    ) -> Judged:
        with _uploaded(data) as path:
            query = Query.of(text=text, image=path, image_weight=image_weight)
            try:
                return self.search(
                    query, k, offset, filters, min_relevance=min_relevance, sort=sort
                )
            except QueryImageError as exc:
                raise upload_error(exc) from None

    def similar(
        self,
        item_id: int,
        k: int,
        offset: int,
        filters: Filter | None,
        min_relevance: MinRelevance = "off",
        sort: Sort = "relevance",
    ) -> Judged:
        """Images like an indexed one, the image itself left out."""
        self.item(item_id)
        query = Query((QueryPart("item", item_id),))
        found = self.search(
            query, offset + k + 1, 0, filters, min_relevance=min_relevance, sort=sort
        )
        others = [h for h in found.hits if h.id != item_id]
        return Judged(others[offset : offset + k], found.weaker, found.note)

    def texts_for(self, query: Query, k: int, kind: str | None) -> tuple[list[TextHit], str | None]:
        self._refresh()
        try:
            return self.index.search_texts(query=query, k=k, kind=kind), None
        except EmptyIndexError as exc:
            return [], str(exc)

    def texts_for_upload(
        self, data: bytes, k: int, kind: str | None
    ) -> tuple[list[TextHit], str | None]:
        with _uploaded(data) as path:
            try:
                return self.texts_for(Query.of(image=path), k, kind)
            except QueryImageError as exc:
                raise upload_error(exc) from None

    def ask_upload(
        self, data: bytes, question: str, answers: list[str] | None, top: int
    ) -> Answers:
        """A question about an uploaded picture (`Index.ask`)."""
        with _uploaded(data) as path:
            try:
                return self.index.ask(path, question, answers=answers, top=top)
            except QueryImageError as exc:
                raise upload_error(exc) from None

    def tags(self, item_id: int, k: int) -> tuple[Item, list[tuple[str, float]]]:
        item = self.item(item_id)
        self._servable(item)  # tagging reads the file by its path
        if self.settings.read_only and self.index.texts.table.source(BUILTIN_VOCABULARY) is None:
            # Tagging would first embed and store the ~11,000 prompts of the vocabulary.
            raise ReadOnlyError(
                "zero-shot tags need the tag vocabulary embedded into the index once, and this "
                f"server is read-only; run `clipsearch tag {item.path} --db "
                f"{self.index.label}` once (stored tags are in GET /api/items/{item_id})"
            )
        return item, self.index.tag([item.path], top=k)[0].tags

    # -- items and files ------------------------------------------------------------------

    def item(self, item_id: int) -> Item:
        found = self.index.items([item_id])
        if not found:
            raise NotFoundError(f"no image with id {item_id} in this index")
        return found[0]

    def file(self, item_id: int) -> Path:
        """The original file of an indexed image, if it may be served."""
        return self._servable(self.item(item_id))

    def thumbnail(self, item_id: int, size: int, time: float | None = None) -> tuple[Path, str]:
        item = self.item(item_id)
        try:
            found = self.thumbnails.get(self._servable(item), item.sha256, size, time)
            return found, item.sha256
        except ImageDecodeError as exc:
            raise UnsupportedImageError(
                f"image {item_id} cannot be decoded: {exc.reason}"
            ) from None

    def _roots(self) -> list[Path]:
        """The indexed folders, read again only after a write (an index from before roots
        were recorded derives them from every stored path, which is slow at scale)."""
        generation = self.index.generation()
        if self._roots_cache is None or self._roots_cache[0] != generation:
            self._roots_cache = (generation, self.index.roots())
        return self._roots_cache[1]

    def _servable(self, item: Item) -> Path:
        real = inside_roots(item.path, self._roots())
        if real is None:
            raise ForbiddenFileError(
                f"image {item.id} resolves to a file outside the indexed folders; "
                "it is searchable but not served"
            )
        if not real.is_file():
            raise NotFoundError(
                f"image {item.id} ({item.path}) is no longer on disk; re-index its folder"
            )
        return real

    # -- facts and jobs -------------------------------------------------------------------

    def stats(self) -> IndexStats:
        return self.index.stats()

    def check_model(self, expected: str | None) -> None:
        """409-worthy when a client expects another model than the index's."""
        info = self.index.model_info
        if expected is None or info is None:
            return
        try:
            identity = model_identity(expected)
        except ClipsearchError:
            identity = expected
        if expected not in (info.spec, info.identity) and identity != info.identity:
            raise ModelMismatchError(
                f"this index was built with {info.spec} ({info.identity}); the request "
                f"expects {expected}"
            )

    def _run_job(self, paths: list[str], report: Callable[[Progress], None]) -> IndexSummary:
        return self.index.add(paths, on_progress=report)

    # -- internals ------------------------------------------------------------------------

    def _warm(self) -> None:
        """Build the in-memory indexes now, not in the first request."""
        if self.index.model_info is None:
            return
        with suppress(EmptyIndexError):
            self.index.vector_index()
        if self.index.texts.table.count():
            self.index.texts.vector_index()

    def _note_generation(self) -> None:
        self._seen_generation = self.index.generation()
        if self._batcher is None and self.settings.batch_queries and self.index.model_info:
            # The first job on a new index loaded the model: batch queries from now on.
            self._batcher = _batching(self.index)

    def _refresh(self) -> None:
        """Reload the FAISS caches when another process changed the database."""
        if self.jobs.running() is not None:
            return  # our own job keeps the live index current
        generation = self.index.generation()
        if generation == self._seen_generation:
            return
        with self._refresh_lock:
            if generation != self._seen_generation:
                self.index.refresh()
                self._seen_generation = generation


@contextmanager
def _uploaded(data: bytes) -> Iterator[str]:
    """An upload in a temporary file for the time of one query (the decoder reads files)."""
    if not data:
        raise UnsupportedImageError("the upload is empty; send an image file")
    with tempfile.NamedTemporaryFile(prefix="clipsearch-query-") as tmp:
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def _open(settings: ServerSettings) -> tuple[Index, BatchingEncoder | None]:
    """The index with its model loaded (wrapped for query batching), or without a model for
    a new index (then the first job loads the one it needs)."""
    index = open_index(
        settings.db, settings.model, cache_dir=settings.cache_dir, workers=settings.workers,
        device=settings.device, runtime=settings.runtime, precision=settings.precision,
        create=settings.create,
    )  # fmt: skip
    try:
        if settings.model is None and index.model_info is None:
            return index, None
        _ = index.encoder  # loaded now, not in the first request
        batcher = _batching(index) if settings.batch_queries else None
        if settings.shards:
            _shard(index, settings)
    except BaseException:
        index.close()
        raise
    return index, batcher


class QueryTexts:
    """The index's query cache, for the model being served: the batcher's `TextCache`
    (new entries are written `later`, a second's together)."""

    def __init__(self, cache: QueryCache, identity: str) -> None:
        self.cache = cache
        self.identity = identity

    def held(self, texts: list[str]) -> dict[str, Vector]:
        return self.cache.held(self.identity, texts)

    def get(self, texts: list[str]) -> dict[str, Vector]:
        return self.cache.get(self.identity, texts)

    def put(self, vectors: dict[str, Vector]) -> None:
        self.cache.put(self.identity, vectors, later=True)


def text_threads() -> int:
    """Threads for a server's text encoder (an exported model): every core but one, which
    is left to the searches, HTTP and the batcher; on 2 cores one thread did better under
    load than two fighting the searches for the same cores (benchmarks/results/
    serve_bars_*.md). `CLIPSEARCH_THREADS` overrides it."""
    return max(1, (os.cpu_count() or 1) - 1)


def _member(where: str, settings: ServerSettings) -> Index:
    """An ensemble index, held open with its model loaded (not by the first requests at
    once: a lazy load raced), searched as the main index is."""
    try:
        member = open_index(
            where, create=False, cache_dir=settings.cache_dir, device=settings.device,
            workers=settings.workers,
        )  # fmt: skip
    except IndexNotFoundError as exc:
        raise ConfigError(f"--ensemble {locate(where).label}: {exc}") from None
    try:
        _ = member.encoder
    except BaseException:
        member.close()
        raise
    return member


def _batching(index: Index) -> BatchingEncoder:
    """A query batcher over the index's encoder (which encodes through it from now on)."""
    encoder = index.encoder
    if hasattr(encoder, "text_threads") and not os.environ.get("CLIPSEARCH_THREADS"):
        encoder.text_threads = text_threads()
    batcher = BatchingEncoder(encoder, cache=QueryTexts(index.queries.cache, encoder.info.identity))
    index.use_encoder(batcher)
    return batcher


def _shard(index: Index, settings: ServerSettings) -> None:
    """Search through vector shards in Ray actors, built from the store before serving."""
    from clipsearch.cluster import ShardedVectors

    try:
        sharded = ShardedVectors(index.location.address, settings.shards, settings.ray or "auto")
        sharded.wait_ready()
    except BaseException:
        index.close()
        raise
    index.use_vector_index(sharded)


def upload_error(exc: QueryImageError) -> ClipsearchError:
    """An upload's decode failure as the error its status code says."""
    if exc.reason.startswith(TOO_LARGE):
        return UploadTooLargeError(f"the uploaded image is too large: {exc.reason}")
    return UnsupportedImageError(f"the upload is not a readable image: {exc.reason}")
