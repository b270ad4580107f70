"""Scale-out on Ray, measured on one machine: what the cluster layer costs and what it can do.

Three parts, each in fresh processes, written to benchmarks/results/scale_out.md (+ .json):

- `index`: the 800 Flickr photos with clipsearch-mini (batch 32) into PostgreSQL, the local
  pipeline (2 decoding processes) against `RayRunner` on a local `ray.cluster_utils.Cluster`
  of 1, 2 and 3 nodes sharing this machine's 2 cores (1 x 2 CPUs, 2 x 1, 3 x 1: the last is
  oversubscribed), one encoder actor per node. "cold" includes starting the encoder actors
  (a model load each); "warm" is a second run into a fresh database with the actors up, the
  steady state of a long job. Rounds alternate the variants; medians are reported.
- `sink`: `SqlSink.write` into PostgreSQL and SQLite with batches of 32 and 256 synthetic
  rows (dimension 512): the rate one driver can commit at.
- `search`: N synthetic clustered unit vectors (default 1,000,000, dimension 384) written to
  PostgreSQL; single-process search (`Index.search_vectors`, auto index type) against
  `ShardedVectors` with 1, 2 and 4 shards on a 2-node local cluster: shard build time,
  p50/p99 of 300 single queries (k = 10), same hits as the single index.

    .venv/bin/python benchmarks/scale_out.py [--parts index,sink,search] [--rows 1000000]
        [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks._common import RESULTS, SHARED, markdown_table, write_result
from benchmarks.stores import INDEX_RUN, Postgres, _python

FLICKR = SHARED / "flickr8k-dev" / "images"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # local clusters stay on loopback

RAY_RUN = """
import json, sys, time, clipsearch, ray
from ray.cluster_utils import Cluster
from clipsearch.cluster import ClusterOptions, RayRunner
from clipsearch.indexer.options import PipelineOptions
nodes, cpus = int(sys.argv[4]), int(sys.argv[5])
head = {"num_cpus": cpus, "include_dashboard": False}
cluster = Cluster(initialize_head=True, head_node_args=head)
for _ in range(nodes - 1):
    cluster.add_node(num_cpus=cpus)
ray.init(address=cluster.address, logging_level="WARNING")
runner = RayRunner(PipelineOptions(32, 0, progress=False), ClusterOptions(cluster.address))
out = {}
for label, db in (("cold", sys.argv[1]), ("warm", sys.argv[2])):
    with clipsearch.open(db, model="clipsearch-mini", workers=0, batch_size=32) as idx:
        idx.encoder
        start = time.perf_counter()
        summary = idx.add([sys.argv[3]], runner=runner)
        out[label] = time.perf_counter() - start
        assert summary.added == 800, summary
print(json.dumps(out))
ray.shutdown(); cluster.shutdown()
"""

SINK_RUN = """
import json, sys, time
import numpy as np
from clipsearch.indexer.decode import ImageFacts
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.scan import FileStat
from clipsearch.indexer.sinks import SqlSink
from clipsearch.indexer.stages import EncodedBatch
from clipsearch.storage.db import Database
from clipsearch.storage.location import locate
db = Database.open(locate(sys.argv[1]))
db.set_meta(model_spec="synthetic", model_identity="synthetic", dim="512")
sink, batch, total = SqlSink(db), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
start = time.perf_counter()
for first in range(0, total, batch):
    ok = [(EmbedJob(FileStat(f"/p/{i:08d}.jpg", 1000 + i, i), None),
           ImageFacts(f"{i:064x}", 640, 480, "JPEG", None)) for i in range(first, first + batch)]
    vectors = rng.normal(size=(batch, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sink.write(EncodedBatch(ok, [], vectors, batch))
print(json.dumps({"rows_per_s": total / (time.perf_counter() - start)}))
"""

SEARCH_RUN = """
import json, sys, time
import numpy as np
import clipsearch, ray
from ray.cluster_utils import Cluster
from clipsearch.cluster import ShardedVectors
from benchmarks.vector_search import clustered
db, shard_counts, dim = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3])
queries = clustered(300, dim, seed=99)  # the data's distribution, other draws

def exact_top10(idx):
    best = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), 10), -1, dtype=np.int64)
    for chunk_ids, vectors in idx.db.iter_vectors(100_000):
        scores = np.concatenate([best, queries @ vectors.T], axis=1)
        wide = np.broadcast_to(chunk_ids, (len(queries), len(chunk_ids)))
        all_ids = np.concatenate([ids, wide], axis=1)
        top = np.argsort(-scores, axis=1)[:, :10]
        best, ids = np.take_along_axis(scores, top, 1), np.take_along_axis(all_ids, top, 1)
    return [set(row.tolist()) for row in ids]

def timed(idx):
    idx.search_vectors(queries[:5], k=10)
    times, hits = [], []
    for q in queries:
        start = time.perf_counter()
        found = idx.search_vectors(q[None, :], k=10)[0]
        times.append(time.perf_counter() - start)
        hits.append([h.id for h in found])
    recall = float(np.mean([len(set(h) & t) / 10 for h, t in zip(hits, truth)]))
    figures = [float(np.quantile(times, 0.5)) * 1e3, float(np.quantile(times, 0.99)) * 1e3]
    return figures, hits, recall

out = {}
with clipsearch.open(db, create=False) as idx:
    truth = exact_top10(idx)
    start = time.perf_counter()
    idx.vector_index()
    out["single_build_s"] = time.perf_counter() - start
    out["single_kind"] = idx.vector_index().kind
    out["single"], reference, out["single_recall"] = timed(idx)
    head = {"num_cpus": 1, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    for n in shard_counts:
        start = time.perf_counter()
        shards = ShardedVectors(idx.location.address, n, cluster.address)
        shards.wait_ready(timeout=3600)
        build = time.perf_counter() - start
        idx.use_vector_index(shards)
        figures, hits, recall = timed(idx)
        same = sum(a == b for a, b in zip(hits, reference)) / len(reference)
        kinds = sorted({s["kind"] for s in shards.status()})
        out[f"shards_{n}"] = {
            "build_s": build, "p50_p99": figures, "same_hits": same, "kinds": kinds,
            "recall": recall,
        }
        idx.use_vector_index(None)
        for actor in shards.shards:
            ray.kill(actor, no_restart=True)
    ray.shutdown(); cluster.shutdown()
print(json.dumps(out))
"""


def bench_index(pg: Postgres, rounds: int) -> dict[str, Any]:
    photos = len(list(FLICKR.glob("*.jpg")))
    variants: dict[str, list[float]] = {}
    for _ in range(rounds):
        local = _python(INDEX_RUN, pg.create(), str(FLICKR))
        variants.setdefault("local pipeline (2 decoding processes)", []).append(
            photos / local["seconds"]
        )
        for nodes, cpus in ((1, 2), (2, 1), (3, 1)):
            timed = _python(RAY_RUN, pg.create(), pg.create(), str(FLICKR), str(nodes), str(cpus))
            for label in ("cold", "warm"):
                name = f"Ray, {nodes} node(s) x {cpus} CPU, {label}"
                variants.setdefault(name, []).append(photos / timed[label])
    return {name: sorted(v) for name, v in variants.items()}


def bench_sink(pg: Postgres, work: Path) -> dict[str, float]:
    out = {}
    for batch in (32, 256):
        total = 20_480
        out[f"PostgreSQL, batch {batch}"] = _python(SINK_RUN, pg.create(), str(batch), str(total))[
            "rows_per_s"
        ]
        folder = work / f"sink{batch}"
        out[f"SQLite, batch {batch}"] = _python(SINK_RUN, str(folder), str(batch), str(total))[
            "rows_per_s"
        ]
    return out


def bench_search(pg: Postgres, rows: int, dim: int) -> dict[str, Any]:
    from benchmarks.vector_search import clustered
    from clipsearch.storage.db import Database, ImageRecord
    from clipsearch.storage.location import locate

    url = pg.create()
    store = Database.open(locate(url))
    store.set_meta(model_spec="synthetic", model_identity="synthetic", dim=str(dim))
    start = time.perf_counter()
    vectors = clustered(rows, dim, seed=1)
    for first in range(0, rows, 5_000):
        chunk = vectors[first : first + 5_000]
        store.write_images(
            [
                ImageRecord(f"/s/{i % 100:02d}/{i:08d}.jpg", 1, 1, f"{i:064x}", 4, 3, "JPEG",
                            None, chunk[i - first])
                for i in range(first, first + len(chunk))
            ]
        )  # fmt: skip
    store.close()
    written = time.perf_counter() - start
    result: dict[str, Any] = _python(SEARCH_RUN, url, "1,2,4", str(dim))
    result["write_s"] = written
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="index,sink,search")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    saved = RESULTS / "scale_out.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    pg = Postgres()
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            if "index" in parts:
                results["index"] = bench_index(pg, args.rounds)
            if "sink" in parts:
                results["sink"] = bench_sink(pg, Path(work))
            if "search" in parts:
                results["search"] = {"rows": args.rows, "dim": args.dim,
                                     **bench_search(pg, args.rows, args.dim)}  # fmt: skip
    finally:
        pg.close()
    saved.write_text(json.dumps(results, indent=1))
    body = report(results)
    write_result("scale_out", "Scale-out on Ray, on one 2-core machine", body)
    print(body)


def report(results: dict[str, Any]) -> str:
    sections = []
    if "index" in results:
        runs = results["index"]
        base = statistics.median(runs["local pipeline (2 decoding processes)"])
        rows = [[name, f"{statistics.median(v):.0f}", " / ".join(f"{x:.0f}" for x in v),
                 f"{statistics.median(v) / base:.2f}"] for name, v in runs.items()]  # fmt: skip
        sections.append(
            "Indexing the 800 flickr8k-dev photos with clipsearch-mini into PostgreSQL "
            "(img/s of `Index.add`, model loaded on the driver before the clock):\n\n"
            + markdown_table(["runner", "median img/s", "rounds", "vs local"], rows)
        )
    if "sink" in results:
        rows = [[name, f"{rate:,.0f}"] for name, rate in results["sink"].items()]
        sections.append(
            "`SqlSink.write` of synthetic encoded batches (dimension 512), one driver:\n\n"
            + markdown_table(["store, batch", "rows/s"], rows)
        )
    if "search" in results:
        s = results["search"]
        rows = [["single process", s["single_kind"], f"{s['single_build_s']:.1f}",
                 f"{s['single'][0]:.2f}", f"{s['single'][1]:.2f}",
                 f"{s['single_recall']:.3f}", "1.000"]]  # fmt: skip
        for key in sorted(k for k in s if k.startswith("shards_")):
            v = s[key]
            rows.append([f"{key.split('_')[1]} shard(s)", ", ".join(v["kinds"]),
                         f"{v['build_s']:.1f}", f"{v['p50_p99'][0]:.2f}",
                         f"{v['p50_p99'][1]:.2f}", f"{v['recall']:.3f}",
                         f"{v['same_hits']:.3f}"])  # fmt: skip
        sections.append(
            f"Search over {s['rows']:,} clustered unit vectors (dimension {s['dim']}) in "
            f"PostgreSQL (written in {s['write_s']:.0f} s including generation), 300 single "
            "queries, k = 10, ms per query through `Index.search_vectors` (exact rescoring on "
            "the driver); shards on a 2-node local cluster (1 CPU each). Build: the single "
            "index's first build; for shards, start to all ready (built in parallel). Queries "
            "come from the data's distribution (other draws); recall@10 against exact search "
            "over all vectors; same hits: share of queries whose 10 ids (in order) equal the "
            "single index's. Each shard sizes its own IVF index for its share of the vectors, "
            "so sharded and single IVF searches are both approximate, each its own way; with "
            "flat shards (the tests) the hits are identical.\n\n"
            + markdown_table(
                ["search", "index", "build s", "p50 ms", "p99 ms", "recall@10", "same hits"],
                rows,
            )
        )
    return "\n\n".join(sections)


if __name__ == "__main__":
    main()
