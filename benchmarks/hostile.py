"""The classes of issue 28 for `benchmarks/reliability.py` (`--only special|orphans|
concurrency|nul|creation`), each with real processes on this machine:

- special: a FIFO, a /dev/zero link and a /dev/urandom link beside 200 photos; the default
  runtime's `clipsearch index` must end at rc 0 within a minute, its peak RSS recorded.
- orphans: `clipsearch index` of 1,600 photos on the default runtime killed with kill -9 at
  10 points while embedding, on both stores; the decoding workers must be gone within 5 s
  and the same command must then succeed at once (no `--wait`).
- concurrency: a fresh `clipsearch serve --no-batch-queries` per trial and runtime, 12 image
  uploads and 16 never-seen texts at once; every answer 200, `/api/health` within 5 s.
- nul: NUL in each query, filter and text search over HTTP, and in a sidecar, a caption and
  an EXIF field while indexing, on both stores: no 5xx, no failed run.
- creation: a first run killed at every system call of the database's creation (found by
  tracing a clean first run); the same command must then succeed and equal a clean run.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.processes import alive, children

PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
MODEL = "clipsearch-mini"  # the shipped model; its runtime is the default, `auto`


def _cli(*args: str) -> list[str]:
    return [PY, "-m", "clipsearch.cli", *args]


def _photos(folder: Path, count: int, size: tuple[int, int] = (320, 240)) -> Path:
    from tests.conftest import write_images

    if not folder.exists() or len(list(folder.glob("*.jpg"))) < count:
        write_images(folder, count, size=size)
    return folder


def _peak_rss_mib(command: list[str], timeout: float) -> tuple[int, float, float]:
    """(return code, seconds, peak RSS of the command in MiB), run in a fresh wrapper so
    that no earlier child's peak counts."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        f"rc = subprocess.run(sys.argv[1:], capture_output=True, timeout={timeout}).returncode\n"
        "print(rc, time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([PY, "-c", wrapper, *command], capture_output=True, text=True, env=ENV)
    rc, seconds, kib = out.stdout.split()
    return int(rc), float(seconds), int(kib) / 1024


# -- special files ----------------------------------------------------------------------------


def special_files() -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = _photos(root / "photos", 200)
        os.mkfifo(photos / "pipe.jpg")
        os.mkfifo(photos / "pipe.mp4")
        os.symlink("/dev/zero", photos / "zero.jpg")
        os.symlink("/dev/urandom", photos / "random.png")
        command = _cli("index", str(photos), "--db", str(root / "db"), "--model", MODEL, "-q")
        try:
            rc, seconds, peak = _peak_rss_mib(command, timeout=120)
        except ValueError:  # the wrapper died of its timeout: the run hung
            rc, seconds, peak = -1, 120.0, 0.0
        rows.append({"case": "FIFO .jpg/.mp4, /dev/zero and /dev/urandom links, 200 photos",
                     "rc": rc, "seconds": round(seconds, 1), "peak_rss_mib": round(peak),
                     "ok": rc == 0 and seconds < 60 and peak < 1536})  # fmt: skip
    return rows


# -- orphans after kill -9 --------------------------------------------------------------------


def orphans(stores: list[str], points: int = 10) -> list[dict[str, Any]]:
    """Kill points one second into embedding and then spread over a clean run's embedding
    time (measured first, per store), so that every one lands."""
    from benchmarks import datasets

    photos = _photos(datasets.cache_dir() / "hostile-1600-vga", 1600, size=(640, 480))
    rows = []
    for store in stores:
        with _store(store) as db:
            command = _cli("index", str(photos), "--db", db, "--model", MODEL, "-q")
            embedding = _embedding_seconds(command)
        delays = [1.0, *(embedding * (i + 1) / points for i in range(points - 1))]
        for delay in delays:
            with _store(store) as db:
                command = _cli("index", str(photos), "--db", db, "--model", MODEL, "-q")
                row = _kill_while_embedding(command, delay)
                row.update(store=store, killed_after_s=round(delay, 1))
                rows.append(row)
                print("orphans", row, flush=True)
    return rows


def _embedding_seconds(command: list[str]) -> float:
    """From the first decoding worker to the end of a clean run."""
    run = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while run.poll() is None and not children(run.pid):
        time.sleep(0.02)
    started = time.monotonic()
    run.wait()
    return time.monotonic() - started


def _kill_while_embedding(command: list[str], delay: float) -> dict[str, Any]:
    run = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 300
    while run.poll() is None and not workers and time.monotonic() < deadline:
        workers = children(run.pid)
        time.sleep(0.05)
    time.sleep(delay)
    workers |= children(run.pid)
    landed = run.poll() is None
    run.kill()
    run.wait()
    gone_by = time.monotonic() + 5
    while alive(workers) and time.monotonic() < gone_by:
        time.sleep(0.05)
    left = alive(workers)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    again = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900)
    return {"workers": len(workers), "landed": landed, "orphans_after_5s": len(left),
            "rerun_rc": again.returncode, "rerun_error": again.stderr.strip()[-300:],
            "ok": landed and not left and again.returncode == 0}  # fmt: skip


@contextlib.contextmanager
def _store(kind: str) -> Any:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield str(Path(tmp) / "db")
        return
    from tests.stores import ADMIN_URL, PostgresServer

    server = PostgresServer(ADMIN_URL)
    url = server.create()
    try:
        yield url
    finally:
        server.drop(url)


def postgres_reachable() -> bool:
    try:
        with _store("postgresql"):
            return True
    except BaseException:  # pytest.skip raises a BaseException subclass
        return False


# -- concurrency per runtime ------------------------------------------------------------------


def concurrency(runtimes: list[str], trials: int) -> list[dict[str, Any]]:
    import httpx

    import clipsearch
    from tests.conftest import make_image
    from tests.serving import serve, stop_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _photos(root / "photos", 24)
        with clipsearch.open(root / "db", model=MODEL, workers=0, runtime="torch",
                             precision="fp32") as idx:  # fmt: skip
            idx.add([root / "photos"])
        uploads = []
        for i in range(12):
            make_image(500 + i, (320, 240)).save(root / f"q{i}.jpg")
            uploads.append((root / f"q{i}.jpg").read_bytes())
        for runtime in runtimes:
            for trial in range(trials):
                process, base = serve(str(root / "db"), root, "--runtime", runtime,
                                      "--no-batch-queries")  # fmt: skip

                def image(i: int, base: str = base) -> str:
                    files = {"file": ("q.jpg", uploads[i], "image/jpeg")}
                    try:
                        r = httpx.post(f"{base}/api/search/image", files=files, timeout=60)
                        return str(r.status_code)
                    except httpx.HTTPError as exc:
                        return type(exc).__name__

                def text(i: int, base: str = base, run: str = f"{runtime}{trial}") -> str:
                    q = f"{run} query {i}: a {i} coloured shape"
                    try:
                        r = httpx.get(f"{base}/api/search", params={"q": q}, timeout=60)
                        return str(r.status_code)
                    except httpx.HTTPError as exc:
                        return type(exc).__name__

                started = time.monotonic()
                with ThreadPoolExecutor(28) as pool:
                    answers = [*pool.map(image, range(12)), *pool.map(text, range(16))]
                took = time.monotonic() - started
                health_started = time.monotonic()
                try:
                    health = httpx.get(f"{base}/api/health", timeout=5).status_code
                except httpx.HTTPError:
                    health = 0
                health_s = time.monotonic() - health_started
                stop_server(process)
                counts = Counter(answers)
                rows.append({"runtime": runtime, "trial": trial, "answers": dict(counts),
                             "seconds": round(took, 2), "health_s": round(health_s, 3),
                             "ok": counts == Counter({"200": 28}) and health == 200})  # fmt: skip
                print("concurrency", rows[-1], flush=True)
    return rows


# -- NUL --------------------------------------------------------------------------------------


NUL_REQUESTS = [
    ("GET", "/api/search", {"q": "a dog\x00"}),
    ("GET", "/api/search", {"q": "a dog\x00", "mode": "keyword"}),
    ("GET", "/api/search", {"q": "a dog\x00", "mode": "semantic"}),
    ("GET", "/api/search", {"q": "a dog", "folder": "/photos\x00"}),
    ("GET", "/api/search", {"q": "a dog", "path_glob": "*\x00*"}),
    ("GET", "/api/search", {"q": "a dog", "tag": "harbour\x00"}),
    ("GET", "/api/texts/search", {"q": "a dog\x00"}),
    ("POST", "/api/search", {"text": "a dog\x00", "filters": {"folder": "/x\x00"}}),
]


def nul(stores: list[str]) -> list[dict[str, Any]]:
    from PIL import Image

    from tests.conftest import make_image
    from tests.serving import serve, stop_server

    rows = []
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp, _store(store) as db:
            root = Path(tmp)
            photos = _photos(root / "photos", 4)
            (photos / "img_0000.txt").write_text("a red\x00 bicycle")
            exif = Image.Exif()
            exif[271] = "Can\x00on"
            make_image(9).save(photos / "exif.jpg", exif=exif)
            captions = root / "captions.csv"
            captions.write_text(f"image,caption\n{photos / 'img_0001.jpg'},a green\x00 tram\n")
            runs = [subprocess.run(c, capture_output=True, text=True, env=ENV) for c in (
                _cli("index", str(photos), "--db", db, "--model", MODEL, "-q"),
                _cli("texts", "add", str(captions), "--db", db),
            )]  # fmt: skip
            rows.append({"store": store, "case": "index: sidecar, EXIF Make, caption with NUL",
                         "result": ", ".join(f"rc {r.returncode}" for r in runs),
                         "ok": all(r.returncode == 0 for r in runs)})  # fmt: skip
            process, base = serve(db, root)
            try:
                rows += [_nul_request(base, store, *request) for request in NUL_REQUESTS]
            finally:
                stop_server(process)
    return rows


def _nul_request(base: str, store: str, method: str, path: str, data: dict[str, Any]) -> dict:
    import httpx

    with httpx.Client(base_url=base, timeout=60) as http:
        get = method == "GET"
        response = http.get(path, params=data) if get else http.post(path, json=data)
        again = http.get("/api/health")  # the same keep-alive connection still serves
    return {"store": store, "case": f"{method} {path} {data!r}",
            "result": f"{response.status_code}, then {again.status_code}",
            "ok": response.status_code < 500 and again.status_code == 200}  # fmt: skip


# -- first-run kills at every system call of creation -------------------------------------------

CREATION_CALLS = ("openat", "write", "pwrite64", "fsync", "fdatasync", "ftruncate", "rename",
                  "unlink", "mkdir")  # fmt: skip


def creation_points(command: list[str], folder: Path) -> list[tuple[str, int]]:
    """(syscall, nth call of it by that thread) for every traced call from the index
    folder's creation to the new database's rename into place, in a clean first run."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as trace:
        subprocess.run(["strace", "-f", "-qq", "-o", trace.name, "-e",
                        f"trace={','.join(CREATION_CALLS)}", *command],
                       env=ENV, capture_output=True, check=True)  # fmt: skip
        lines = Path(trace.name).read_text().splitlines()
    seen: Counter[tuple[str, str]] = Counter()
    points, creating = [], False
    for line in lines:
        found = re.match(r"(\d+)\s+(\w+)\(", line)
        if found is None:
            continue
        tid, call = found.groups()
        seen[(tid, call)] += 1
        if call == "mkdir" and str(folder) in line:
            creating = True
        if creating:
            points.append((call, seen[(tid, call)]))
        if creating and call == "rename" and "clipsearch.db" in line:
            break
    return points


def creation_kills(limit: int | None = None) -> list[dict[str, Any]]:
    from benchmarks.reliability import differences, kill_at_syscall, run, state_of

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = _photos(root / "photos", 12)

        def command(db: Path) -> list[str]:
            return _cli("index", str(photos), "--db", str(db), "--model", "tiny-random",
                        "--workers", "0", "-q")  # fmt: skip

        assert run(command(root / "clean")).returncode == 0
        clean = state_of(root / "clean")
        points = creation_points(command(root / "traced"), root / "traced")
        for call, nth in points[:limit]:
            db = root / f"k-{call}-{nth}"
            killed = kill_at_syscall(command(db), call, nth)
            again = run(command(db))
            diffs = [again.stderr.strip()] if again.returncode else differences(state_of(db), clean)
            rows.append({"kill": f"{call} #{nth}", "killed": killed, "equal": not diffs,
                         "differences": diffs[:2]})  # fmt: skip
            print("creation", rows[-1], flush=True)
    return rows
