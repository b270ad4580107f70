"""`Index`: the library's one entry point. The CLI and the server are thin faces of it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.adapters.space import SearchSpace, stored_space
from clipsearch.adapters.table import ACTIVE as ACTIVE_ADAPTER
from clipsearch.adapters.table import AdapterTable
from clipsearch.errors import (
    EmptyIndexError,
    ModelMismatchError,
    QueryError,
)
from clipsearch.facts import (
    IMAGE_VECTORS,
    IndexStats,
    IndexSummary,
    Progress,
    check_model,
    check_vectors_kind,
    recorded_info,
    runtime_choice,
)
from clipsearch.indexer.decode import DEFAULT_MAX_PIXELS
from clipsearch.indexer.options import DEFAULT_MAX_FRAMES, PipelineOptions
from clipsearch.items import Item, indexed_roots, read_items
from clipsearch.models import DEFAULT_MODEL, Encoder, ModelInfo, load_encoder, model_identity
from clipsearch.models.base import stack_pixels
from clipsearch.models.runtime import auto_int8
from clipsearch.search import hybrid, pipeline
from clipsearch.search.embedding import QueryEmbedder
from clipsearch.search.filters import Filter
from clipsearch.search.hybrid import Mode
from clipsearch.search.judge import Judged, RelevanceJudge
from clipsearch.search.query import DEFAULT_NEGATIVE_WEIGHT, Query
from clipsearch.search.relevance import MinRelevance, Null, parse_min_relevance
from clipsearch.search.request import SearchRequest
from clipsearch.search.rerank import Reranker
from clipsearch.search.searcher import Hit, positions_of
from clipsearch.search.sorting import Sort, parse_sort
from clipsearch.storage import vector_index as vi
from clipsearch.storage.db import Database
from clipsearch.storage.faiss_index import VectorIndex
from clipsearch.storage.frames import ImageVectors, video_count
from clipsearch.storage.keyword_index import Fts5Keywords, KeywordIndex, Pace
from clipsearch.storage.location import locate
from clipsearch.storage.query_cache import QueryCache
from clipsearch.storage.vectors import VectorTable
from clipsearch.texts import TextCollection, TextHit

if TYPE_CHECKING:
    from clipsearch.adapters.fit import FitSettings
    from clipsearch.adapters.model import Adapter
    from clipsearch.adapters.tune import TuneResult
    from clipsearch.asking import Answers
    from clipsearch.indexer.runners import Runner
    from clipsearch.tagging import TagResult
    from clipsearch.video.summary import Summary


class RemoteVectors(Protocol):
    """Image vectors searched elsewhere (shards in a cluster), in a given search space."""

    def at(self, identity: str) -> VectorIndex: ...


__all__ = ["Index", "IndexStats", "IndexSummary", "open_index"]


class Index:
    """An index: its database (SQLite in a folder, or PostgreSQL by URL) plus the FAISS
    caches (in the folder, or in a local cache folder for a server database).

    The model is loaded on first need (adding images, or a query); `stats` never loads it.
    Pass `encoder` to inject one (tests, custom models); otherwise `model` is a spec string,
    defaulting to the model the index was built with, or `DEFAULT_MODEL` for a new index.

    Every method that changes the index holds its writer lock (`write.lock`) throughout;
    `wait` is how long to queue behind another writer (0: fail at once with
    `IndexBusyError`, None: as long as it takes). Searching takes no lock.
    """

    def __init__(
        self,
        db: Database,
        *,
        model: str | None = None,
        encoder: Encoder | None = None,
        device: str | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        options: PipelineOptions | None = None,
        wait: float | None = 0.0,
    ) -> None:
        self.db = db
        #: The searchable image space: image rows and videos' keyframes (`storage.frames`).
        self.searchable = ImageVectors(db)
        self.location = db.location
        self.writer_lock = db.writer_lock(wait)
        self._cache_dir: Path | None = None
        self.device = device
        self.runtime, self.precision = runtime, precision
        self.options = options or PipelineOptions(progress=False)
        self._encoder = encoder
        self._loading = threading.Lock()  # one thread loads the model; the others wait for it
        self._vectors: vi.IdIndex | None = None
        self._texts: TextCollection | None = None
        self._space: SearchSpace | None = None
        self._space_key: tuple[ModelInfo, str | None] | None = None
        self._vectors_identity = ""
        self._remote: RemoteVectors | None = None
        self._keywords: KeywordIndex | None = None
        self.queries = QueryEmbedder(
            self, QueryCache(db), self.options.max_pixels, self.options.progress
        )
        recorded = recorded_info(db.get_meta())
        self._model_spec = model or (recorded.spec if recorded else DEFAULT_MODEL)
        if recorded is not None:
            asked = encoder.info.identity if encoder else None
            if asked is None and model is not None:
                asked = model_identity(model)
            check_model(self.label, recorded, asked, model)

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.queries.cache.flush()
        if self._keywords is not None:
            self._keywords.close()
        self.db.close()

    @contextlib.contextmanager
    def writing(self, shared: bool = False) -> Iterator[None]:
        """Hold the writer lock (re-entrant) for a change to this index; `shared` for
        changes that may run beside each other where the store allows (indexing runs on
        PostgreSQL). On entry the live FAISS index is dropped if another process wrote
        since it was loaded."""
        with self.writer_lock.holding(shared):
            if self._vectors_lag():
                self.refresh()
            yield

    def _vectors_lag(self) -> bool:
        """Whether the in-memory FAISS index holds another state than the database's."""
        return self._vectors is not None and self._vectors.generation != self.db.generation()

    @property
    def label(self) -> str:
        """How messages name this index: its folder, or its URL without a password."""
        return self.location.label

    @property
    def cache_dir(self) -> Path:
        """The folder of this index's local caches (FAISS files, thumbnails)."""
        if self._cache_dir is None:
            self._cache_dir = self.db.cache_dir()
        return self._cache_dir

    # -- collaborators, loaded on first need ----------------------------------------------

    @property
    def model_info(self) -> ModelInfo | None:
        return recorded_info(self.db.get_meta())

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._loading:
                if self._encoder is None:
                    choice = runtime_choice(self.db.get_meta(), self.runtime, self.precision)
                    self._encoder = load_encoder(
                        self._model_spec, device=self.device, runtime=choice
                    )
        return self._encoder

    def use_encoder(self, encoder: Encoder) -> None:
        """Encode with this encoder from now on (one for the same model: a batching wrapper)."""
        if self._encoder is not None and encoder.info.identity != self._encoder.info.identity:
            raise ModelMismatchError(
                f"cannot switch the encoder from {self._encoder.info.spec!r} "
                f"to {encoder.info.spec!r}"
            )
        self._encoder = encoder

    @property
    def texts(self) -> TextCollection:
        """The index's texts: captions, records, vocabularies, sidecar descriptions."""
        if self._texts is None:
            self._texts = TextCollection(self)
        return self._texts

    @property
    def adapters(self) -> AdapterTable:
        """The adapters fitted for this index (`clipsearch tune`), and which one is active."""
        return AdapterTable(self.db)

    def space(self) -> SearchSpace:
        """The space searches run in: the model's, or the active adapter's. Read afresh on
        every call (one small query), so an adapter switched by another process applies."""
        meta = self.db.get_meta()
        info = recorded_info(meta)
        key = (info, meta.get(ACTIVE_ADAPTER))
        if self._space is None or self._space_key != key:
            space = stored_space(self.db, meta)
            if space is None:
                raise EmptyIndexError(
                    f"the index at {self.label} is empty; add images with "
                    f"`clipsearch index PATH --db {self.label}`"
                )
            self._space, self._space_key = space, (space.info, key[1])
        return self._space

    def use_adapter(self, adapter_id: int | None) -> None:
        """Apply this stored adapter from now on (None: none). The FAISS indexes are rebuilt
        from the stored vectors on next use: a matrix multiply, no image is decoded."""
        with self.writing():
            self.adapters.set_active(adapter_id)

    def remove_adapter(self, adapter_id: int) -> None:
        """Delete a stored adapter (the active one: searches return to the raw space)."""
        with self.writing():
            self.adapters.remove(adapter_id)

    def tune(
        self,
        pairs_csv: str | os.PathLike[str],
        settings: FitSettings | None = None,
        *,
        images: str | os.PathLike[str] | None = None,
        force: bool = False,
        activate: bool = True,
    ) -> TuneResult:
        """Fit an adapter on an `image,caption` CSV of indexed photos; see `adapters.tune`."""
        from clipsearch.adapters.tune import tune
        from clipsearch.models.runtime.load import require_torch

        require_torch("fitting an adapter (clipsearch tune)")
        with self.writing():
            return tune(self, pairs_csv, settings, images=images, force=force, activate=activate)

    def reduce(self, dims: int, *, whiten: bool = False, activate: bool = True) -> Adapter:
        """A PCA adapter to `dims` dimensions (a smaller FAISS index); see `adapters.pca`."""
        from clipsearch.adapters.tune import reduce

        with self.writing():
            return reduce(self, dims, whiten=whiten, activate=activate)

    def vector_index(self, space: SearchSpace | None = None) -> vi.IdIndex:
        """The FAISS index of the images, current with the database. While this process
        writes (an indexing job), its live index is current by construction; otherwise one
        that lags the database (another process wrote, or a search thread built it from an
        older state while another refreshed) is replaced. `space`: the search space if the
        caller has just read it (each read is a query: a round trip on PostgreSQL)."""
        space = space or self.space()
        stale = not self.writer_lock.held and self._vectors_lag()
        if self._vectors is None or stale or self._vectors_identity != space.identity:
            self._vectors = self.vector_backend(space).open()
            self._vectors_identity = space.identity
        return self._vectors

    def use_vector_index(self, remote: RemoteVectors | None) -> None:
        """Search image vectors through `remote` (e.g. `clipsearch.cluster.ShardedVectors`,
        shards in Ray actors) instead of this process's FAISS index; None: back to local.
        Writes still go to the local index and the store; exact rescoring stays here."""
        self._remote = remote

    def searched_vectors(self, space: SearchSpace | None = None) -> VectorIndex:
        """The vector index searches run on: the remote one if set, else the local one."""
        space = space or self.space()
        if self._remote is not None:
            return self._remote.at(space.identity)
        return self.vector_index(space)

    def image_table(self) -> VectorTable:
        """The stored image vectors as the search space sees them (through the adapter)."""
        return self.space().image_store(self.searchable)

    def text_table(self) -> VectorTable:
        """The stored text vectors, as the model made them."""
        return self.texts.table

    def vector_backend(self, space: SearchSpace | None = None) -> vi.FaissBackend:
        """The backend that owns the images' FAISS cache, in the current search space."""
        space = space or self.space()
        return vi.FaissBackend(
            space.image_store(self.searchable), self.cache_dir, space.identity, space.dim,
            choice=self.index_choice(),
        )  # fmt: skip

    def refresh(self) -> None:
        """Forget the in-memory FAISS indexes, so the next search loads them afresh (from
        the saved cache when it is current): for changes made by another process."""
        self._vectors = None
        self._texts = None

    def index_choice(self) -> vi.IndexChoice:
        """The FAISS index type this index should have now (`clipsearch reindex` sets it)."""
        meta = self.db.get_meta()
        nprobe = int(meta["nprobe"]) if meta.get("nprobe") else None
        return vi.choose_index(meta.get("index_type", "auto"), self.db.count(), nprobe)

    def store_vectors_as(self, name: str) -> None:
        """Keep image vectors as float32 (exact) or float16 (half the database size; cosines
        move by about 1e-3), converting the stored ones; FAISS is rebuilt on next use."""
        with self.writing():
            if name != self.db.get_meta().get("vector_dtype", "float32"):
                self.db.convert_vectors(name)
                self._vectors = None

    def reindex(self, index_type: str | None = None, nprobe: int | None = None) -> vi.IdIndex:
        """Rebuild the FAISS index from the stored vectors, as `index_type` (auto, flat,
        ivf-sq8) from now on if given; `nprobe`: IVF lists scanned per query."""
        if index_type is not None:
            vi.choose_index(index_type, 0)  # a bad name fails before anything changes
        if nprobe is not None and nprobe < 1:
            raise QueryError(f"nprobe must be at least 1, got {nprobe}")
        with self.writing():
            if index_type is not None:
                self.db.set_meta(index_type=index_type)
            if nprobe is not None:
                self.db.set_meta(nprobe=str(nprobe))
            vi.CacheFiles(self.cache_dir).invalidate()
            self._vectors = None
            return self.vector_index()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """Texts as query vectors in the search space (through the active adapter)."""
        return self.space().texts(self.encode_raw_texts(texts))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """Query texts as vectors in the search space, through the query cache (a text seen
        before needs no model)."""
        return self.space().texts(self.queries.raw_text_queries(list(texts)))

    def encode_raw_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """The model's embeddings of `texts` (a progress bar when there are many)."""
        return self.queries.raw_texts(texts)

    def stored_image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]:
        """The model's stored vectors of these images, in the order of `ids`."""
        found, _, matrix = self.db.vectors_for(list(ids))
        rows = positions_of(found, np.asarray(ids))
        if (rows < 0).any():
            missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
            raise QueryError(f"no image with id {missing[0]} in this index")
        return np.asarray(matrix[rows])

    def image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]:
        """Stored images as vectors in the search space, in the order of `ids`."""
        return self.space().images(self.stored_image_vectors(ids))

    def record_model(self) -> ModelInfo:
        """The index's model, recorded on first write (images or texts)."""
        info = self.model_info
        if info is None:
            mine = self.encoder.info
            # Two first runs may race here: the first to commit records its model, and the
            # other is told if it differs (instead of mixing two models' vectors).
            self.db.set_meta_if_absent(
                model_spec=mine.spec, model_identity=mine.identity, dim=str(mine.dim)
            )
            info = self.model_info
            assert info is not None
            check_model(self.label, info, mine.identity, mine.spec)
        return info

    def settle_precision(self, paths: Sequence[str]) -> None:
        """Before a new index records its first image vectors: let an encoder at `auto`
        precision measure int8 against fp32 on these photos (the collection's first ones)."""
        settle = getattr(self.encoder, "settle_precision", None)
        if settle is None or getattr(self.encoder, "precision", None) != "auto":
            return
        from clipsearch.indexer.stages import Reader

        reader = Reader.for_encoder(self.encoder, self.options.max_pixels)
        decoded = [reader(path) for path in list(paths)[: auto_int8.SAMPLE_PHOTOS]]
        pixels = [d.pixels for d in decoded if not isinstance(d, str)]
        if pixels:
            settle(stack_pixels(pixels))

    def record_image_vectors(self) -> None:
        """Record the kind of image vectors the encoder makes (fp32 from any runtime, or
        int8 of one runtime), or refuse to mix another kind into the index."""
        kind = getattr(self.encoder, "vectors_kind", "fp32")
        self.db.set_meta_if_absent(**{IMAGE_VECTORS: kind})
        check_vectors_kind(self.label, self.db.get_meta(), kind)

    # -- indexing -------------------------------------------------------------------------

    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        runner: Runner | None = None,
        ocr: bool = False,
    ) -> IndexSummary:
        """Index (or re-index) image files and folders, incrementally; see `IndexSummary`.
        `on_progress` is told the phase and, while embedding, files done out of total;
        `runner`: where files are read and encoded (default: worker processes here; a
        `clipsearch.cluster.RayRunner` for a Ray cluster); `ocr`: also read the text in
        the photos not read yet (Tesseract; see `clipsearch.indexer.ocr`)."""
        from clipsearch.indexer.update import add_paths

        report = on_progress or (lambda _progress: None)
        if ocr:
            from clipsearch.indexer.ocr import require_tesseract

            require_tesseract()  # before any work, not after an hour of embedding
        with self.writing(shared=True):
            summary = add_paths(self, paths, report, runner)
            if ocr:
                summary.text_in_photos = self._read_texts(paths, report)
            return summary

    def _read_texts(
        self, paths: Iterable[str | os.PathLike[str]], report: Callable[[Progress], None]
    ) -> dict[str, Any]:
        from clipsearch.indexer.ocr import read_texts

        roots = [Path(os.path.abspath(Path(p).expanduser())) for p in paths]
        done = read_texts(
            self.db, roots, self.options.max_pixels, max(1, self.options.workers),
            lambda n, total: report(Progress("reading text", n, total)),
        )  # fmt: skip
        return dataclasses.asdict(done)

    # -- search ---------------------------------------------------------------------------

    def embed_query(
        self,
        text: str | None = None,
        image: str | os.PathLike[str] | None = None,
        *,
        query: Query | None = None,
    ) -> np.ndarray[Any, Any]:
        """The unit query vector: of a text and/or an image file, or of a fused `Query`."""
        return self.queries.query(query if query is not None else Query.of(text=text, image=image))

    def uncached_query_texts(self, texts: Sequence[str]) -> list[str]:
        """The query texts (once each) that the query cache lacks: those a search by them
        would have to run through the model."""
        return self.queries.cached(texts)[1]

    def cache_query_texts(
        self, vectors: dict[str, np.ndarray[Any, Any]], later: bool = False
    ) -> None:
        """Keep model embeddings of query texts (as `encoder.encode_texts` gives them);
        `later`: in memory now, in the database with the others of the next second."""
        self.queries.remember(vectors, later)

    def embed_image_file(self, path: Path) -> np.ndarray[Any, Any]:
        """An image file (indexed or not) as a vector in the search space."""
        return self.queries.image_file(path)

    def search(
        self,
        text: str | None = None,
        image: str | os.PathLike[str] | None = None,
        *,
        query: Query | None = None,
        like: Iterable[str | os.PathLike[str]] = (),
        unlike: Iterable[str | os.PathLike[str]] = (),
        not_text: Iterable[str] = (),
        image_weight: float = 1.0,
        negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
        rerankers: Sequence[Reranker] = (),
        **request: Any,
    ) -> list[Hit]:
        """Images matching a text and/or example images (`like`, weighted by
        `image_weight` against the text), away from `unlike` images and `not_text` words
        (`negative_weight` each), or a fused `Query`, best first. The other keywords are
        those of `SearchRequest` (k, offset, filters, mode, min_relevance, sort, diverse,
        collapse, ensemble, ensemble_weight, fusion, explain); `rerankers`: stages of your
        own after them. See `find` for what comes back beside the hits."""
        parts = {"text": text, "image": image, "like": like, "unlike": unlike,
                 "not_text": not_text}  # fmt: skip
        given = [name for name, value in parts.items() if value not in (None, (), [])]
        if query is not None and given:
            raise QueryError(f"give a query= or its parts ({', '.join(given)}), not both")
        asked = query or Query.of(
            text=text, image=image, image_weight=image_weight, like=like, unlike=unlike,
            not_text=not_text, negative_weight=negative_weight,
        )  # fmt: skip
        return self.find(SearchRequest(asked, **request), rerankers=rerankers).hits

    def find(
        self,
        request: SearchRequest,
        *,
        rerankers: Sequence[Reranker] = (),
        members: Callable[[str], contextlib.AbstractContextManager[Index]] | None = None,
    ) -> Judged:
        """Run one `SearchRequest`: its page of hits (offset..offset+k), with how many
        weaker ones the relevance cut left out and its note ("no good match"). Ensemble
        indexes are opened by `members` (default: opened here for this search, closed
        after; a server passes the ones it holds open)."""
        depth = request.offset + request.k
        if not request.ensemble:
            judged = self.search_judged(
                query=request.query, k=depth, filters=request.filters,
                rerankers=[*request.rerankers(), *rerankers], explain=request.explain,
                min_relevance=request.min_relevance, mode=request.mode, sort=request.sort,
            )  # fmt: skip
            return dataclasses.replace(judged, hits=judged.hits[request.offset :])
        from clipsearch.search.ensemble import Ensemble, Member

        if rerankers:
            raise QueryError("re-rankers reorder one index's list, not an ensemble's")
        opener = members or (lambda where: open_index(where, create=False))
        with contextlib.ExitStack() as stack:
            others = [stack.enter_context(opener(where)) for where in request.ensemble]
            fused = Ensemble(
                [Member(self), *(Member(o, request.ensemble_weight) for o in others)],
                request.fusion,
            )
            hits = fused.search(request.query, depth, request.filters, request.explain)
        return Judged(hits[request.offset :])

    def search_judged(
        self,
        text: str | None = None,
        image: str | os.PathLike[str] | None = None,
        *,
        query: Query | None = None,
        k: int = 10,
        filters: Filter | None = None,
        rerankers: Sequence[Reranker] = (),
        explain: bool = False,
        min_relevance: MinRelevance | str = "off",
        mode: Mode | str = "hybrid",
        sort: Sort | str = "relevance",
    ) -> Judged:
        """`search`, with what the relevance cut left out: how many weaker hits, and a note
        ("no good match") when it left nothing."""
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        rule = parse_min_relevance(min_relevance)
        how = hybrid.parse_mode(mode)
        order = parse_sort(sort)
        asked = query if query is not None else Query.of(text=text, image=image)
        with self.db.snapshot():  # one read of the facts and counters for the whole search
            return pipeline.judged_search(
                self, asked, k=k, filters=filters, rerankers=rerankers, explain=explain,
                rule=rule, mode=how, order=order,
            )  # fmt: skip

    @functools.cached_property
    def relevance(self) -> RelevanceJudge:
        """Calibrated relevance of this index's hits (`judge` a ranked list)."""
        return RelevanceJudge(self)

    def text_null(self) -> Null:
        """The model's scores for unrelated text-image pairs in this index (calibrated once)."""
        return self.relevance.calibration().text

    def search_texts(
        self,
        text: str | None = None,
        image: str | os.PathLike[str] | None = None,
        *,
        query: Query | None = None,
        k: int = 10,
        kind: str | None = None,
        source: str | None = None,
        distinct: bool = True,
    ) -> list[TextHit]:
        """Texts nearest to an image (retrieval captioning), a text, or a fused `Query`;
        `kind` ("captions", "jsonl", "vocabulary", "sidecar") or `source` (a file added with
        `texts.add`) restrict which texts; `distinct`: repeated texts appear once."""
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        with self.db.snapshot():
            self.texts.vector_index()  # no texts: fails here, before a model is loaded
            vector = self.embed_query(text, image, query=query)
            return self.texts.search_vectors(vector[None, :], k, kind, source, distinct)[0]

    def summarize(
        self, video: int | str | os.PathLike[str], k: int = 8, *, query: str | None = None
    ) -> Summary:
        """The k frames that stand for a video (an indexed one by id or path, or any video
        file, decoded now), optionally drawn towards a text `query`; see
        `clipsearch.video.select`. `contact_sheet(summary, path)` draws them."""
        from clipsearch.video.summary import summarize, video_frames

        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        path, frames, duration = video_frames(self, video)
        asked = (query, self.embed_query(query)) if query else None
        return summarize(path, frames.times, frames.vectors, duration, k, asked)

    def ask(
        self,
        image: int | str | os.PathLike[str],
        question: str,
        *,
        answers: Sequence[str] | None = None,
        top: int = 5,
    ) -> Answers:
        """Answer a question about an indexed item (id or path) or any image file, zero-shot:
        yes/no questions against a calibrated contrast (or "not sure"), others by ranking
        `answers` (default: the tag vocabulary); see `clipsearch.asking`."""
        from clipsearch.asking import ask

        return ask(self, image, question, answers, top)

    def tag(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        top: int = 5,
        vocabulary: str | os.PathLike[str] | None = None,
        store: bool = False,
        calibrated: bool = True,
    ) -> list[TagResult]:
        """Zero-shot tags for image files or indexed folders; see `clipsearch.tagging`."""
        from clipsearch.tagging import tag_images

        with self.writing() if store else contextlib.nullcontext():
            return tag_images(
                self, paths, top=top, vocabulary=vocabulary, store=store, calibrated=calibrated
            )

    def search_vectors(
        self,
        queries: np.ndarray[Any, Any],
        k: int = 10,
        filters: Filter | None = None,
        rerankers: Sequence[Reranker] = (),
        explain: bool = False,
        allowed: np.ndarray[Any, Any] | None = None,
    ) -> list[list[Hit]]:
        """Search with ready-made unit vectors (Q, dim) in this index's space, in one batch;
        `rerankers` (e.g. `MMR()`, `CollapseNearDuplicates()`) run after exact rescoring;
        `allowed`: only these ids (with `filters`: those of them that match)."""
        with self.db.snapshot():
            return pipeline.vector_search(self, queries, k, filters, rerankers, explain, allowed)

    def filter_ids(self, filters: Filter | None) -> np.ndarray[Any, Any] | None:
        """The ids of the images a metadata filter lets through (None: no filter)."""
        if filters is None or filters.is_empty():
            return None
        return self.db.ids_matching(filters.resolved())

    def keyword_index(self) -> KeywordIndex:
        """The full-text index of the images' words: SQLite FTS5 in a cache file beside the
        FAISS files, or PostgreSQL's full-text search in a PostgreSQL store."""
        if self._keywords is None:
            if self.location.is_sqlite:
                self._keywords = Fts5Keywords(self.db, self.cache_dir, self._keyword_pace())
            else:
                from clipsearch.storage.pg_keywords import PostgresKeywords

                self._keywords = PostgresKeywords(self.db, self._keyword_pace())
        return self._keywords

    def _keyword_pace(self) -> Pace:
        return Pace(writing=lambda: self.writer_lock.held)

    # -- facts ----------------------------------------------------------------------------

    def items(self, ids: Sequence[int]) -> list[Item]:
        """Indexed images by id (those that exist, in the order asked), with their tags."""
        return read_items(self.db, ids)

    def count(self) -> int:
        """Images in the index."""
        return self.db.count()

    def generation(self) -> int:
        """The images' write counter: it moves whenever any process changes them."""
        return self.db.generation()

    def roots(self) -> list[Path]:
        """The folders (and single files) this index was built from."""
        return indexed_roots(self.db)

    def stats(self) -> IndexStats:
        meta = self.db.get_meta()
        info = recorded_info(meta)
        cache = vi.CacheFiles(self.cache_dir)
        stamp = cache.stamp()
        return IndexStats(
            directory=self.label,
            store="sqlite" if self.location.is_sqlite else "postgresql",
            cache_dir=str(self.cache_dir),
            count=self.db.count(),
            videos=video_count(self.db),
            keyframes=self.searchable.frame_count(),
            texts=self.texts.table.count(),
            model=info.spec if info else None,
            model_identity=info.identity if info else None,
            dim=info.dim if info else None,
            adapter=self.space().adapter_label if info else None,
            index_type=stamp.kind if stamp is not None else "none (built on first search)",
            vector_dtype=meta.get("vector_dtype", "float32"),
            image_vectors=meta.get(IMAGE_VECTORS, "fp32"),
            faiss_gpus=vi.faiss_gpu_count(),
            database_bytes=self.db.size_bytes(),
            vector_index_bytes=cache.size(),
        )


def open_index(
    db: str | os.PathLike[str],
    model: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    create: bool = True,
    encoder: Encoder | None = None,
    device: str | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    batch_size: int = 32,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    wait: float | None = 0.0,
    max_frames_per_video: int = DEFAULT_MAX_FRAMES,
) -> Index:
    """Open (or create) the index at `db`: a folder (SQLite) or a PostgreSQL URL
    (`postgresql+psycopg://USER@HOST/NAME`); `cache_dir` holds the local caches of a server
    database (default: the user's cache folder); `runtime` (torch, onnx, openvino; default
    auto) and `precision` (fp32, int8; default: as the index records) say how the model runs,
    see `clipsearch.models.runtime`; `max_frames_per_video`: keyframes kept per video at
    most (`clipsearch.video`). See `Index` for the other arguments."""
    database = Database.open(locate(db, cache_dir), create=create, wait=wait)
    try:
        options = PipelineOptions(batch_size, workers, max_pixels, progress, max_frames_per_video)
        return Index(
            database, model=model, encoder=encoder, device=device, runtime=runtime,
            precision=precision, options=options, wait=wait,
        )  # fmt: skip
    except BaseException:
        database.close()
        raise
