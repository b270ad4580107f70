"""What skipping exact rescoring saves when the vector index is exact (a flat float32 index,
`VectorIndex.exact`), on SQLite and PostgreSQL, in one run.

Synthetic unit vectors (dimension 384, clipsearch-mini's) written through the store; 300
single queries through `Index.search_vectors` (k = 10), unfiltered and with a path filter
matching 10%, each query timed twice in a row in alternating order: once with the flat index
declaring itself exact (its top k are the answer, only their paths are read) and once with
it declaring itself approximate (k x 4 candidates, their vectors fetched and rescored),
in the same process on the same open index.

    .venv/bin/python benchmarks/exact_skip.py [--rows 20000] [--queries 300]
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

import numpy as np

from benchmarks._common import RESULTS, markdown_table, write_result
from benchmarks.stores import DIM, Postgres, build_rows


def measure(db: str, queries: np.ndarray[Any, Any]) -> dict[str, dict[str, list[float]]]:
    import clipsearch
    from clipsearch.search.filters import Filter
    from clipsearch.storage.faiss_index import FlatIndex

    out: dict[str, dict[str, list[float]]] = {}
    with clipsearch.open(db, create=False) as idx:
        for name, flt in [("all", None), ("filtered", Filter(path_glob="/s/0?/*"))]:
            times: dict[str, list[float]] = {"skip": [], "rescore": []}
            idx.search_vectors(queries[:5], k=10, filters=flt)  # warm: FAISS built
            for n, q in enumerate(queries):
                order = ("skip", "rescore") if n % 2 else ("rescore", "skip")
                for variant in order:
                    FlatIndex.exact = variant == "skip"
                    start = time.perf_counter()
                    idx.search_vectors(q[None, :], k=10, filters=flt)
                    times[variant].append(time.perf_counter() - start)
            out[name] = times
    FlatIndex.exact = True
    return out


def _ms(times: list[float], q: float) -> float:
    return round(1000 * float(np.quantile(times, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(args.queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pg = Postgres()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as work:
            for store, db in [("SQLite", str(Path(work) / "db")), ("PostgreSQL", pg.create())]:
                build_rows(db, args.rows)
                results[store] = measure(db, queries)
    finally:
        pg.close()
    rows = []
    for store, by_filter in results.items():
        for name, times in by_filter.items():
            skip, rescore = times["skip"], times["rescore"]
            ratio = _ms(rescore, 0.5) / max(_ms(skip, 0.5), 1e-9)
            figures = [_ms(rescore, 0.5), _ms(rescore, 0.99), _ms(skip, 0.5), _ms(skip, 0.99)]
            rows.append([store, name, *(f"{f:.2f}" for f in figures), f"{ratio:.2f}"])
    table = markdown_table(
        ["store", "queries", "rescored p50", "rescored p99", "skipped p50", "skipped p99",
         "p50 speed-up"], rows)  # fmt: skip
    body = (
        f"{args.rows:,} rows (dimension {DIM}, flat index), {args.queries} single queries, "
        "k = 10, ms per query; filtered: a path glob matching 10%. Each query is run both "
        "ways back to back, alternating which goes first.\n\n" + table
    )
    write_result("exact_skip", "Skipping exact rescoring behind an exact index", body)
    summary = {s: {n: {v: [_ms(t, 0.5), _ms(t, 0.99)] for v, t in by.items()}
                   for n, by in f.items()} for s, f in results.items()}  # fmt: skip
    (RESULTS / "exact_skip.json").write_text(json.dumps({"rows": args.rows, **summary}, indent=1))
    print(body)


if __name__ == "__main__":
    main()
