"""The shared data sets beside the repo (`../shared/datasets`), prepared for training and eval.

Nothing here is copied into the repository: CIFAR-10 is extracted into a cache folder
(`$CLIPSEARCH_DATA_CACHE`, default `~/.cache/clipsearch-data`), and evaluation subsets of
Flickr8k are folders of symlinks plus a filtered captions CSV in a temporary folder.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import tarfile
from collections import defaultdict
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
FLICKR = SHARED / "flickr8k-dev"
CIFAR = SHARED / "cifar10"
HELDOUT = Path(__file__).resolve().parent / "data" / "heldout_queries.json"
FLICKR_SEED = 0
FLICKR_FIT = 600  # of 800 photos; the other 200 are the validation split

CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "clipsearch-data"
    return Path(os.environ.get("CLIPSEARCH_DATA_CACHE", default))


def cifar_folder(split: str) -> Path:
    """`.../cifar10-{split}/<class>/NNNN.jpg`, extracted once from the shared tarball."""
    target = cache_dir() / f"cifar10-{split}"
    if not (target / "done").exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CIFAR / f"{split}.tar.gz") as tar:
            tar.extractall(cache_dir(), filter="data")
        (target / "done").touch()
    return target


def flickr_captions() -> dict[str, list[str]]:
    captions: dict[str, list[str]] = defaultdict(list)
    with (FLICKR / "captions.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            captions[row["image"]].append(row["caption"].strip())
    return dict(captions)


def flickr_split() -> tuple[list[str], list[str]]:
    """(fit, validation) image names: a seeded shuffle of the sorted names, 600 / 200."""
    names = sorted(flickr_captions())
    random.Random(FLICKR_SEED).shuffle(names)
    return sorted(names[:FLICKR_FIT]), sorted(names[FLICKR_FIT:])


def heldout_queries() -> list[dict[str, object]]:
    queries: list[dict[str, object]] = json.loads(HELDOUT.read_text())["queries"]
    return queries


def novel_words() -> set[str]:
    return {str(w).lower() for q in heldout_queries() for w in q["novel"]}  # type: ignore[attr-defined]


def mentions_novel_word(caption: str, words: set[str]) -> bool:
    return any(token in words for token in re.findall(r"[a-z]+(?:-[a-z]+)?", caption.lower()))


def flickr_eval_folder(names: list[str], dest: Path) -> tuple[Path, Path]:
    """A folder of symlinks to the given photos and a captions CSV for them."""
    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    captions = flickr_captions()
    csv_path = dest / "captions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for name in names:
            link = images / name
            if not link.exists():
                link.symlink_to(FLICKR / "images" / name)
            for caption in captions[name]:
                writer.writerow([name, caption])
    return images, csv_path
