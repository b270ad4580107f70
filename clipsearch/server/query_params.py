"""Query-string parameters read into one pydantic model in one validation.

FastAPI checks declared query parameters one at a time, in Python, on every request: for
the sixteen of a text search (the query, the page, the ranking, nine filters) that cost as
much as the search's FAISS step (benchmarks/results/serve_profile.md). A `QueryModel` reads
the query string once and validates it in one call of pydantic's compiled validator; the
parameters still appear in the OpenAPI schema (`openapi()`, the route's `openapi_extra`),
and a bad one is still a 400 naming it.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class QueryModel(Generic[M]):
    """A FastAPI dependency: the request's query parameters as a `model` (unknown ones are
    left alone; a list field takes every value of a repeated parameter)."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.lists = {name for name, f in model.model_fields.items() if _is_list(f.annotation)}

    async def __call__(self, request: Request) -> M:
        params = request.query_params
        data: dict[str, Any] = {}
        for name in self.model.model_fields:
            if name in params:
                data[name] = params.getlist(name) if name in self.lists else params[name]
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]
            raise RequestValidationError(errors) from None

    def openapi(self) -> dict[str, Any]:
        """The parameters as OpenAPI declares them (for the route's `openapi_extra`)."""
        schema = self.model.model_json_schema()
        required = set(schema.get("required", []))
        parameters = []
        for name, prop in schema["properties"].items():
            described = {k: v for k, v in prop.items() if k not in ("title", "description")}
            parameter: dict[str, Any] = {
                "name": name, "in": "query", "required": name in required, "schema": described,
            }  # fmt: skip
            if "description" in prop:
                parameter["description"] = prop["description"]
            parameters.append(parameter)
        return {"parameters": parameters}


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) is list
