"""clipsearch: cross-modal (CLIP) search for photo collections.

import clipsearch
with clipsearch.open("~/photos-index", model="tiny-random") as idx:
    idx.add(["~/Pictures"])
    for hit in idx.search(text="a dog on a beach", k=5):
        print(hit.score, hit.path)
"""

from clipsearch.errors import ClipsearchError
from clipsearch.index import Index, IndexStats, IndexSummary, open_index
from clipsearch.models import Encoder, ModelInfo, register_encoder
from clipsearch.search.filters import Filter
from clipsearch.search.query import Query, QueryPart
from clipsearch.search.request import SearchRequest
from clipsearch.search.rerank import MMR, CollapseNearDuplicates, Reranker
from clipsearch.search.searcher import Hit
from clipsearch.storage.transfer import CopyReport
from clipsearch.storage.transfer import copy as copy_index
from clipsearch.texts import TextHit

open = open_index  # `clipsearch.open(...)` reads as intended

__version__ = "0.1.0"
__all__ = [
    "MMR",
    "ClipsearchError",
    "CollapseNearDuplicates",
    "CopyReport",
    "Encoder",
    "Filter",
    "Hit",
    "Index",
    "IndexStats",
    "IndexSummary",
    "ModelInfo",
    "Query",
    "QueryPart",
    "Reranker",
    "SearchRequest",
    "TextHit",
    "__version__",
    "copy_index",
    "open",
    "open_index",
    "register_encoder",
]
