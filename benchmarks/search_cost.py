"""What one search costs a server, in-process, with its query vector already cached: the
part of a request that is neither the model nor HTTP (SQL, the keyword index, FAISS, exact
rescoring, fusion). Opens a `SearchService` over a copy of an index, encodes N never-seen
captions once through the batcher, then times `SearchService.search` over them (hybrid, 20
hits), and with `--profile` prints cProfile's top functions of a third pass.

    .venv/bin/python benchmarks/search_cost.py [--db INDEX] [--n 300] [--profile]

`--db` may be a PostgreSQL URL: that database is searched as it is (not copied).

Default index: the 10,000-photo clipsearch-mini index of `serve_load.py` (built once).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serve_load import Queries, base_index
from clipsearch.search.query import Query
from clipsearch.server.service import SearchService
from clipsearch.server.settings import ServerSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="an index folder (copied first) or a PostgreSQL URL")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    source = args.db or str(base_index(10_000))
    with tempfile.TemporaryDirectory(prefix="clipsearch-search-cost-") as tmp:
        db: str | Path = source
        if "://" not in source:
            db = Path(tmp) / "index"
            shutil.copytree(source, db, ignore=shutil.ignore_patterns("done", "thumbnails"))
        service = SearchService(ServerSettings(db=db))
        try:
            queries = Queries()
            texts = [queries.unique() for _ in range(args.n)]

            async def encode() -> None:
                for start in range(0, len(texts), 16):
                    chunk = texts[start : start + 16]
                    await asyncio.gather(
                        *(service.encode_query_texts(Query.of(text=t)) for t in chunk)
                    )

            asyncio.run(encode())

            def run() -> None:
                for text in texts:
                    service.search(Query.of(text=text), 20, 0, None, False, "off", "hybrid")

            run()  # the first pass fills the caches a server keeps
            started = time.perf_counter()
            run()
            each = (time.perf_counter() - started) * 1000 / len(texts)
            where = Path(source).name
            print(f"{len(texts)} searches, vectors cached, on {where}: {each:.2f} ms each")
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                run()
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        finally:
            service.close()


if __name__ == "__main__":
    main()
