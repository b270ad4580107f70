"""Class-folder collections (`root/<class>/*.jpg`): zero-shot accuracy and text→image
precision@10 / mAP per class, as in the CLIP paper (prompt templates, template ensembling).

Zero-shot classification is image→text retrieval over one ensembled prompt vector per class,
with the images' stored vectors as queries; text→image uses the same ensembled vectors (and
optional free-text queries) against the image index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.evaluation.collection import (
    TOP_DEPTH,
    Evaluated,
    rank_images,
    text_searcher,
)
from clipsearch.evaluation.metrics import average_precision, average_precision_at, precision_at
from clipsearch.search.ensemble import Ensemble
from clipsearch.search.prompts import TEMPLATES, prompt_vectors
from clipsearch.search.rerank import Reranker


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    label: str


@dataclass
class ClassReport:
    images: int
    classes: list[str]
    search: str  # "exact", or "hnsw" for ANN candidates
    zero_shot_accuracy: float = 0.0
    accuracy_per_class: dict[str, float] = field(default_factory=dict)
    precision_at_10: dict[str, float] = field(default_factory=dict)  # class prompt -> images
    mean_precision_at_10: float = 0.0
    average_precision: dict[str, float] = field(default_factory=dict)
    mean_average_precision: float | None = None  # None when retrieval stops at the top 10
    mean_average_precision_at_10: float = 0.0  # AP over the top 10 (any run)
    queries: list[dict[str, Any]] = field(default_factory=list)  # free-text queries
    mean_query_precision_at_10: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_queries(path: Path) -> list[LabelledQuery]:
    """`[{"query": ..., "class": ...}, ...]`, or an object with such a list under "queries"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QueryError(f"cannot read queries file {path}: {exc}") from exc
    items = data.get("queries", []) if isinstance(data, dict) else data
    try:
        return [LabelledQuery(str(q["query"]), str(q["class"])) for q in items]
    except (TypeError, KeyError) as exc:
        raise QueryError(f'{path}: each query needs "query" and "class" fields') from exc


def class_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def evaluate_classes(
    index: Evaluated,
    root: Path,
    queries: Sequence[LabelledQuery] = (),
    templates: Sequence[str] = TEMPLATES,
    ann: bool = False,
    rerankers: Sequence[Reranker] = (),
    ensemble: Ensemble | None = None,
    text_rerankers: Sequence[Reranker] = (),
) -> ClassReport:
    """`ann`: candidates from an HNSW index; `rerankers`: applied to text→image retrieval;
    `ensemble`: text→image through a late-fusion ensemble whose first member is `index`;
    `text_rerankers`: applied to zero-shot classification (image→text).
    Each limits retrieval to the top 10, so full average precision is then not measured
    (AP@10 always is)."""
    index.add([root])
    # The rows under `root` are what `add` just scanned and indexed: no second folder walk.
    prefix = os.path.abspath(root).rstrip(os.sep) + os.sep
    indexed = sorted((p, i) for p, i in index.db.ids_by_path().items() if p.startswith(prefix))
    ids = [i for _, i in indexed]
    label_of = {i: class_of(p) for p, i in indexed}
    classes = sorted(set(label_of.values()))
    if len(classes) < 2:
        raise QueryError(f"{root}: needs at least two class folders with images")
    unknown = sorted({q.label for q in queries} - set(classes))
    if unknown:
        raise QueryError(f"queries name classes that are not folders of {root}: {unknown}")

    class_vectors = prompt_vectors(index.encode_texts, classes, templates)

    predicted = text_searcher(classes, class_vectors, ann, text_rerankers).search_many(
        index.image_vectors(ids), k=1
    )
    correct = {c: [0, 0] for c in classes}
    for image_id, best in zip(ids, predicted, strict=True):
        truth = label_of[image_id]
        correct[truth][1] += 1
        correct[truth][0] += int(best[0].label == truth)
    report = ClassReport(images=len(ids), classes=classes, search="hnsw" if ann else "exact")
    report.zero_shot_accuracy = sum(c for c, _ in correct.values()) / len(ids)
    report.accuracy_per_class = {c: hit / total for c, (hit, total) in correct.items()}

    members = {c: {i for i in ids if label_of[i] == c} for c in classes}
    top_only = ann or bool(rerankers) or ensemble is not None
    depth = TOP_DEPTH if top_only else index.db.count()
    if ensemble is None:
        class_ranked = rank_images(index, classes, depth, ann, rerankers, vectors=class_vectors)
    else:
        per_member = [
            prompt_vectors(m.index.encode_texts, classes, templates) for m in ensemble.members
        ]
        class_ranked = [[h.id for h in row] for row in ensemble.search_vectors(per_member, depth)]
    ap10 = {}
    for c, ranked in zip(classes, class_ranked, strict=True):
        report.precision_at_10[c] = precision_at(ranked, members[c], 10)
        ap10[c] = average_precision_at(ranked, members[c], 10)
        if not top_only:
            report.average_precision[c] = average_precision(ranked, members[c])
    report.mean_precision_at_10 = float(np.mean(list(report.precision_at_10.values())))
    report.mean_average_precision_at_10 = float(np.mean(list(ap10.values())))
    if not top_only:
        report.mean_average_precision = float(np.mean(list(report.average_precision.values())))

    if queries:
        texts = [q.query for q in queries]
        query_ranked = rank_images(index, texts, TOP_DEPTH, ann, rerankers, ensemble)
        for q, ranked in zip(queries, query_ranked, strict=True):
            p10 = precision_at(ranked, members[q.label], 10)
            report.queries.append({"query": q.query, "class": q.label, "precision_at_10": p10})
        report.mean_query_precision_at_10 = float(
            np.mean([q["precision_at_10"] for q in report.queries])
        )
    return report
