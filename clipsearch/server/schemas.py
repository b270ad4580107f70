"""The JSON the HTTP API reads and writes (and so its OpenAPI schema).

Hits carry the same fields as the Python API's `Hit` and `TextHit`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from clipsearch.search.filters import Filter

MAX_RESULTS = 1000  # offset + k: deeper pages are not what a search is for
MAX_ID = 2**63 - 1  # SQLite's largest integer
#: Dates in filters: 2021, 2021-07, 2021-07-14 or 2021-07-14T09:30:00 (and real ones).
ISO_DATE = r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2})?)?)?$"
IndexedId = Annotated[int, Field(ge=1, le=MAX_ID)]
MinRelevanceIn = Annotated[
    Literal["auto", "off"] | Annotated[float, Field(ge=0, le=1)],
    Field(description='"auto", "off", or a calibrated relevance from 0 to 1'),
]


MODE_HELP = "hybrid: the model's ranking with the words' evidence; semantic: the model; keyword"


class RankingFields(BaseModel):
    """How a search's list is re-ranked or fused, beyond the query and the filters; shared
    by `GET /api/search`'s parameters and `POST /api/search`'s body."""

    diverse: float | None = Field(
        None, ge=0, le=1, description="MMR diversity weight, 0 to 1 (0.3 is a good start)"
    )
    collapse: float | None = Field(
        None, ge=-1, le=1, description="drop hits whose cosine to a better one is this or more"
    )
    ensemble: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="other indexes of the same photos to fuse with, as the server was "
        "started with them (`clipsearch serve --ensemble FOLDER|URL`)",
    )
    ensemble_weight: float = Field(
        1.0, gt=0, le=100, description="weight of each ensemble index against this one's 1.0"
    )
    fusion: Literal["score", "rrf"] = Field("score", description="how an ensemble is fused")


class ErrorOut(BaseModel):
    error: str = Field(description="what went wrong, in words a user can act on")
    status: int


class HitOut(BaseModel):
    id: int
    path: str
    score: float = Field(description="cosine similarity to the query")
    explain: dict[str, float] | None = None
    adapter: str | None = None
    taken_at: str | None = Field(None, description="when the photo was taken (EXIF)")
    keyword_score: float | None = Field(
        None, description="BM25 score of the image's words, when they matched the query"
    )
    relevance: float | None = Field(
        None,
        description="calibrated relevance, 0 to 1 (0.5: the bar of a good match), when the "
        "search asked for a min_relevance",
    )
    time: float | None = Field(
        None, description="for a video: the best-matching moment, in seconds from its start"
    )
    span: tuple[float, float] | None = Field(
        None, description="for a video: start and end (seconds) of the matching stretch"
    )


class SearchOut(BaseModel):
    hits: list[HitOut]
    k: int
    offset: int
    took_ms: float
    note: str | None = Field(
        None, description='e.g. that nothing is indexed yet, or "no good match"'
    )
    weaker: int = Field(0, description="hits left out for being under min_relevance")


class TextHitOut(BaseModel):
    id: int
    text: str
    score: float
    kind: str
    source: str
    key: str | None = None
    image_path: str | None = None
    metadata: dict[str, Any] | None = None


class TextSearchOut(BaseModel):
    hits: list[TextHitOut]
    took_ms: float
    note: str | None = None


class TagOut(BaseModel):
    tag: str
    score: float


class ItemOut(BaseModel):
    id: int
    path: str
    size: int
    mtime: float
    sha256: str
    width: int
    height: int
    format: str | None
    taken_at: str | None
    indexed_at: float
    tags: list[TagOut]
    camera: str | None = Field(None, description="EXIF make and model")
    text_in_photo: str | None = Field(
        None, description='words read in the photo (index --ocr); null: not read, "": none'
    )
    duration: float | None = Field(None, description="a video's length in seconds (null: a photo)")


class TagsOut(BaseModel):
    id: int
    stored: list[TagOut] = Field(description="tags kept in the index (XMP keywords, stored tags)")
    suggested: list[TagOut] = Field(description="zero-shot tags from the vocabulary")


class FilterFields(BaseModel):
    """The filters but the repeatable ones, as JSON bodies and query strings share them."""

    folder: str | None = None
    path_glob: str | None = None
    taken_after: str | None = Field(None, pattern=ISO_DATE)
    taken_before: str | None = Field(None, pattern=ISO_DATE)
    min_width: int | None = Field(None, ge=0)
    min_height: int | None = Field(None, ge=0)
    orientation: Literal["landscape", "portrait", "square"] | None = None


class FilterIn(FilterFields):
    """All given conditions must hold. Dates are ISO: 2021, 2021-07 or 2021-07-14."""

    formats: list[str] = Field(default_factory=list, max_length=20)
    tags: list[str] = Field(default_factory=list, max_length=20)

    def to_filter(self) -> Filter:
        return Filter(
            folder=self.folder or None,
            path_glob=self.path_glob or None,
            taken_after=self.taken_after or None,
            taken_before=self.taken_before or None,
            min_width=self.min_width,
            min_height=self.min_height,
            orientation=self.orientation,
            formats=tuple(self.formats),
            tags=tuple(t for t in self.tags if t.strip()),
        )


class SearchIn(RankingFields):
    """A fused query: texts and indexed images to be like, texts and images to avoid."""

    text: str | None = Field(None, max_length=1000)
    like: list[IndexedId] = Field(
        default_factory=list, max_length=50, description="indexed image ids"
    )
    unlike: list[IndexedId] = Field(default_factory=list, max_length=50)
    not_text: list[str] = Field(default_factory=list, max_length=20)
    image_weight: float = Field(1.0, gt=0, le=100)
    negative_weight: float = Field(0.5, gt=0, le=100)
    k: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0, le=MAX_RESULTS)
    filters: FilterIn | None = None
    explain: bool = False
    min_relevance: MinRelevanceIn = "off"
    sort: Literal["relevance", "date"] = Field(
        "relevance", description="date: taken, newest first, among the hits kept"
    )
    mode: Literal["hybrid", "semantic", "keyword"] = Field("hybrid", description=MODE_HELP)
    model: str | None = Field(
        None,
        description="the model spec or identity the client expects; 409 if the index has "
        "another (catches a client talking to the wrong index)",
    )


class JobIn(BaseModel):
    paths: list[str] = Field(min_length=1, max_length=100)


class JobOut(BaseModel):
    id: int
    paths: list[str]
    state: Literal["queued", "running", "done", "failed"]
    phase: str
    done: int
    total: int
    created_at: float
    finished_at: float | None
    summary: dict[str, Any] | None
    error: str | None


class QueryBatchingOut(BaseModel):
    requests: int = Field(description="text encodings asked for by requests")
    model_calls: int = Field(description="model calls that served them")
    dropped: int = Field(0, description="requests dropped unencoded at their deadline (503)")


class StatsOut(BaseModel):
    directory: str
    count: int = Field(description="items: photos and videos")
    videos: int
    keyframes: int = Field(description="videos' keyframes, each searched as a vector")
    texts: int
    model: str | None
    model_identity: str | None
    dim: int | None
    adapter: str | None
    index_type: str
    vector_dtype: str
    image_vectors: str = Field(description="what made the image vectors: fp32 or int8-RUNTIME")
    faiss_gpus: int
    database_bytes: int
    vector_index_bytes: int
    job: JobOut | None = Field(None, description="the indexing job running now, if any")
    query_batching: QueryBatchingOut | None = Field(
        None, description="how concurrent text queries were batched (when batching is on)"
    )


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    images: int
    model: str | None
