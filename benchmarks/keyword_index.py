"""The keyword index at scale: building it, keeping it in step, and what a search costs.

A synthetic SQLite index of N photos with descriptive file names and folders (words drawn
from the shipped vocabulary) and a caption for one photo in ten; then: the first build of
the FTS5 keyword index, a refresh with nothing changed, a refresh after one photo is renamed,
and the latency of keyword searches of one to three words, each a median over 200 queries.

    .venv/bin/python benchmarks/keyword_index.py [--images 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import RESULTS, markdown_table, write_result

DIM = 64


def build(directory: Path, n: int, words: list[str]) -> None:
    from clipsearch.storage.db import Database, ImageRecord
    from clipsearch.storage.texts import SourceFile, TextRecord, TextTable

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pick = rng.integers(0, len(words), (n, 6))
    paths = [
        f"/photos/{words[p[0]]} trip/{words[p[1]]}/{words[p[2]]}_{words[p[3]]}_{i}.jpg"
        for i, p in enumerate(pick)
    ]
    db = Database.open(directory)
    db.set_meta(model_spec="synthetic", model_identity="synthetic", dim=str(DIM),
                roots=json.dumps(["/photos"]))  # fmt: skip
    for start in range(0, n, 10_000):
        db.write_images([
            ImageRecord(paths[i], 1, 1, f"{i:064x}", 4, 3, "JPEG", None, vectors[i])
            for i in range(start, min(n, start + 10_000))
        ])  # fmt: skip
    captions = [
        TextRecord(f"a {words[p[4]]} next to a {words[p[5]]}", vectors[i], image_path=paths[i])
        for i, p in enumerate(pick) if i % 10 == 0
    ]  # fmt: skip
    TextTable(db).replace_source(
        SourceFile("captions", "/photos/captions.csv", "0" * 64, 1, 1), captions
    )
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()

    import clipsearch
    from clipsearch.storage.keyword_index import Fts5Keywords

    vocabulary = Path(clipsearch.__file__).parent / "data" / "vocabulary.txt"
    words = sorted({w for w in vocabulary.read_text().split() if w.isalpha() and w.islower()})
    rows, facts = [], {}
    with tempfile.TemporaryDirectory(prefix="clipsearch-kw-") as tmp:
        started = time.perf_counter()
        build(Path(tmp), args.images, words)
        facts["store_build_s"] = time.perf_counter() - started
        from clipsearch.storage.db import Database

        db = Database.open(Path(tmp))
        index = Fts5Keywords(db, Path(tmp))
        for label, step in (
            ("first build", lambda: None),
            ("refresh, nothing changed", lambda: None),
            ("refresh after one rename", lambda: db.apply_file_changes(
                [], [_move(db)], [])),
        ):  # fmt: skip
            step()
            started = time.perf_counter()
            changed = index.refresh()
            seconds = time.perf_counter() - started
            facts[label] = {"seconds": seconds, "documents_rewritten": changed}
            rows.append([label, f"{seconds * 1000:,.1f} ms", f"{changed:,}"])
        rng = np.random.default_rng(1)
        for n_words in (1, 2, 3):
            times = []
            for _ in range(200):
                terms = [str(w) for w in rng.choice(words, n_words, replace=False)]
                started = time.perf_counter()
                index.search(terms, (), 40)
                index.size()
                for term in terms:
                    index.document_frequency(term)
                times.append(time.perf_counter() - started)
            median = statistics.median(times) * 1000
            facts[f"search {n_words} words ms"] = median
            rows.append([f"keyword search, {n_words} word(s): p50", f"{median:.2f} ms", "-"])
        size = (Path(tmp) / "keywords.sqlite").stat().st_size
        facts["file_mb"] = size / 2**20
        db.close()
    table = markdown_table(["step", "time", "documents rewritten"], rows)
    body = (
        f"{args.images:,} synthetic photos (file and folder names of vocabulary words, a "
        f"caption for one in ten); keywords.sqlite {facts['file_mb']:.1f} MiB.\n\n{table}"
    )
    print(body)
    write_result("keyword_index", "The keyword index at scale (FTS5)", body)
    (RESULTS / "keyword_index.json").write_text(json.dumps(facts, indent=2))


def _move(db: object) -> object:
    from clipsearch.storage.db import Move

    first = db.stored_files()[0]  # type: ignore[attr-defined]
    return Move(first.id, first.path.replace(".jpg", "_renamed.jpg"), first.size, first.mtime_ns)


if __name__ == "__main__":
    main()
