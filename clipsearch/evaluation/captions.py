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

import numpy as np

from clipsearch.evaluation.collection import (
    TOP_DEPTH,
    Evaluated,
    image_ids,
    rank_images,
    text_searcher,
)
from clipsearch.evaluation.metrics import (
    average_precision_at,
    first_relevant_rank,
    median_rank,
    recall_at,
)
from clipsearch.indexer.text_sources import read_captions
from clipsearch.search.ensemble import Ensemble
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


def _chance_recall(pool: int, relevant: int, k: int) -> float:
    """P(at least one of `relevant` items in a random top-k out of `pool`)."""
    if k >= pool:
        return 1.0
    return 1.0 - math.comb(pool - relevant, k) / math.comb(pool, k)


def evaluate_captions(
    index: Evaluated,
    images: Path,
    captions_csv: Path,
    ann: bool = False,
    rerankers: Sequence[Reranker] = (),
    text_rerankers: Sequence[Reranker] = (),
    ensemble: Ensemble | None = None,
) -> CaptionReport:
    """`ann`: candidates from an HNSW index instead of exact search, to see what ANN costs.
    `rerankers` / `text_rerankers`: applied to text→image / image→text retrieval, to see
    what each stage does; `ensemble`: text→image through a late-fusion ensemble whose first
    member is `index`."""
    rows = read_captions(captions_csv)
    index.add([images])
    names = list(dict.fromkeys(image for image, _ in rows))
    ids = image_ids(index, [os.path.abspath(images / name) for name in names])
    id_of = dict(zip(names, ids, strict=True))
    captions = [caption for _, caption in rows]
    caption_vectors = index.encode_texts(captions)
    pool = index.db.count()

    top_only = ann or bool(rerankers) or ensemble is not None
    ranked_images = rank_images(
        index, captions, TOP_DEPTH if top_only else pool, ann, rerankers, ensemble, caption_vectors
    )
    t2i_relevant = [{id_of[image]} for image, _ in rows]

    captions_of: dict[int, set[int]] = {}
    for position, (image, _) in enumerate(rows):
        captions_of.setdefault(id_of[image], set()).add(position)
    texts_top_only = ann or bool(text_rerankers)
    searcher = text_searcher(captions, caption_vectors, ann, text_rerankers)
    matches = searcher.search_many(
        index.image_vectors(ids), k=TOP_DEPTH if texts_top_only else len(captions)
    )
    ranked_texts = [[m.id for m in row] for row in matches]
    i2t_relevant = [captions_of[i] for i in ids]

    per_image = len(captions) / len(names)

    def summary(
        ranked: list[list[int]], relevant: list[set[int]], full_depth: bool
    ) -> dict[str, float]:
        ranks = first_relevant_rank(ranked, relevant)
        out = {f"R@{k}": recall_at(ranks, k) for k in KS}
        out["mAP@10"] = float(
            np.mean(
                [average_precision_at(r, rel, 10) for r, rel in zip(ranked, relevant, strict=True)]
            )
        )
        if full_depth:
            out["median_rank"] = median_rank(ranks)
        return out

    return CaptionReport(
        images=len(names),
        captions=len(captions),
        search="hnsw" if ann else "exact",
        text_to_image=summary(ranked_images, t2i_relevant, not top_only),
        image_to_text=summary(ranked_texts, i2t_relevant, not texts_top_only),
        chance={
            "text_to_image_R@10": _chance_recall(pool, 1, 10),
            "image_to_text_R@10": _chance_recall(len(captions), round(per_image), 10),
        },
    )
