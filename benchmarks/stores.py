"""SQLite against PostgreSQL, and the code before the storage redesign against after, in one
run: indexing throughput, search latency at 100,000 rows, the write rate of the store, and
`clipsearch copy` in both directions.

- Indexing: the 800 Flickr photos with clipsearch-mini (2 decoding workers, batch 32),
  `Index.add` timed in a fresh process after the model is loaded; rounds alternate the
  variants, the median is reported.
- Search: 100,000 synthetic unit vectors (dimension 384, clipsearch-mini's) written through
  `Database.write_images` in batches of 1,000 (that is the write rate), then 300 single
  queries through `Index.search_vectors` (k = 10: FAISS candidates, exact rescoring on the
  stored vectors) unfiltered and with a path filter matching 10%, in a fresh process after
  a warm-up; p50 and p99 per query.
- "before" runs the same workload on a checkout of REV (default: the last commit before the
  redesign) in a git worktree, "after" on a checkout of AFTER (default HEAD), both with the
  same virtual environment; "before" has no PostgreSQL.

    .venv/bin/python benchmarks/stores.py [--rounds 3] [--rows 100000] [--before-rev REV]
        [--after-rev AFTER]

PostgreSQL: the local server as the current user (`CLIPSEARCH_BENCH_POSTGRES` for another
admin URL); each store is a fresh database, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import RESULTS, SHARED, markdown_table, write_result

REPO = Path(__file__).resolve().parent.parent
FLICKR = SHARED / "flickr8k-dev" / "images"
BEFORE_REV = "c559321"  # the last commit before issue 14's storage redesign
ADMIN = os.environ.get(
    "CLIPSEARCH_BENCH_POSTGRES", "postgresql+psycopg://@/postgres?host=/var/run/postgresql"
)
DIM = 384

INDEX_RUN = """
import json, sys, time, clipsearch
with clipsearch.open(sys.argv[1], model="clipsearch-mini", workers=2, batch_size=32) as idx:
    idx.encoder  # loaded before the clock starts
    start = time.perf_counter()
    summary = idx.add([sys.argv[2]])
    print(json.dumps({"seconds": time.perf_counter() - start, "added": summary.added}))
"""

SEARCH_RUN = """
import json, sys, time
import numpy as np
import clipsearch
from clipsearch.search.filters import Filter
rng = np.random.default_rng(1)
queries = rng.normal(size=(int(sys.argv[2]), int(sys.argv[3]))).astype(np.float32)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
out = {}
with clipsearch.open(sys.argv[1], create=False) as idx:
    for name, flt in [("all", None), ("filtered", Filter(path_glob="/s/0?/*"))]:
        idx.search_vectors(queries[:5], k=10, filters=flt)  # warm: FAISS loaded or built
        times = []
        for q in queries:
            start = time.perf_counter()
            idx.search_vectors(q[None, :], k=10, filters=flt)
            times.append(time.perf_counter() - start)
        out[name] = times
print(json.dumps(out))
"""


class Postgres:
    def __init__(self) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
        self.made: list[str] = []

    def create(self) -> str:
        from sqlalchemy.engine import make_url

        name = f"clipsearch_bench_{uuid.uuid4().hex[:10]}"
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return make_url(ADMIN).set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        with self.engine.connect() as conn:
            for name in self.made:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.engine.dispose()


def _python(code: str, *args: str, tree: Path = REPO) -> Any:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tree
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worktree(rev: str, where: Path, name: str) -> Path:
    tree = where / name
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), rev],
                   check=True)  # fmt: skip
    return tree


def build_rows(db: str, n: int) -> float:
    """n synthetic rows through the store's write path; returns rows/s."""
    from clipsearch.storage.db import Database, ImageRecord
    from clipsearch.storage.location import locate

    rng = np.random.default_rng(0)
    store = Database.open(locate(db))
    store.set_meta(model_spec="synthetic", model_identity="synthetic", dim=str(DIM))
    start = time.perf_counter()
    for first in range(0, n, 1_000):
        x = rng.normal(size=(min(1_000, n - first), DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        store.write_images(
            [
                ImageRecord(f"/s/{i % 100:02d}/{i:07d}.jpg", 1, 1, f"{i:064x}", 4, 3, "JPEG",
                            None, x[i - first])
                for i in range(first, first + len(x))
            ]
        )  # fmt: skip
    seconds = time.perf_counter() - start
    store.close()
    return n / seconds


def _ms(times: list[float], q: float) -> str:
    return f"{1000 * float(np.quantile(times, q)):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--after-rev", default="HEAD")
    args = parser.parse_args()
    pg = Postgres()
    work = Path(tempfile.mkdtemp(prefix="clipsearch-stores-"))
    before = _worktree(args.before_rev, work, "before")
    after = _worktree(args.after_rev, work, "after")
    try:
        report = run(args, pg, work, before, after)
    finally:
        pg.close()
        for tree in (before, after):
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)])
    (RESULTS / "stores.json").write_text(json.dumps(report, indent=2))


def run(
    args: argparse.Namespace, pg: Postgres, work: Path, before: Path, after: Path
) -> dict[str, Any]:
    from clipsearch.storage.transfer import copy

    variants = {  # name -> (code tree, a fresh store for round r)
        "before (SQLite)": (before, lambda r: str(work / f"before-{r}")),
        "after (SQLite)": (after, lambda r: str(work / f"after-{r}")),
        "after (PostgreSQL)": (after, lambda r: pg.create()),
    }
    index_rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            tree, fresh = variants[name]
            got = _python(INDEX_RUN, fresh(r), str(FLICKR), tree=tree)
            index_rates[name].append(got["added"] / got["seconds"])
            print(f"index {name}: {index_rates[name][-1]:.0f} img/s", file=sys.stderr)

    sqlite_db, pg_db = str(work / "rows-sqlite"), pg.create()
    write_rates = {
        "SQLite": build_rows(sqlite_db, args.rows),
        "PostgreSQL": build_rows(pg_db, args.rows),
    }
    searches: dict[str, dict[str, list[float]]] = {}
    for name, tree, db in [
        ("before (SQLite)", before, sqlite_db),
        ("after (SQLite)", after, sqlite_db),
        ("after (PostgreSQL)", after, pg_db),
    ]:
        searches[name] = _python(SEARCH_RUN, db, str(args.queries), str(DIM), tree=tree)
    copies = {
        "SQLite -> PostgreSQL": copy(sqlite_db, pg.create()).seconds,
        "PostgreSQL -> SQLite": copy(pg_db, str(work / "copied-back")).seconds,
    }
    body = _tables(args, index_rates, write_rates, searches, copies)
    print(body)
    write_result("stores", "Stores: SQLite and PostgreSQL, before and after the redesign", body)
    return {"index_img_per_s": index_rates, "write_rows_per_s": write_rates,
            "search_ms": {k: {f: [1000 * t for t in v] for f, v in s.items()}
                          for k, s in searches.items()},
            "copy_seconds": copies}  # fmt: skip


def _tables(
    args: argparse.Namespace,
    index_rates: dict[str, list[float]],
    write_rates: dict[str, float],
    searches: dict[str, dict[str, list[float]]],
    copies: dict[str, float],
) -> str:
    base = statistics.median(index_rates["before (SQLite)"])
    index_rows = [
        [name, f"{statistics.median(v):.0f}", " / ".join(f"{x:.0f}" for x in v),
         f"{statistics.median(v) / base:.2f}"]
        for name, v in index_rates.items()
    ]  # fmt: skip
    base_p50 = float(np.median(searches["before (SQLite)"]["all"]))
    search_rows = [
        [name, _ms(s["all"], 0.5), _ms(s["all"], 0.99), _ms(s["filtered"], 0.5),
         _ms(s["filtered"], 0.99), f"{float(np.median(s['all'])) / base_p50:.2f}"]
        for name, s in searches.items()
    ]  # fmt: skip
    return "\n\n".join(
        [
            f"Indexing the {FLICKR.parent.name} photos (800) with clipsearch-mini, "
            f"{args.rounds} rounds alternating the variants (img/s of `Index.add`):",
            markdown_table(["variant", "median img/s", "rounds", "vs before"], index_rows),
            f"Search at {args.rows:,} rows (dimension {DIM}), {args.queries} single queries, "
            "k = 10, ms per query (filtered: a path glob matching 10%):",
            markdown_table(
                ["variant", "p50", "p99", "filtered p50", "filtered p99", "p50 vs before"],
                search_rows,
            ),
            "Writing those rows through the store (`write_images`, batches of 1,000): "
            + ", ".join(f"{k} {v:,.0f} rows/s" for k, v in write_rates.items())
            + ".",
            f"`clipsearch copy` of the {args.rows:,}-row index (verified): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in copies.items())
            + ".",
        ]
    )


if __name__ == "__main__":
    main()
