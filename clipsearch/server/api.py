"""The HTTP API's routes: each one parses, calls `SearchService`, and shapes the JSON.

Nothing blocking runs on the event loop. Plain `def` routes run on FastAPI's worker threads.
Searches that may encode a text are `async`: they await the query batcher (holding no thread
while their batch forms), then run the search itself on a worker thread. The dependencies
are `async` because they only read app state (a sync one would cost a thread hop each).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi import Path as PathParam
from fastapi import Query as Param
from fastapi.responses import FileResponse, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from clipsearch import __version__
from clipsearch.search.filters import Filter
from clipsearch.search.judge import Judged
from clipsearch.search.query import Query, QueryPart
from clipsearch.search.relevance import parse_min_relevance
from clipsearch.search.request import SearchRequest
from clipsearch.server import liveness
from clipsearch.server.admission import check_deadline
from clipsearch.server.errors import NotFoundError, ReadOnlyError, UploadTooLargeError
from clipsearch.server.query_params import QueryModel
from clipsearch.server.schemas import (
    MAX_ID,
    MAX_RESULTS,
    MODE_HELP,
    ErrorOut,
    FilterFields,
    FilterIn,
    HealthOut,
    HitOut,
    ItemOut,
    JobIn,
    JobOut,
    QueryBatchingOut,
    RankingFields,
    SearchIn,
    SearchOut,
    StatsOut,
    TagOut,
    TagsOut,
    TextHitOut,
    TextSearchOut,
)
from clipsearch.server.service import SearchService
from clipsearch.server.settings import ServerSettings
from clipsearch.server.thumbnails import ThumbnailSize

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 500)
}
router = APIRouter(prefix="/api", responses=_ERRORS)

K = Annotated[int, Param(ge=1, le=200, description="results per page")]
Offset = Annotated[int, Param(ge=0, le=MAX_RESULTS, description="results to skip (paging)")]
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="an indexed image's id")]
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
TextKind = Literal["captions", "jsonl", "vocabulary", "sidecar"]
SORT_HELP = "relevance, or date (taken, newest first) among the hits kept"
MIN_RELEVANCE = r"^(auto|off|0(\.\d+)?|1(\.0+)?)$"
MIN_RELEVANCE_HELP = '"auto" (say "no good match" when nothing is), "off", or 0 to 1'
SortParam = Annotated[Literal["relevance", "date"], Param(description=SORT_HELP)]
SearchMode = Annotated[Literal["hybrid", "semantic", "keyword"], Param(description=MODE_HELP)]
MinRelevanceParam = Annotated[str, Param(pattern=MIN_RELEVANCE, description=MIN_RELEVANCE_HELP)]


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1000


async def encoded_then(
    service: SearchService, query: Query | None, work: Callable[[], T]
) -> tuple[T, float]:
    """Encode the query's texts through the batcher, then run `work` on a worker thread;
    with the milliseconds both took."""
    start = time.perf_counter()
    if query is not None:
        await service.encode_query_texts(query)

    def in_time() -> T:
        check_deadline("a worker thread")
        return work()

    out = await run_in_threadpool(in_time)
    return out, (time.perf_counter() - start) * 1000


async def service_of(request: Request) -> SearchService:
    service: SearchService = request.app.state.service
    return service


Service = Annotated[SearchService, Depends(service_of)]


async def settings_of(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


Settings = Annotated[ServerSettings, Depends(settings_of)]


class FilterQuery(FilterFields):
    """Filters as query parameters; `format` and `tag` may repeat. (One model, validated
    at once: sixteen parameters checked one by one cost a search as much as its FAISS
    search.)"""

    format: list[str] = Field(default_factory=list, max_length=20)
    tag: list[str] = Field(default_factory=list, max_length=20)

    def to_filter(self) -> Filter:
        shared = self.model_dump(exclude={"format", "tag"})
        return FilterIn(**shared, formats=self.format, tags=self.tag).to_filter()


class TextQuery(FilterQuery, RankingFields):
    """`GET /api/search`'s parameters: the text, the page, the ranking, the filters."""

    q: str = Field(min_length=1, max_length=1000, description="what to find")
    k: int = Field(20, ge=1, le=200, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_RESULTS, description="results to skip (paging)")
    explain: bool = False
    min_relevance: str = Field("off", pattern=MIN_RELEVANCE, description=MIN_RELEVANCE_HELP)
    mode: Literal["hybrid", "semantic", "keyword"] = Field("hybrid", description=MODE_HELP)
    sort: Literal["relevance", "date"] = Field("relevance", description=SORT_HELP)


FILTER_QUERY = QueryModel(FilterQuery)
TEXT_QUERY = QueryModel(TextQuery)


async def filters_of(query: Annotated[FilterQuery, Depends(FILTER_QUERY)]) -> Filter:
    return query.to_filter()


#: The filters of a route's query string (its decorator adds `openapi_extra=FILTER_DOCS`).
Filters = Annotated[Filter, Depends(filters_of)]
FILTER_DOCS = FILTER_QUERY.openapi()


#: The fields of a hit in a response, in `HitOut`'s order.
HIT_FIELDS = tuple(HitOut.model_fields)


def _page(found: Judged, k: int, offset: int, ms: float) -> Response:
    """A page of hits as `SearchOut`'s JSON, written directly: checking 20 hits through
    pydantic on the way out cost as much as the search (tests hold the two to the same
    output)."""
    hits = []
    for h in found.hits:
        hit = {name: getattr(h, name) for name in HIT_FIELDS}
        if h.span is not None:
            hit["span"] = list(h.span)
        hits.append(hit)
    body = {"hits": hits, "k": k, "offset": offset, "took_ms": ms, "note": found.note,
            "weaker": found.weaker}  # fmt: skip
    return Response(
        json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
        media_type="application/json",
    )


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLargeError(f"the upload is over the limit of {limit / 2**20:.0f} MiB")
    return data


# -- health and facts ---------------------------------------------------------------------


@router.get("/health", response_model=HealthOut, summary="Liveness, and what is indexed")
async def health(service: Service) -> HealthOut:
    """Needs no worker thread: answers while all of them are busy (`liveness`)."""

    def read() -> tuple[int, str | None]:
        info = service.index.model_info
        return service.index.count(), info.spec if info else None

    nothing: tuple[int, str | None] = (0, None)
    images, model = await liveness.read_within(id(service), read, nothing)
    return HealthOut(status="ok", version=__version__, images=images, model=model)


@router.get("/stats", response_model=StatsOut, summary="Index statistics and the running job")
def stats(service: Service) -> StatsOut:
    running = service.jobs.running()
    job = JobOut(**running.to_dict()) if running else None
    batches = service.batch_stats
    batching = (
        QueryBatchingOut(
            requests=batches.calls, model_calls=batches.batches, dropped=batches.dropped
        )
        if batches
        else None
    )
    return StatsOut(**service.stats().to_dict(), job=job, query_batching=batching)


# -- searching images ---------------------------------------------------------------------


@router.get(
    "/search",
    response_model=SearchOut,
    summary="Images matching a text",
    openapi_extra=TEXT_QUERY.openapi(),
)
async def search_text(
    service: Service, params: Annotated[TextQuery, Depends(TEXT_QUERY)]
) -> Response:
    p = params
    request = SearchRequest(
        Query.of(text=p.q), k=p.k, offset=p.offset, filters=p.to_filter(), mode=p.mode,
        min_relevance=parse_min_relevance(p.min_relevance), sort=p.sort, explain=p.explain,
        **_ranking(p),
    )  # fmt: skip
    found, ms = await encoded_then(service, request.query, lambda: service.find(request))
    return _page(found, p.k, p.offset, ms)


def _ranking(fields: RankingFields) -> dict[str, Any]:
    """A `SearchRequest`'s re-ranking and ensemble fields, as a request gave them."""
    return fields.model_dump(include=set(RankingFields.model_fields))


@router.post("/search", response_model=SearchOut, summary="A fused query, with filters")
async def search_fused(service: Service, body: SearchIn) -> Response:
    positive = [QueryPart("text", body.text)] if body.text else []
    positive += [QueryPart("item", i, body.image_weight) for i in body.like]
    negative = [QueryPart("text", t, body.negative_weight) for t in body.not_text]
    negative += [QueryPart("item", i, body.negative_weight) for i in body.unlike]
    request = SearchRequest(
        Query(tuple(positive), tuple(negative)), k=body.k, offset=body.offset,
        filters=body.filters.to_filter() if body.filters else None, mode=body.mode,
        min_relevance=body.min_relevance, sort=body.sort, explain=body.explain,
        **_ranking(body),
    )  # fmt: skip

    def checked_search() -> Judged:
        for item_id in (*body.like, *body.unlike):
            service.item(item_id)  # an unknown id is a 404, not a bad query
        return service.find(request)

    await run_in_threadpool(service.check_model, body.model)
    found, ms = await encoded_then(service, request.query, checked_search)
    return _page(found, body.k, body.offset, ms)


@router.post(
    "/search/image",
    response_model=SearchOut,
    summary="Images like an uploaded one",
    openapi_extra=FILTER_DOCS,
)
async def search_image(
    service: Service,
    settings: Settings,
    filters: Filters,
    file: Annotated[UploadFile, File(description="the example image")],
    text: Annotated[str | None, Param(max_length=1000, description="fused with the image")] = None,
    image_weight: Annotated[float, Param(gt=0, le=100)] = 1.0,
    k: K = 20,
    offset: Offset = 0,
    min_relevance: MinRelevanceParam = "off",
    sort: SortParam = "relevance",
) -> Response:
    rule = parse_min_relevance(min_relevance)
    data = await _read_upload(file, settings.max_upload_bytes)
    found, ms = await encoded_then(
        service,
        Query.of(text=text) if text else None,
        lambda: service.search_upload(
            data, text or None, image_weight, k, offset, filters, rule, sort
        ),
    )
    return _page(found, k, offset, ms)


@router.get(
    "/items/{item_id}/similar",
    response_model=SearchOut,
    summary="More like this",
    openapi_extra=FILTER_DOCS,
)
def similar(
    service: Service,
    filters: Filters,
    item_id: ItemId,
    k: K = 20,
    offset: Offset = 0,
    min_relevance: MinRelevanceParam = "off",
    sort: SortParam = "relevance",
) -> Response:
    rule = parse_min_relevance(min_relevance)
    found, ms = timed(lambda: service.similar(item_id, k, offset, filters, rule, sort))
    return _page(found, k, offset, ms)


# -- items --------------------------------------------------------------------------------


@router.get("/items/{item_id}", response_model=ItemOut, summary="An indexed item's metadata")
def item(service: Service, item_id: ItemId) -> ItemOut:
    return ItemOut(**service.item(item_id).to_dict())


@router.get(
    "/items/{item_id}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
    summary="A JPEG thumbnail (made on first request, then cached)",
)
def thumbnail(
    service: Service,
    request: Request,
    item_id: ItemId,
    size: Annotated[ThumbnailSize, Param(description="longest side, pixels")] = (
        ThumbnailSize.MEDIUM
    ),
    t: Annotated[
        float | None, Param(ge=0, le=1e7, description="a video's frame at this second")
    ] = None,
) -> Response:
    path, sha256 = service.thumbnail(item_id, int(size), t)
    etag = f'"{sha256[:32]}-{int(size)}' + ("" if t is None else f"-{t:g}") + '"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type="image/jpeg", headers=headers)


@router.get(
    "/items/{item_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}, "video/*": {}}}},
    summary="The original file (byte ranges answered, so a video plays from any moment)",
)
def original(service: Service, item_id: ItemId) -> Response:
    path = service.file(item_id)
    return FileResponse(path, filename=path.name, content_disposition_type="inline")


@router.get("/items/{item_id}/texts", response_model=TextSearchOut, summary="Texts for an image")
def item_texts(
    service: Service, item_id: ItemId, k: K = 10, kind: TextKind | None = None
) -> TextSearchOut:
    service.item(item_id)
    (hits, note), ms = timed(
        lambda: service.texts_for(Query((QueryPart("item", item_id),)), k, kind)
    )
    return TextSearchOut(hits=[TextHitOut(**h.to_dict()) for h in hits], took_ms=ms, note=note)


@router.get("/items/{item_id}/tags", response_model=TagsOut, summary="Stored and zero-shot tags")
def item_tags(
    service: Service, item_id: ItemId, k: Annotated[int, Param(ge=1, le=50)] = 5
) -> TagsOut:
    found, suggested = service.tags(item_id, k)
    return TagsOut(
        id=item_id,
        stored=[TagOut(tag=t, score=s) for t, s in found.tags],
        suggested=[TagOut(tag=t, score=s) for t, s in suggested],
    )


# -- searching texts ----------------------------------------------------------------------


@router.get("/texts/search", response_model=TextSearchOut, summary="Texts matching a text")
async def search_texts(
    service: Service,
    q: Annotated[str, Param(min_length=1, max_length=1000)],
    k: K = 10,
    kind: TextKind | None = None,
) -> TextSearchOut:
    query = Query.of(text=q)
    (hits, note), ms = await encoded_then(service, query, lambda: service.texts_for(query, k, kind))
    return TextSearchOut(hits=[TextHitOut(**h.to_dict()) for h in hits], took_ms=ms, note=note)


@router.post(
    "/texts/search/image", response_model=TextSearchOut, summary="Texts for an uploaded image"
)
async def search_texts_by_image(
    service: Service,
    settings: Settings,
    file: Annotated[UploadFile, File()],
    k: K = 10,
    kind: TextKind | None = None,
) -> TextSearchOut:
    data = await _read_upload(file, settings.max_upload_bytes)
    (hits, note), ms = await encoded_then(
        service, None, lambda: service.texts_for_upload(data, k, kind)
    )
    return TextSearchOut(hits=[TextHitOut(**h.to_dict()) for h in hits], took_ms=ms, note=note)


# -- indexing jobs ------------------------------------------------------------------------


@router.post("/jobs", response_model=JobOut, status_code=202, summary="Index folders (async)")
def start_job(service: Service, settings: Settings, body: JobIn) -> JobOut:
    if settings.read_only:
        raise ReadOnlyError("this server is read-only (started with --read-only)")
    return JobOut(**service.jobs.start(body.paths).to_dict())


@router.get("/jobs", response_model=list[JobOut], summary="Recent indexing jobs, newest first")
def jobs(service: Service) -> list[JobOut]:
    return [JobOut(**j.to_dict()) for j in service.jobs.all()]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job's progress")
def job(service: Service, job_id: JobId) -> JobOut:
    found = service.jobs.get(job_id)
    if found is None:
        raise NotFoundError(f"no indexing job {job_id} (finished jobs are kept for a while)")
    return JobOut(**found.to_dict())
