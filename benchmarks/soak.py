"""Soak: `clipsearch serve` for 10 minutes with 20 clients, while the server indexes 10,000
new photos through its own jobs (one folder of 1,000 a minute). The clients mix never-seen
texts, image uploads, item lookups and more (`MIX`) on the server's default runtime. Counts
every request that is not a 200 (or fails to connect), times each (p50, p99 by kind), and
samples the server's resident memory every 10 s.

The index starts with 2,000 photos; the model is the shipped clipsearch-mini. Photos are
generated once into the data cache.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--clients 20] [--photos 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result

WORDS = ["dog", "beach", "red", "car", "sunset", "boat", "child", "snow", "city", "tree",
         "bicycle", "water", "grass", "ball", "mountain", "street", "bird", "horse"]  # fmt: skip


def photos(root: Path, count: int, per_folder: int = 1000) -> list[Path]:
    from tests.conftest import write_images

    folders = []
    for n in range(0, count, per_folder):
        folder = root / f"batch-{n // per_folder:03d}"
        if not folder.exists() or len(list(folder.iterdir())) < per_folder:
            write_images(folder, per_folder, start=n)
        folders.append(folder)
    return folders


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


#: What each client asks, with its share of requests: never-seen texts (each one encoded),
#: repeated texts, image uploads (encoded too), item lookups, similar items, thumbnails, stats.
MIX = (("unique text", 0.35), ("repeated text", 0.1), ("image upload", 0.15),
       ("item", 0.15), ("similar", 0.1), ("thumbnail", 0.1), ("stats", 0.05))  # fmt: skip


def upload_bodies(count: int = 8) -> list[bytes]:
    import io

    from tests.conftest import make_image

    bodies = []
    for seed in range(count):
        buffer = io.BytesIO()
        make_image(90_000 + seed, (640, 480)).save(buffer, "JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


def ask(http: httpx.Client, kind: str, rng: random.Random, uploads: list[bytes]) -> httpx.Response:
    item = rng.randint(1, 2000)
    if kind == "unique text":
        words = " ".join(rng.sample(WORDS, 3))
        return http.get("/api/search", params={"q": f"a {words} {rng.getrandbits(40):x}", "k": 20})
    if kind == "repeated text":
        return http.get("/api/search", params={"q": rng.choice(WORDS)})
    if kind == "image upload":
        files = {"file": ("q.jpg", rng.choice(uploads), "image/jpeg")}
        return http.post("/api/search/image", files=files, params={"k": 20})
    if kind == "item":
        return http.get(f"/api/items/{item}")
    if kind == "similar":
        return http.get(f"/api/items/{item}/similar")
    if kind == "thumbnail":
        return http.get(f"/api/items/{item}/thumbnail?size={rng.choice([128, 256])}")
    return http.get("/api/stats")


def client(
    base: str, stop: threading.Event, tally: dict[str, int], lock: threading.Lock,
    latencies: dict[str, list[float]], uploads: list[bytes],
) -> None:  # fmt: skip
    rng = random.Random(threading.get_ident())
    kinds, weights = zip(*MIX, strict=True)
    with httpx.Client(base_url=base, timeout=60) as http:
        while not stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            started = time.perf_counter()
            try:
                response = ask(http, kind, rng, uploads)
                key = "ok" if response.status_code == 200 else f"{kind}: {response.status_code}"
            except httpx.HTTPError as exc:
                key = f"{kind}: {type(exc).__name__}"
            took = time.perf_counter() - started
            with lock:
                tally[key] = tally.get(key, 0) + 1
                latencies.setdefault(kind, []).append(took)


def auto_choice() -> str:
    """What `--runtime auto` took on this machine (the fastest image tower it timed)."""
    import os

    cache = Path(os.environ.get("CLIPSEARCH_MODEL_CACHE", ""))
    for record in cache.glob("clipsearch-mini-*/choice.json"):
        speeds = json.loads(record.read_text())["images_per_second"]
        return f": {max(speeds, key=speeds.get)}, timed {json.dumps(speeds)}"
    return ""


def latency_rows(latencies: dict[str, list[float]]) -> list[list[str]]:
    import numpy as np

    rows = []
    for kind, _share in MIX:
        took = np.asarray(latencies.get(kind, [0.0])) * 1000
        rows.append([kind, f"{len(took):,}", f"{np.percentile(took, 50):.0f}",
                     f"{np.percentile(took, 99):.0f}", f"{took.max():.0f}"])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--model", default="clipsearch-mini")
    parser.add_argument("--runtime", default="auto", help="the server's (auto: its default)")
    args = parser.parse_args()
    from tests.serving import free_port

    data = datasets.cache_dir() / "soak-photos"
    start_folders = photos(data / "start", 2000)
    new_folders = photos(data / "new", args.photos)
    db = datasets.cache_dir() / "soak-index"
    subprocess.run(["rm", "-rf", str(db)], check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "index", *map(str, start_folders), "--db",
         str(db), "--model", args.model, "-q"], check=True, env=env,
    )  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(datasets.cache_dir() / "soak-server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "clipsearch.cli", "serve", "--db", str(db), "--port", str(port),
         "--log-level", "warning", "--runtime", args.runtime], env=env, stdout=log, stderr=log,
    )  # fmt: skip
    for _ in range(600):
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    stop, lock = threading.Event(), threading.Lock()
    tally: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    uploads = upload_bodies()
    threads = [threading.Thread(target=client, args=(base, stop, tally, lock, latencies, uploads))
               for _ in range(args.clients)]  # fmt: skip
    samples: list[tuple[float, float, int]] = []
    jobs: list[dict[str, Any]] = []
    started = time.monotonic()
    for t in threads:
        t.start()
    pending = list(new_folders)
    job_every = args.minutes * 60 / (len(new_folders) + 1)
    next_job = started + 5
    try:
        while (now := time.monotonic()) - started < args.minutes * 60:
            if pending and now >= next_job:
                running = httpx.get(f"{base}/api/stats").json().get("job")
                if running is None:
                    folder = pending.pop(0)
                    jobs.append(httpx.post(f"{base}/api/jobs", json={"paths": [str(folder)]},
                                           timeout=30).json())  # fmt: skip
                    next_job = now + job_every
            count = httpx.get(f"{base}/api/stats").json()["count"]
            samples.append((now - started, rss_mib(server.pid), count))
            time.sleep(10)
    finally:
        stop.set()
        for t in threads:
            t.join()
        final = [httpx.get(f"{base}/api/jobs/{j['id']}").json() for j in jobs]
        server.terminate()
        server.wait(timeout=60)
        log.close()
    seconds = time.monotonic() - started
    chosen = auto_choice() if args.runtime == "auto" else ""
    requests = sum(tally.values())
    errors = {k: v for k, v in tally.items() if k != "ok"}
    late = [s for s in samples if s[0] >= seconds / 2]
    rows = [
        [f"{t:.0f}", f"{r:.0f}", f"{c:,}"] for t, r, c in samples[:: max(1, len(samples) // 20)]
    ]
    body = "\n\n".join([
        f"{args.clients} clients for {seconds / 60:.1f} min against a server indexing "
        f"{args.photos:,} new photos in {len(jobs)} jobs (model {args.model}, runtime "
        f"{args.runtime}{chosen}; the index started at 2,000 photos).",
        markdown_table(["requests", "req/s", "not 200", "jobs done", "images at the end",
                        "RSS first / max / last MiB", "RSS range in the second half MiB"],
                       [[f"{requests:,}", f"{requests / seconds:.1f}",
                         json.dumps(errors) if errors else "0",
                         f"{sum(j['state'] == 'done' for j in final)} of {len(final)}",
                         f"{samples[-1][2]:,}",
                         f"{samples[0][1]:.0f} / {max(s[1] for s in samples):.0f} / "
                         f"{samples[-1][1]:.0f}",
                         f"{min(s[1] for s in late):.0f}-{max(s[1] for s in late):.0f}"]]),
        "Latency by request kind (ms, as each client saw it):\n\n"
        + markdown_table(["kind", "requests", "p50", "p99", "max"], latency_rows(latencies)),
        "Server RSS over time:\n\n" + markdown_table(["second", "RSS MiB", "images"], rows),
    ])  # fmt: skip
    print(body)
    name = "soak" if args.runtime == "auto" else f"soak_{args.runtime}"
    write_result(name, f"Soak: serving while indexing (runtime {args.runtime})", body)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"tally": tally, "samples": samples, "jobs": final}, indent=2)
    )


if __name__ == "__main__":
    main()
