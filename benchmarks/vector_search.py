"""Vector search at scale: 1,000,000 clustered unit vectors of dimension 512, 1,000 queries,
k = 10, through clipsearch's own path (FAISS candidates from the saved index, then exact
rescoring on the vectors stored in SQLite), against exact FAISS and numpy brute force.

The index is a real clipsearch database (SQLite rows with float32 vectors) written directly,
no model involved. Search is measured in a fresh process that only opens the index, so its
resident memory is the index's, not the generator's.

    .venv/bin/python benchmarks/vector_search.py [--n 1000000] [--index-type ivf-sq8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result

SEED = 0


def clustered(
    n: int, dim: int, seed: int, centres: int = 1000, noise: float = 1.0
) -> np.ndarray[Any, Any]:
    """Unit vectors around `centres` random centres, with noise `noise` times their scale."""
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(SEED).normal(size=(centres, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        x = middle[rng.integers(0, centres, stop - start)]
        x += noise * rng.normal(size=x.shape).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def cifar_embeddings(model: str, queries: int) -> tuple[np.ndarray[Any, Any], ...]:
    """Real embeddings: the 50,000 CIFAR-10 train images as the collection and the first
    `queries` test images as queries, embedded by `model` (indexed once into the data cache)."""
    import clipsearch

    out = []
    for split in ("train", "test"):
        db = datasets.cache_dir() / f"cifar10-{split}-{model.replace(':', '_').replace('/', '_')}"
        with clipsearch.open(db, model=model) as idx:
            idx.add([datasets.cifar_folder(split)])
            out.append(np.concatenate([v for _, v in idx.db.iter_vectors()]))
    return out[0], out[1][np.random.default_rng(0).permutation(len(out[1]))[:queries]]


def write_index(directory: Path, vectors: np.ndarray[Any, Any], vector_dtype: str) -> float:
    from clipsearch.storage.db import Database, ImageRecord

    started = time.perf_counter()
    db = Database.open(directory)
    db.convert_vectors(vector_dtype)  # on the empty table: only records the type
    dim = vectors.shape[1]
    db.set_meta(model_spec="synthetic", model_identity=f"synthetic-{dim}", dim=str(dim))
    for start in range(0, len(vectors), 20_000):
        db.write_images(
            [
                ImageRecord(f"/synthetic/{i:07d}.jpg", 1, 1, f"{i:064x}", 4, 3, "JPEG", None,
                            vectors[i])
                for i in range(start, min(len(vectors), start + 20_000))
            ]
        )  # fmt: skip
    db.close()
    return time.perf_counter() - started


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS now, VmHWM peak), in MiB. Not
    getrusage: Linux carries ru_maxrss across exec, so a child would report its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latencies(search: Any, queries: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = []
    for q in queries:
        started = time.perf_counter()
        search(q[None, :])
        out.append(time.perf_counter() - started)
    return np.array(out) * 1000


def child(directory: Path, queries_path: Path, k: int, nprobes: list[int]) -> None:
    """Open the index, then for each nprobe (IVF) search every query alone and all at once;
    print one JSON line per nprobe."""
    import clipsearch

    queries = np.load(queries_path)
    started = time.perf_counter()
    idx = clipsearch.open(directory, create=False)
    index = idx.vector_index()
    opened = time.perf_counter() - started
    rss_open = _status_mib("VmRSS")
    for nprobe in nprobes or [getattr(index, "nprobe", 0)]:
        if nprobe:
            index.nprobe = nprobe  # type: ignore[attr-defined]
        idx.search_vectors(queries[:5], k)  # warm caches
        single = latencies(lambda q: idx.search_vectors(q, k), queries)
        started = time.perf_counter()
        batch = idx.search_vectors(queries, k)
        batch_s = time.perf_counter() - started
        print(json.dumps({
            "open_s": opened, "kind": index.kind, "nprobe": nprobe,
            "rss_after_open_mib": rss_open, "peak_rss_mib": _status_mib("VmHWM"),
            "p50_ms": float(np.percentile(single, 50)), "p99_ms": float(np.percentile(single, 99)),
            "batch_qps": len(queries) / batch_s,
            "ids": [[h.id for h in row] for row in batch],
        }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index-type", default="auto")
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--name", default="vector_search", help="results file name")
    parser.add_argument("--vector-dtype", default="float32", help="float32 or float16 in SQLite")
    parser.add_argument("--nprobes", default="", help="IVF: measure these, e.g. 32,128,512")
    parser.add_argument(
        "--real", default="", help="a model: CIFAR-10 train embeddings, test images as queries"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        nprobes = [int(p) for p in args.nprobes.split(",") if p]
        child(Path(args.child[0]), Path(args.child[1]), args.k, nprobes)
        return

    import faiss

    import clipsearch

    if args.real:
        vectors, queries = cifar_embeddings(args.real, args.queries)
        args.n, args.dim = vectors.shape
    else:
        vectors = clustered(args.n, args.dim, 1, args.centres, args.noise)
        queries = clustered(args.queries, args.dim, 2, args.centres, args.noise)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        root = Path(tmp)
        write_s = write_index(root / "db", vectors, args.vector_dtype)
        np.save(root / "queries.npy", queries)
        print(f"wrote {args.n:,} rows in {write_s:.0f} s", flush=True)

        flat = faiss.IndexFlatIP(args.dim)
        flat.add(vectors)
        started = time.perf_counter()
        _, truth = flat.search(queries, args.k)  # ground truth, batched
        exact_batch_qps = len(queries) / (time.perf_counter() - started)
        sample = queries[:50]
        flat_ms = latencies(lambda q: flat.search(q, args.k), sample)
        numpy_ms = latencies(lambda q: np.argsort(-(vectors @ q[0]))[: args.k], sample)
        rows.append(["FAISS exact (IndexFlatIP), in RAM", "-", f"{np.percentile(flat_ms, 50):.1f}",
                     f"{np.percentile(flat_ms, 99):.1f}", f"{exact_batch_qps:.0f}", "1.000",
                     f"{vectors.nbytes / 2**20:.0f} (vectors)", "-"])  # fmt: skip
        rows.append(["numpy brute force, in RAM", "-", f"{np.percentile(numpy_ms, 50):.1f}",
                     f"{np.percentile(numpy_ms, 99):.1f}", "-", "1.000", "-", "-"])  # fmt: skip
        flat.reset()  # frees its 2 GB before the clipsearch index is built

        started = time.perf_counter()
        with clipsearch.open(root / "db", create=False) as idx:
            built = idx.reindex(args.index_type, args.nprobe)
            kind = built.kind
        build_s = time.perf_counter() - started
        print(f"built {kind} in {build_s:.0f} s", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--k", str(args.k), "--nprobes", args.nprobes,
             "--child", str(root / "db"), str(root / "queries.npy")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        print(out.stderr, file=sys.stderr)
        for line in out.stdout.strip().splitlines():
            result = json.loads(line)
            recall = np.mean([len(set(r) & {int(t) + 1 for t in tr}) / args.k
                              for r, tr in zip(result["ids"], truth, strict=True)])  # fmt: skip
            memory = f"{result['rss_after_open_mib']:.0f} open, {result['peak_rss_mib']:.0f} peak"
            rows.append([f"clipsearch {kind} nprobe {result['nprobe']} + exact rescoring",
                         f"{build_s:.0f}", f"{result['p50_ms']:.2f}", f"{result['p99_ms']:.2f}",
                         f"{result['batch_qps']:.0f}", f"{recall:.3f}", memory,
                         f"{result['open_s']:.2f}"])  # fmt: skip
        files = {p.name: p.stat().st_size for p in (root / "db").iterdir()}
    table = markdown_table(
        ["search", "build s", "p50 ms", "p99 ms", "batch q/s", "recall@10", "memory MiB",
         "open s"], rows,
    )  # fmt: skip
    data = (
        f"{args.n:,} real `{args.real}` embeddings of the CIFAR-10 train images (dimension "
        f"{args.dim}), stored in SQLite as {args.vector_dtype}; {len(queries):,} CIFAR-10 test "
        f"images as queries, k = {args.k}."
        if args.real
        else f"{args.n:,} vectors, dimension {args.dim}, clustered around {args.centres:,} "
        f"random centres (Gaussian noise {args.noise:g} times their scale), unit length, stored "
        f"in SQLite as {args.vector_dtype}; {args.queries:,} queries from the same distribution, "
        f"k = {args.k}."
    )
    notes = (
        f"{data} Single-query "
        "latency: one query per call (p50/p99 over all queries; numpy and FAISS exact over "
        "the first 50). clipsearch's figures are measured in a fresh process that opens the "
        "saved index: open s = opening the database and loading the FAISS file; memory = that "
        "process's resident set (FAISS index, Python, SQLite cache) after opening and at its "
        "peak. Build = training on a sample plus adding every vector read back from SQLite. "
        f"Files: {', '.join(f'{n} {s / 2**20:.0f} MiB' for n, s in sorted(files.items()))}. "
        f"Writing the {args.n:,} rows to SQLite took {write_s:.0f} s."
    )
    body = f"{table}\n\n{notes}"
    command = " ".join(sys.argv[1:])
    body += f"\n\nArguments: `{command or '(defaults)'}`."
    path = write_result(args.name, "Vector search at scale", body)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
