"""Cold start of a search: where the wall time of `clipsearch search "..."` goes.

A fresh Python process per measurement (so nothing is imported or loaded yet; the OS file
cache is warm after the first run, as it is for a user's second search). Stages of a new query:
importing clipsearch, opening the index, importing torch + open_clip and loading the model,
encoding the query, searching; and the whole CLI command end to end, for a new query and for
a repeated one (whose embedding comes from the index's query cache: no model is loaded).

    .venv/bin/python benchmarks/startup.py [--model clipsearch-mini] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result

QUERY = "a dog running on the beach"
STAGES = """
import time, json, sys
t0 = time.perf_counter()
import clipsearch
t1 = time.perf_counter()
idx = clipsearch.open(sys.argv[1], create=False)
idx.vector_index()
t2 = time.perf_counter()
encoder = idx.encoder
t3 = time.perf_counter()
vector = encoder.encode_texts([sys.argv[2]])
t4 = time.perf_counter()
idx.search_vectors(vector, 10)
t5 = time.perf_counter()
print(json.dumps({"import clipsearch": t1 - t0, "open index + FAISS": t2 - t1,
                  "import torch/open_clip + load model": t3 - t2, "encode query": t4 - t3,
                  "search": t5 - t4}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clipsearch-mini")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("clipsearch"))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        images = datasets.FLICKR / "images"
        subprocess.run([cli, "index", str(images), "--db", str(db), "--model", args.model, "-q"],
                       check=True, capture_output=True)  # fmt: skip
        stages: dict[str, list[float]] = {}
        totals, cli_new, cli_repeated = [], [], []
        for run in range(args.runs):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", STAGES, str(db), QUERY], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            totals.append(time.perf_counter() - started)
            for name, seconds in json.loads(out).items():
                stages.setdefault(name, []).append(seconds)
            for query, times in ((f"{QUERY} {run}", cli_new), (QUERY, cli_repeated)):
                started = time.perf_counter()
                subprocess.run([cli, "search", query, "--db", str(db)], check=True,
                               capture_output=True)  # fmt: skip
                times.append(time.perf_counter() - started)
    rows = [[name, f"{statistics.median(v):.3f}"] for name, v in stages.items()]
    rows.append(["instrumented process, wall (incl. interpreter start)",
                 f"{statistics.median(totals):.3f}"])  # fmt: skip
    rows.append(
        ["`clipsearch search` end to end, a new query", f"{statistics.median(cli_new):.3f}"]
    )
    rows.append(["`clipsearch search` end to end, a repeated query (cached embedding)",
                 f"{statistics.median(cli_repeated):.3f}"])  # fmt: skip
    table = markdown_table(["stage", "seconds (median)"], rows)
    notes = (
        f"Model `{args.model}`, an index of the 800 Flickr8k-dev photos, median of {args.runs} "
        "fresh processes each (file cache warm). The stage rows come from one instrumented "
        "process per run (a new query each time); the end-to-end rows are the CLI itself."
    )
    body = f"{table}\n\n{notes}"
    path = write_result(f"startup_{args.model.split(':')[0]}", "Search start-up", body)
    (RESULTS / f"startup_{args.model.split(':')[0]}.json").write_text(
        json.dumps(stages, indent=1) + "\n"
    )
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
