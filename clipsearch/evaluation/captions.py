"""Captioned collections: Recall@K and median rank, text→image and image→text.

The protocol of the CLIP paper on Flickr30k / MSCOCO: every caption is a text→image query
whose one relevant hit is its image; every image is an image→text query for which any of its
captions is relevant. Images go through the real indexer and the two-stage searcher; the
captions become a text collection searched the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.evaluation.collection import (
    TOP_DEPTH,
    image_ids,
    image_searcher,
    stored_image_vectors,
    text_searcher,
)
from clipsearch.evaluation.metrics import Ranks, first_relevant_rank, median_rank, recall_at
from clipsearch.index import Index
from clipsearch.indexer.text_sources import decode_utf8, parse_captions, read_bytes
from clipsearch.search.rerank import Reranker

KS = (1, 5, 10)


@dataclass
class CaptionReport:
    images: int
    captions: int
    search: str  # "exact", or "hnsw" for ANN candidates
    text_to_image: dict[str, float] = field(default_factory=dict)
    image_to_text: dict[str, float] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)  # Recall@10 of a random ranking

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_captions(path: Path) -> list[tuple[str, str]]:
    """(image, caption) rows of a CSV with an `image,caption` header; bad rows are an error."""
    return parse_captions(path, decode_utf8(path, read_bytes(path)))


def _chance_recall(pool: int, relevant: int, k: int) -> float:
    """P(at least one of `relevant` items in a random top-k out of `pool`)."""
    if k >= pool:
        return 1.0
    return 1.0 - math.comb(pool - relevant, k) / math.comb(pool, k)


def evaluate_captions(
    index: Index,
    images: Path,
    captions_csv: Path,
    ann: bool = False,
    rerankers: Sequence[Reranker] = (),
) -> CaptionReport:
    """`ann`: candidates from an HNSW index instead of exact search, to see what ANN costs.
    `rerankers`: applied to text→image retrieval, to see what each stage does."""
    rows = read_captions(captions_csv)
    index.add([images])
    names = list(dict.fromkeys(image for image, _ in rows))
    ids = image_ids(index, [os.path.abspath(images / name) for name in names])
    id_of = dict(zip(names, ids, strict=True))
    captions = [caption for _, caption in rows]
    caption_vectors = index.encoder.encode_texts(captions)
    pool = index.db.count()

    top_only = ann or bool(rerankers)
    hits = image_searcher(index, ann, rerankers).search_many(
        caption_vectors, TOP_DEPTH if top_only else pool
    )
    t2i = first_relevant_rank(
        [[h.id for h in row] for row in hits], [{id_of[image]} for image, _ in rows]
    )

    captions_of: dict[int, set[int]] = {}
    for position, (image, _) in enumerate(rows):
        captions_of.setdefault(id_of[image], set()).add(position)
    matches = text_searcher(captions, caption_vectors, ann).search_many(
        stored_image_vectors(index, ids), k=TOP_DEPTH if ann else len(captions)
    )
    i2t = first_relevant_rank(
        [[m.id for m in row] for row in matches], [captions_of[i] for i in ids]
    )

    per_image = len(captions) / len(names)

    def summary(ranks: Ranks, full_depth: bool) -> dict[str, float]:
        out = {f"R@{k}": recall_at(ranks, k) for k in KS}
        if full_depth:
            out["median_rank"] = median_rank(ranks)
        return out

    return CaptionReport(
        images=len(names),
        captions=len(captions),
        search="hnsw" if ann else "exact",
        text_to_image=summary(t2i, not top_only),
        image_to_text=summary(i2t, not ann),
        chance={
            "text_to_image_R@10": _chance_recall(pool, 1, 10),
            "image_to_text_R@10": _chance_recall(len(captions), round(per_image), 10),
        },
    )
