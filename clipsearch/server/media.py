"""Routes on one item beyond search: a video's summary, a question about a picture."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from fastapi import Query as Param
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from clipsearch.asking import Answers
from clipsearch.server.api import _ERRORS, ItemId, Service, Settings, _read_upload
from clipsearch.server.errors import ReadOnlyError
from clipsearch.server.service import SearchService
from clipsearch.server.settings import ServerSettings
from clipsearch.texts import BUILTIN_VOCABULARY

router = APIRouter(prefix="/api", responses=_ERRORS)


class SummaryFrameOut(BaseModel):
    time: float = Field(description="seconds from the start")
    clock: str = Field(description="HH:MM:SS")
    score: float | None = Field(None, description="cosine to the query, when one was given")


class SummaryOut(BaseModel):
    id: int
    path: str
    duration: float
    keyframes: int = Field(description="the keyframes the frames were chosen from")
    frames: list[SummaryFrameOut] = Field(description="in time order")
    query: str | None = None


class AnswerOut(BaseModel):
    answer: str
    probability: float
    score: float = Field(description="cosine (choice) or z against the index (yes/no)")


class AnswersOut(BaseModel):
    id: int | None = Field(None, description="the item asked about (none for an upload)")
    question: str
    kind: str = Field(description='"choice" or "yes/no"')
    best: str = Field(description='the answer to give ("not sure" for an unclear yes/no)')
    answers: list[AnswerOut]


@router.get("/items/{item_id}/summary", response_model=SummaryOut, summary="A video in k frames")
def summary(
    service: Service,
    item_id: ItemId,
    k: Annotated[int, Param(ge=1, le=64, description="frames")] = 8,
    query: Annotated[str | None, Param(max_length=1000, description="draw towards")] = None,
) -> SummaryOut:
    service.item(item_id)  # 404 for an unknown id
    found = service.index.summarize(item_id, k, query=query or None)
    return SummaryOut(id=item_id, **found.to_dict())


Question = Annotated[str, Param(min_length=1, max_length=500, description="the question")]
Candidates = Annotated[
    str | None, Param(max_length=5000, description="candidate answers, comma-separated")
]
Top = Annotated[int, Param(ge=1, le=50)]


@router.get("/items/{item_id}/ask", response_model=AnswersOut, summary="A question about an item")
def ask(
    service: Service,
    settings: Settings,
    item_id: ItemId,
    q: Question,
    answers: Candidates = None,
    top: Top = 5,
) -> AnswersOut:
    service.item(item_id)
    choices = _choices(service, settings, answers)
    found = service.index.ask(item_id, q, answers=choices, top=top)
    return AnswersOut(id=item_id, **found.to_dict())


@router.post("/ask", response_model=AnswersOut, summary="A question about an uploaded picture")
async def ask_upload(
    service: Service,
    settings: Settings,
    file: Annotated[UploadFile, File()],
    q: Question,
    answers: Candidates = None,
    top: Top = 5,
) -> AnswersOut:
    data = await _read_upload(file, settings.max_upload_bytes)
    choices = _choices(service, settings, answers)
    found: Answers = await run_in_threadpool(lambda: service.ask_upload(data, q, choices, top))
    return AnswersOut(**found.to_dict())


def _choices(
    service: SearchService, settings: ServerSettings, answers: str | None
) -> list[str] | None:
    """The candidate answers asked for; without them the tag vocabulary answers, which a
    read-only server can use only if it was embedded into the index before."""
    choices = [a.strip() for a in answers.split(",") if a.strip()] if answers else None
    vocabulary = service.index.texts.table
    if settings.read_only and not choices and vocabulary.source(BUILTIN_VOCABULARY) is None:
        raise ReadOnlyError(
            "answers from the tag vocabulary need it embedded into the index once, and this "
            "server is read-only: give answers=..., or run `clipsearch tag` on the index once"
        )
    return choices
