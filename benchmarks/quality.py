"""Retrieval quality of the offline models, with the evaluation harness (`clipsearch eval`).

- CIFAR-10 test (10,000 images): zero-shot accuracy with prompt ensembles, text→image
  precision@10 and mAP per class, and precision@10 of the held-out queries in
  `benchmarks/data/heldout_queries.json` (written before any result was seen).
- Flickr8k validation split (200 photos, 1,000 captions; never trained on): Recall@1/5/10
  and median rank, text→image and image→text.

    .venv/bin/python benchmarks/quality.py                       # clipsearch-mini, tiny-random
    .venv/bin/python benchmarks/quality.py --models clipsearch-mini
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clipsearch
from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from clipsearch.evaluation import evaluate_captions, evaluate_classes
from clipsearch.evaluation.classes import LabelledQuery

PUBLISHED = """\
Published zero-shot figures of real CLIP weights, for scale (not measured here):

| model | CIFAR-10 zero-shot | Flickr30k 1K test text→image R@1 / R@5 / R@10 | image→text R@1 / R@5 / R@10 |
|---|---|---|---|
| OpenAI CLIP ViT-B/32 (`ViT-B-32:openai`) | 91.3% [1]; 89.8% [2] | 58.8 / 83.6 / 90.0 [2] | 78.9 / 94.9 / 98.2 [2] |
| OpenCLIP ViT-B/32 LAION-2B (`ViT-B-32:laion2b_s34b_b79k`, our default) | 93.6% [2] | 66.8 / 88.4 / 93.1 [2] | 84.1 / 96.2 / 98.3 [2] |

[1] Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*,
2021, Table 11 (zero-shot, prompt-ensembled). [2] open_clip's benchmark tables,
`docs/openclip_classification_results.csv` and `docs/openclip_retrieval_results.csv` in
mlfoundations/open_clip. Flickr30k's 1K test set has 1,000 photos and 5,000 captions; our
Flickr8k validation split has 200 photos and 1,000 captions, a smaller pool (chance
Recall@10 is 5% text→image here against 1% there), so the figures are not directly comparable.
"""


def run(model: str, workers: int) -> dict[str, Any]:
    queries = [LabelledQuery(str(q["query"]), str(q["class"])) for q in datasets.heldout_queries()]
    _, val = datasets.flickr_split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        cifar = datasets.cifar_folder("test")
        with clipsearch.open(root / "cifar-db", model=model, workers=workers) as idx:
            classes = evaluate_classes(idx, cifar, queries)
            cifar_seconds = time.perf_counter() - started
            classes_ann = evaluate_classes(idx, cifar, queries, ann=True)
        images, captions = datasets.flickr_eval_folder(val, root / "flickr-val")
        with clipsearch.open(root / "flickr-db", model=model, workers=workers) as idx:
            flickr = evaluate_captions(idx, images, captions)
            flickr_ann = evaluate_captions(idx, images, captions, ann=True)
    return {
        "model": model,
        "cifar10_test": classes.to_dict(),
        "flickr8k_val": flickr.to_dict(),
        "cifar10_test_hnsw": classes_ann.to_dict(),
        "flickr8k_val_hnsw": flickr_ann.to_dict(),
        "cifar_eval_seconds": round(cifar_seconds, 1),
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(results: list[dict[str, Any]]) -> str:
    cifar_rows, flickr_rows = [], []
    for r in results:
        c, f = r["cifar10_test"], r["flickr8k_val"]
        cifar_rows.append([
            f"`{r['model']}`", pct(c["zero_shot_accuracy"]), f"{c['mean_precision_at_10']:.3f}",
            f"{c['mean_average_precision']:.3f}", f"{c['mean_query_precision_at_10']:.3f}",
        ])  # fmt: skip
        t, i = f["text_to_image"], f["image_to_text"]
        t2i = " / ".join(pct(t[f"R@{k}"]) for k in (1, 5, 10))
        i2t = " / ".join(pct(i[f"R@{k}"]) for k in (1, 5, 10))
        flickr_rows.append(
            [f"`{r['model']}`", t2i, f"{t['median_rank']:.0f}", i2t, f"{i['median_rank']:.0f}"]
        )
    chance = results[0]["flickr8k_val"]["chance"]
    parts = [
        "## CIFAR-10 test (10,000 images, 10 classes; chance accuracy 10%, chance P@10 0.1)",
        markdown_table(
            ["model", "zero-shot accuracy", "class-prompt P@10", "mAP", "held-out queries P@10"],
            cifar_rows,
        ),
        "## Flickr8k validation split (200 photos, 1,000 captions; never trained on)",
        markdown_table(
            [
                "model",
                "text→image R@1 / R@5 / R@10",
                "median rank",
                "image→text R@1 / R@5 / R@10",
                "median rank",
            ],
            flickr_rows,
        ),
        f"Chance (a random ranking): text→image R@10 = {pct(chance['text_to_image_R@10'])} "
        f"(10 of 200 photos), image→text R@10 = {pct(chance['image_to_text_R@10'])} "
        "(at least one of 5 captions in the top 10 of 1,000).",
    ]
    for r in results:
        rows = [
            [q["query"], q["class"], f"{q['precision_at_10']:.1f}"]
            for q in r["cifar10_test"]["queries"]
        ]
        parts += [
            f"### Held-out queries, `{r['model']}` (mean P@10 "
            f"{r['cifar10_test']['mean_query_precision_at_10']:.3f})",
            markdown_table(["query", "class", "P@10"], rows),
        ]
    ann_rows = []
    for r in results:
        for kind, label in (("", "exact (IndexFlatIP)"), ("_hnsw", "HNSW32, efSearch 64")):
            c, f = r[f"cifar10_test{kind}"], r[f"flickr8k_val{kind}"]
            ann_rows.append([
                f"`{r['model']}`", label, pct(c["zero_shot_accuracy"]),
                f"{c['mean_precision_at_10']:.3f}", f"{c['mean_query_precision_at_10']:.3f}",
                pct(f["text_to_image"]["R@10"]), pct(f["image_to_text"]["R@10"]),
            ])  # fmt: skip
    parts += [
        "## Exact versus ANN candidates (`clipsearch eval --ann`)",
        markdown_table(
            [
                "model",
                "candidates",
                "zero-shot",
                "class P@10",
                "held-out P@10",
                "Flickr t→i R@10",
                "Flickr i→t R@10",
            ],
            ann_rows,
        ),
        "Both rescore the candidates exactly; only the candidate stage differs. With HNSW, "
        "retrieval stops at depth 10, so median rank and full-depth mAP are not measured.",
        PUBLISHED,
    ]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="clipsearch-mini,tiny-random")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = []
    for model in args.models.split(","):
        print(f"evaluating {model} ...", flush=True)
        results.append(run(model, args.workers))
    body = render(results)
    path = write_result("quality", "Retrieval quality of the offline models", body)
    (RESULTS / "quality.json").write_text(json.dumps(results, indent=1) + "\n")
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
