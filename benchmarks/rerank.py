"""What each re-ranking stage does to retrieval quality, with the reference model.

Text→image stages: near-duplicate collapse, MMR, hubness correction (inverted softmax over a
bank of Flickr8k fit-split captions), and a two-model ensemble (the shipped clipsearch-mini
with its previous checkpoint, v1, indexed alongside; weighted score and reciprocal-rank
fusion). Image→text stage: inverted softmax over a bank of images no query is among.

Measured on the Flickr8k validation split (Recall@1/5/10 and mAP@10) and CIFAR-10 test
(class-prompt precision@10 and mAP@10, held-out query precision@10, zero-shot accuracy),
with and without each stage, from one index per data set and model.

    .venv/bin/python benchmarks/rerank.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import clipsearch
from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from clipsearch.evaluation import evaluate_captions, evaluate_classes
from clipsearch.evaluation.classes import LabelledQuery
from clipsearch.index import Index
from clipsearch.search.ensemble import Ensemble, Member
from clipsearch.search.rerank import MMR, CollapseNearDuplicates, InvertedSoftmax, Reranker

REPO = Path(__file__).resolve().parent.parent
#: The commit that shipped clipsearch-mini v1 (10 epochs): the second model of the ensemble.
V1_COMMIT = "55c2e0c"
V1_PATH = "clipsearch/models/weights/clipsearch-mini.pt"
BANK_IMAGES_PER_CLASS = 200  # CIFAR-10 train images in the image bank (2,000 in all)


def previous_checkpoint() -> Path:
    """clipsearch-mini v1, taken from the repository's history into the data cache."""
    target = datasets.cache_dir() / "clipsearch-mini-v1.pt"
    if not target.exists():
        blob = subprocess.run(
            ["git", "show", f"{V1_COMMIT}:{V1_PATH}"], cwd=REPO, check=True, capture_output=True
        ).stdout
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return target


def stored_vectors(idx: Index) -> np.ndarray[Any, Any]:
    return np.concatenate([v for _, v in idx.db.iter_vectors()])


def cifar_bank_files() -> list[Path]:
    train = datasets.cifar_folder("train")
    return [
        p
        for c in datasets.CIFAR_CLASSES
        for p in sorted((train / c).glob("*.jpg"))[:BANK_IMAGES_PER_CLASS]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clipsearch-mini")
    parser.add_argument("--second-model", default=None, help="[clipsearch-mini v1 checkpoint]")
    args = parser.parse_args()
    second = args.second_model or f"clipsearch-mini:{previous_checkpoint()}"
    second_label = args.second_model or f"clipsearch-mini v1 (commit {V1_COMMIT}, 10 epochs)"
    queries = [LabelledQuery(str(q["query"]), str(q["class"])) for q in datasets.heldout_queries()]
    fit, val = datasets.flickr_split()
    every = datasets.flickr_captions()
    cifar_test = datasets.cifar_folder("test")
    t2i: dict[str, dict[str, Any]] = {}
    i2t: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, captions = datasets.flickr_eval_folder(val, root / "flickr-val")
        fit_images, _ = datasets.flickr_eval_folder(fit, root / "flickr-fit")
        with (
            clipsearch.open(root / "flickr-db", model=args.model) as flickr,
            clipsearch.open(root / "cifar-db", model=args.model) as cifar,
            clipsearch.open(root / "flickr-db2", model=second) as flickr2,
            clipsearch.open(root / "cifar-db2", model=second) as cifar2,
            clipsearch.open(root / "flickr-bank", model=args.model) as flickr_bank,
            clipsearch.open(root / "cifar-bank", model=args.model) as cifar_bank,
        ):
            flickr2.add([images])
            cifar2.add([cifar_test])
            flickr_bank.add([fit_images])
            cifar_bank.add(cifar_bank_files())
            # Banks of typical queries no evaluation query is among: fit-split captions for
            # text queries, fit-split photos / CIFAR train images for image queries.
            caption_bank = flickr.encoder.encode_texts([c for name in fit for c in every[name]])

            def both(
                rerankers: list[Reranker] = [],  # noqa: B006 - read only
                ensembles: tuple[Ensemble, Ensemble] | None = None,
                f_text: list[Reranker] = [],  # noqa: B006
                c_text: list[Reranker] = [],  # noqa: B006
            ) -> dict[str, Any]:
                f = evaluate_captions(
                    flickr, images, captions, rerankers=rerankers, text_rerankers=f_text,
                    ensemble=ensembles[0] if ensembles else None,
                )  # fmt: skip
                c = evaluate_classes(
                    cifar, cifar_test, queries, rerankers=rerankers, text_rerankers=c_text,
                    ensemble=ensembles[1] if ensembles else None,
                )  # fmt: skip
                return {"flickr8k_val": f.to_dict(), "cifar10_test": c.to_dict()}

            t2i_stages: dict[str, Any] = {
                "none (exact rescoring only)": {},
                "near-duplicate collapse 0.95": {"rerankers": [CollapseNearDuplicates(0.95)]},
                "MMR 0.3": {"rerankers": [MMR(0.3)]},
                "MMR 0.1": {"rerankers": [MMR(0.1)]},
                "collapse 0.95 + MMR 0.3": {"rerankers": [CollapseNearDuplicates(0.95), MMR(0.3)]},
            }
            for beta in (10.0, 20.0, 40.0):
                t2i_stages[f"inverted softmax, caption bank, beta {beta:g}"] = {
                    "rerankers": [InvertedSoftmax(caption_bank, beta)]
                }
            for label, fusion, weight in (
                ("ensemble with v1, score, weights 1 : 1", "score", 1.0),
                ("ensemble with v1, score, weights 1 : 0.5", "score", 0.5),
                ("ensemble with v1, reciprocal-rank fusion", "rrf", 1.0),
            ):
                t2i_stages[label] = {
                    "ensembles": (
                        Ensemble([Member(flickr), Member(flickr2, weight)], fusion),  # type: ignore[arg-type]
                        Ensemble([Member(cifar), Member(cifar2, weight)], fusion),  # type: ignore[arg-type]
                    )
                }
            for name, stage in t2i_stages.items():
                print(f"text→image stage: {name}", flush=True)
                t2i[name] = both(**stage)

            f_bank, c_bank = stored_vectors(flickr_bank), stored_vectors(cifar_bank)
            i2t["none"] = t2i["none (exact rescoring only)"]
            for beta in (10.0, 20.0, 40.0):
                name = f"inverted softmax, image bank, beta {beta:g}"
                print(f"image→text stage: {name}", flush=True)
                i2t[name] = both(
                    f_text=[InvertedSoftmax(f_bank, beta)], c_text=[InvertedSoftmax(c_bank, beta)]
                )

    t2i_rows = []
    for name, r in t2i.items():
        t, c = r["flickr8k_val"]["text_to_image"], r["cifar10_test"]
        t2i_rows.append(
            [name]
            + [f"{100 * t[f'R@{k}']:.1f}%" for k in (1, 5, 10)]
            + [f"{t['mAP@10']:.3f}"]
            + [
                f"{c['mean_precision_at_10']:.3f}",
                f"{c['mean_average_precision_at_10']:.3f}",
                f"{c['mean_query_precision_at_10']:.3f}",
            ]
        )
    i2t_rows = []
    for name, r in i2t.items():
        t, c = r["flickr8k_val"]["image_to_text"], r["cifar10_test"]
        i2t_rows.append(
            [name]
            + [f"{100 * t[f'R@{k}']:.1f}%" for k in (1, 5, 10)]
            + [f"{t['mAP@10']:.3f}", f"{100 * c['zero_shot_accuracy']:.1f}%"]
        )
    table_t2i = markdown_table(
        ["text→image stage", "Flickr R@1", "R@5", "R@10", "mAP@10", "CIFAR class P@10",
         "class mAP@10", "held-out P@10"],
        t2i_rows,
    )  # fmt: skip
    table_i2t = markdown_table(
        ["image→text stage", "Flickr R@1", "R@5", "R@10", "mAP@10", "CIFAR zero-shot acc."],
        i2t_rows,
    )
    notes = (
        f"Model `{args.model}`; the ensemble's second model: {second_label}, indexed alongside. "
        "Flickr8k validation split: 200 photos, 1,000 captions (text→image: 1,000 queries, one "
        "relevant photo each; image→text: 200 queries, five relevant captions each). CIFAR-10 "
        "test: 10,000 images; 10 class-prompt queries (prompt-ensembled), 27 held-out queries; "
        "zero-shot accuracy is image→text over the 10 class prompts. mAP@10 is average "
        "precision over the top 10 (divided by min(relevant, 10)), so it compares runs that "
        "stop at the top 10 with full rankings. Each re-ranker runs on the 40 exactly rescored "
        "candidates (k = 10, oversampling 4); the ensemble fuses each model's 40 candidates. "
        "Banks: 2,967 Flickr8k fit-split captions (text queries), the 600 fit-split photos "
        f"(Flickr image queries), {10 * BANK_IMAGES_PER_CLASS:,} CIFAR-10 train images (CIFAR "
        "image queries)."
    )
    body = f"{table_t2i}\n\n{table_i2t}\n\n{notes}"
    path = write_result("rerank", "Re-ranking stages", body)
    (RESULTS / "rerank.json").write_text(
        json.dumps({"text_to_image": t2i, "image_to_text": i2t}, indent=1) + "\n"
    )
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
