"""Reliability under faults, with real processes: the kill -9 matrix, the two-writer matrix,
and an indexer running beside `clipsearch serve` while clients search.

- kill -9: each trial starts a real `clipsearch index` (or `texts add`, or a run with
  sidecars, or two writers at once) and kills it, either at an exact system call (strace's
  fault injection: the Nth rename, fsync, fdatasync, pwrite64, write or unlink) or once N rows
  are committed; then runs the same command(s) again to completion. The end state (every
  row's path, hash and vector; the texts; the top 10 of 3 queries) must equal a clean run's,
  and `verify` must pass.
- writers: two `clipsearch index --wait` at once, 20 trials of each scenario: a new index,
  the same folder, different folders, and one run replacing 50 photos while another adds 150.
  No row lost, none twice, the cache holding exactly the rows (`verify`).
- serve: a real server answers searches from 4 clients while another process indexes a new
  folder, 20 times: no error or 500, and after each run the server finds every row.
- special, orphans, concurrency, nul, creation: the hostile conditions of issue 28, in
  `benchmarks/hostile.py` (pipes and devices in a folder; workers after kill -9 while
  embedding, both stores; every runtime under concurrent queries; NUL on both stores; a
  first run killed at every system call of creating the database).

    .venv/bin/python benchmarks/reliability.py [--only NAME] [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import hostile
from benchmarks._common import RESULTS, markdown_table, write_result

PY = sys.executable
HOSTILE = ("special", "orphans", "concurrency", "nul", "creation")
RUNTIMES = ["torch", "onnx", "openvino"]
QUERIES = ("a red square", "a blue circle", "green")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cli(*args: str) -> list[str]:
    return [PY, "-m", "clipsearch.cli", *args]


def index_cmd(photos: Path, db: Path, *extra: str) -> list[str]:
    return cli(
        "index",
        str(photos),
        "--db",
        str(db),
        "--model",
        "tiny-random",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "-q",
        *extra,
    )


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


# -- the end state of an index --------------------------------------------------------------


@dataclass
class State:
    rows: dict[str, tuple[str, np.ndarray[Any, Any]]]
    texts: list[tuple[str, str | None]]
    top: list[list[str]]
    verified: bool
    problems: list[str] = field(default_factory=list)


_ENCODER: Any = None


def state_of(db: Path) -> State:
    """The index's content with paths relative to the folder around it (trials run in
    different temporary folders)."""
    import clipsearch
    from clipsearch.models import load_encoder
    from clipsearch.storage.verify import verify

    global _ENCODER
    if _ENCODER is None:
        _ENCODER = load_encoder("tiny-random", device="cpu")
    report = verify(db)
    root = str(db.parent) + os.sep

    def rel(path: str | None) -> str | None:
        return path.removeprefix(root) if path else path

    with clipsearch.open(db, create=False, encoder=_ENCODER) as idx:
        rows = {
            str(rel(r.path)): (r.sha256, np.frombuffer(r.vector, np.float32).copy())
            for r in idx.db.rows()
        }
        found = idx.texts.table.rows(idx.texts.table.ids_of().tolist())
        texts = sorted((t.text, rel(t.image_path)) for t, _ in found.values())
        top = [[str(rel(h.path)) for h in idx.search(text=q, k=10)] for q in QUERIES]
    problems = [f"{p.kind}: {p.where}: {p.detail}" for p in report.problems]
    return State(rows, texts, top, report.ok, problems)


def differences(got: State, want: State) -> list[str]:
    out = []
    if got.rows.keys() != want.rows.keys():
        out.append(f"rows differ: {len(got.rows)} vs {len(want.rows)}")
    else:
        for path, (sha, vector) in want.rows.items():
            if got.rows[path][0] != sha or not np.allclose(got.rows[path][1], vector, atol=1e-5):
                out.append(f"row differs: {path}")
                break
    if got.texts != want.texts:
        out.append(f"texts differ: {len(got.texts)} vs {len(want.texts)}")
    if got.top != want.top:
        out.append("top 10 differs")
    if not got.verified:
        out.append("verify: " + "; ".join(got.problems[:3]))
    return out


# -- kill -9 ----------------------------------------------------------------------------------


def kill_at_syscall(command: list[str], syscall: str, nth: int) -> bool:
    """Run under strace, SIGKILLed at the nth call of `syscall`; whether the kill landed."""
    traced = [
        "strace",
        "-f",
        "-qq",
        "-o",
        os.devnull,
        "-e",
        f"trace={syscall}",
        "-e",
        f"inject={syscall}:signal=KILL:when={nth}",
        *command,
    ]
    return run(traced).returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)


def kill_at_rows(command: list[str], db: Path, table: str, rows: int) -> bool:
    """Run, SIGKILLed once `rows` rows of `table` are committed; whether the kill landed."""
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            # Read-only: a plain connect would create an empty file before the run does.
            with sqlite3.connect(
                f"file:{db / 'clipsearch.db'}?mode=ro", uri=True, timeout=1
            ) as conn:
                count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.Error:
            count = 0
        if count >= rows:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait()
    return killed and proc.returncode == -signal.SIGKILL


@dataclass
class Scenario:
    name: str
    setup: Callable[[Path], None]  # makes the photos (and the index's earlier state)
    commands: Callable[[Path], list[list[str]]]  # what runs (and is killed, the first)
    table: str = "images"
    #: The killed command starts first (and holds the writer lock) while the others wait;
    #: otherwise the others start first and the killed one queues behind them.
    killed_first: bool = False


def _photos(root: Path, count: int, start: int = 0, sub: str = "photos") -> Path:
    from tests.conftest import write_images

    write_images(root / sub, count, start)
    return root / sub


def _fresh(root: Path) -> None:
    _photos(root, 300)


def _incremental(root: Path) -> None:
    photos = _photos(root, 200)
    assert run(index_cmd(photos, root / "db")).returncode == 0
    from tests.conftest import make_image

    for i, path in enumerate(sorted(photos.iterdir())[:50]):
        make_image(9000 + i).save(path, quality=90)
    for path in sorted(photos.iterdir())[50:70]:
        path.unlink()
    _photos(root, 50, start=500)


def _captions(root: Path) -> None:
    photos = _photos(root, 40)
    assert run(index_cmd(photos, root / "db")).returncode == 0
    lines = ["image,caption"] + [
        f"photos/img_{i % 40:04d}.jpg,caption number {i} of a picture" for i in range(600)
    ]
    (root / "captions.csv").write_text("\n".join(lines) + "\n")


def _sidecars(root: Path) -> None:
    photos = _photos(root, 150)
    for i, path in enumerate(sorted(photos.iterdir())):
        path.with_suffix(".txt").write_text(f"a description of photo {i}")


def _two_folders(root: Path) -> None:
    _photos(root, 120, sub="a")
    _photos(root, 120, start=1000, sub="b")


SCENARIOS = {
    "new index, 300 photos": Scenario(
        "new index", _fresh, lambda r: [index_cmd(r / "photos", r / "db")]
    ),
    "re-run: 50 changed, 20 deleted, 50 new": Scenario(
        "incremental", _incremental, lambda r: [index_cmd(r / "photos", r / "db")]
    ),
    "texts add: 600 captions": Scenario(
        "captions",
        _captions,
        lambda r: [cli("texts", "add", str(r / "captions.csv"), "--db", str(r / "db"))],
        "texts",
    ),
    "index with 150 sidecar .txt": Scenario(
        "sidecars", _sidecars, lambda r: [index_cmd(r / "photos", r / "db")], "texts"
    ),
    "two writers (--wait), the waiting one killed": Scenario(
        "two writers, waiting one killed",
        _two_folders,
        lambda r: [index_cmd(r / "a", r / "db", "--wait"), index_cmd(r / "b", r / "db", "--wait")],
    ),
    "two writers (--wait), the running one killed": Scenario(
        "two writers, running one killed",
        _two_folders,
        lambda r: [index_cmd(r / "a", r / "db", "--wait"), index_cmd(r / "b", r / "db", "--wait")],
        killed_first=True,
    ),
}

#: (scenario, how, argument): syscall kills at the nth call, or row-count kills.
KILL_POINTS: list[tuple[str, str, Any]] = [
    *[("new index, 300 photos", "rows", n) for n in (4, 40, 120, 200, 296)],
    *[("new index, 300 photos", "rename", n) for n in (1, 2)],
    *[("new index, 300 photos", "unlink", n) for n in (1, 2)],
    *[("new index, 300 photos", "fsync", n) for n in (1, 2, 3)],
    *[("new index, 300 photos", "fdatasync", n) for n in (1, 3)],
    *[("new index, 300 photos", "pwrite64", n) for n in (3, 40, 300, 1200)],
    *[("new index, 300 photos", "write", n) for n in (5, 60)],
    *[("re-run: 50 changed, 20 deleted, 50 new", "pwrite64", n) for n in (2, 60, 400)],
    *[("re-run: 50 changed, 20 deleted, 50 new", "rename", n) for n in (1, 2)],
    ("re-run: 50 changed, 20 deleted, 50 new", "rows", 230),
    *[("texts add: 600 captions", "pwrite64", n) for n in (2, 20, 80)],
    ("texts add: 600 captions", "fsync", 1),
    *[("index with 150 sidecar .txt", "rows", n) for n in (1, 40, 120)],
    *[("two writers (--wait), the waiting one killed", "rows", n) for n in (30, 90)],
    ("two writers (--wait), the waiting one killed", "pwrite64", 100),
]

_RUNNING = "two writers (--wait), the running one killed"
_WAITING = "two writers (--wait), the waiting one killed"
#: The same faults with a second writer queued behind (or ahead of) the one killed.
KILL_POINTS_TWO_WRITERS: list[tuple[str, str, Any]] = [
    *[(_RUNNING, "rows", n) for n in (4, 30, 60, 90, 118)],
    *[
        (_RUNNING, call, n)
        for call, n in (
            ("rename", 1),
            ("rename", 2),
            ("unlink", 1),
            ("unlink", 2),
            ("fsync", 1),
            ("fsync", 2),
            ("fdatasync", 1),
            ("pwrite64", 3),
            ("pwrite64", 40),
            ("pwrite64", 150),
            ("pwrite64", 400),
            ("write", 5),
        )
    ],
    *[(_WAITING, "rows", n) for n in (10, 60, 120, 150, 200, 236)],
    *[
        (_WAITING, call, n)
        for call, n in (
            ("rename", 1),
            ("rename", 2),
            ("fsync", 1),
            ("pwrite64", 3),
            ("pwrite64", 40),
            ("pwrite64", 300),
            ("unlink", 1),
            ("fdatasync", 1),
        )
    ],
]


def kill_trial(scenario: Scenario, how: str, arg: Any, clean: State) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scenario.setup(root)
        commands = scenario.commands(root)
        # sh's `sleep 2` lets the killed command take the writer lock first when it should.
        delay = ["sh", "-c", 'sleep 2; exec "$0" "$@"'] if scenario.killed_first else []
        others = [
            subprocess.Popen(
                [*delay, *c], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for c in commands[1:]
        ]
        if how == "rows":
            killed = kill_at_rows(commands[0], root / "db", scenario.table, arg)
        else:
            killed = kill_at_syscall(commands[0], how, arg)
        for other in others:
            other.wait(timeout=600)
        reruns = [run(c) for c in commands]
        failed = [r.stderr.strip() for r in reruns if r.returncode != 0]
        diffs = failed or differences(state_of(root / "db"), clean)
    return {
        "scenario": scenario.name,
        "kill": f"{how} #{arg}" if how != "rows" else f"after {arg} {scenario.table} rows",
        "killed": killed,
        "equal": not diffs,
        "differences": diffs,
    }


def kill_matrix(points: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    clean: dict[str, State] = {}
    rows = []
    for name, how, arg in points:
        scenario = SCENARIOS[name]
        if name not in clean:
            with tempfile.TemporaryDirectory() as tmp:
                scenario.setup(Path(tmp))
                for command in scenario.commands(Path(tmp)):
                    assert run(command).returncode == 0
                clean[name] = state_of(Path(tmp) / "db")
        row = kill_trial(scenario, how, arg, clean[name])
        print(
            f"{name:<42} {row['kill']:<28} killed={row['killed']} equal={row['equal']}",
            row["differences"][:1],
            flush=True,
        )
        rows.append(row)
    return rows


# -- two writers ------------------------------------------------------------------------------


def writers_trial(kind: str, trial: int) -> dict[str, Any]:
    from tests.conftest import make_image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = root / "db"
        a = _photos(root, 40, sub="a")
        b = _photos(root, 40, start=1000, sub="b")
        expected = 80
        if kind == "same folder":
            commands = [index_cmd(a, db, "--wait"), index_cmd(a, db, "--wait")]
            expected = 40
        elif kind == "replace while adding":
            big = _photos(root, 150, start=2000, sub="big")
            assert run(index_cmd(b, db)).returncode == 0
            for i, path in enumerate(sorted(b.iterdir())):
                make_image(7000 + i + 100 * trial).save(path, quality=90)
            commands = [index_cmd(big, db, "--wait"), index_cmd(b, db, "--wait")]
            expected = 190
        else:
            if kind == "different folders":
                assert run(index_cmd(root / "a", db)).returncode == 0
                _photos(root, 40, start=3000, sub="a")  # more to add to both
                _photos(root, 40, start=4000, sub="b")
                expected = 160
            commands = [index_cmd(a, db, "--wait"), index_cmd(b, db, "--wait")]
        procs = []
        for command in commands:
            procs.append(
                subprocess.Popen(
                    command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            )
            time.sleep(0.1 * (trial % 10) if kind != "replace while adding" else 1.0)
        errors = [p.communicate(timeout=600)[1] for p in procs if p.wait(timeout=600) != 0]
        st = state_of(db)
        problems = [*errors, *st.problems]
        if len(st.rows) != expected:
            problems.append(f"{len(st.rows)} rows, {expected} expected")
        return {"scenario": kind, "trial": trial, "ok": not problems, "problems": problems}


def writers_matrix(trials: int) -> list[dict[str, Any]]:
    rows = []
    for kind in ("new index", "same folder", "different folders", "replace while adding"):
        for trial in range(trials):
            row = writers_trial(kind, trial)
            print(f"{kind:<22} {trial:>3} ok={row['ok']}", row["problems"][:1], flush=True)
            rows.append(row)
    return rows


# -- beside a server --------------------------------------------------------------------------


def _all_hits(base: str) -> set[int]:
    """Every image the server finds for a query, page by page (a page is at most 200)."""
    import httpx

    found: set[int] = set()
    for offset in range(0, 10_000, 200):
        page = httpx.get(
            f"{base}/api/search", params={"q": "x", "k": 200, "offset": offset}, timeout=60
        )
        if page.status_code != 200:
            return set()
        hits = page.json()["hits"]
        found |= {h["id"] for h in hits}
        if len(hits) < 200:
            break
    return found


def serve_matrix(trials: int) -> list[dict[str, Any]]:
    import httpx

    from tests.serving import free_port

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = root / "db"
        assert run(index_cmd(_photos(root, 50, sub="start"), db)).returncode == 0
        port = free_port()
        log = (root / "server.log").open("w")
        server = subprocess.Popen(
            cli("serve", "--db", str(db), "--port", str(port), "--log-level", "warning"),
            env=ENV,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        total = 50
        try:
            for trial in range(trials):
                stop = threading.Event()
                statuses: list[int] = []

                def client(stop: threading.Event = stop, statuses: list[int] = statuses) -> None:
                    with httpx.Client(base_url=base, timeout=60) as http:
                        n = 0
                        while not stop.is_set():
                            q = f"photo {n % 7}"
                            statuses.append(http.get("/api/search", params={"q": q}).status_code)
                            n += 1

                threads = [threading.Thread(target=client) for _ in range(4)]
                for t in threads:
                    t.start()
                folder = _photos(root, 30, start=10_000 + 100 * trial, sub=f"t{trial}")
                indexed = run(index_cmd(folder, db, "--wait"))
                stop.set()
                for t in threads:
                    t.join()
                total += 30
                found = _all_hits(base)
                problems = []
                if indexed.returncode != 0:
                    problems.append(indexed.stderr.strip())
                bad = [s for s in statuses if s != 200]
                if bad:
                    problems.append(f"{len(bad)} failed requests: {sorted(set(bad))}")
                if len(found) != total:
                    problems.append(f"server finds {len(found)} of {total} (or a page failed)")
                rows.append(
                    {
                        "trial": trial,
                        "requests": len(statuses),
                        "ok": not problems,
                        "problems": problems,
                    }
                )
                print(f"serve trial {trial}: {len(statuses)} requests", problems, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["kill", "kill-two-writers", "writers", "serve",
                                           *HOSTILE])  # fmt: skip
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("needs strace (apt-get install strace) for the syscall kill points")
    path = RESULTS / "reliability.json"
    fresh: dict[str, Any] = {}
    if args.only in (None, "kill"):
        fresh["kill"] = kill_matrix(KILL_POINTS)
    if args.only in (None, "kill-two-writers"):
        fresh["kill_two_writers"] = kill_matrix(KILL_POINTS_TWO_WRITERS)
    if args.only in (None, "writers"):
        fresh["writers"] = writers_matrix(args.trials)
    if args.only in (None, "serve"):
        fresh["serve"] = serve_matrix(args.trials)
    stores = ["sqlite", "postgresql"] if hostile.postgres_reachable() else ["sqlite"]
    for name in HOSTILE:
        if args.only in (None, name):
            fresh[name] = {
                "special": lambda: hostile.special_files(),
                "orphans": lambda: hostile.orphans(stores),
                "concurrency": lambda: hostile.concurrency(RUNTIMES, args.trials // 2),
                "nul": lambda: hostile.nul(stores),
                "creation": lambda: hostile.creation_kills(),
            }[name]()
    # Read only now: another invocation (--only something else) may have written meanwhile.
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results.update(fresh)
    path.write_text(json.dumps(results, indent=2))
    write_result("reliability", "Reliability under faults", report(results))
    print(report(results))


def _kill_table(title: str, kills: list[dict[str, Any]]) -> str:
    landed = [k for k in kills if k["killed"]]
    return (
        f"## {title} ({len(landed)} of {len(kills)} kill points landed; "
        f"{sum(k['equal'] for k in landed)} of them ended equal to a clean run)\n\n"
        + markdown_table(
            ["scenario", "killed at", "landed", "equal to a clean run after re-run"],
            [
                [
                    k["scenario"],
                    k["kill"],
                    "yes" if k["killed"] else "no (run ended first)",
                    "yes" if k["equal"] else "NO: " + "; ".join(k["differences"][:2]),
                ]
                for k in kills
            ],
        )
    )


def report(results: dict[str, Any]) -> str:
    parts = []
    for key, title in (("kill", "kill -9"), ("kill_two_writers", "kill -9, two writers")):
        if key in results:
            parts.append(_kill_table(title, results[key]))
    if "writers" in results:
        by: dict[str, list[Any]] = {}
        for row in results["writers"]:
            by.setdefault(row["scenario"], []).append(row)
        parts.append(
            "## Two writers at once (`--wait`)\n\n"
            + markdown_table(
                ["scenario", "trials", "all rows, once each, cache exact", "problems"],
                [
                    [
                        k,
                        str(len(v)),
                        str(sum(r["ok"] for r in v)),
                        "; ".join(p for r in v for p in r["problems"][:1])[:200] or "none",
                    ]
                    for k, v in by.items()
                ],
            )
        )
    if "serve" in results:
        rows = results["serve"]
        parts.append(
            "## Indexing beside `clipsearch serve` (4 clients searching throughout)\n\n"
            + markdown_table(
                ["trials", "requests", "trials with no error and every row found"],
                [
                    [
                        str(len(rows)),
                        f"{sum(r['requests'] for r in rows):,}",
                        str(sum(r["ok"] for r in rows)),
                    ]
                ],
            )
        )
    parts += [_hostile_table(name, results[name]) for name in HOSTILE if name in results]
    return "\n\n".join(parts)


#: Per class of issue 28: its heading and the columns shown (keys of its rows).
_HOSTILE_TABLES = {
    "special": ("Pipes and devices in a folder (default runtime)",
                ["case", "rc", "seconds", "peak_rss_mib"]),
    "orphans": ("kill -9 while embedding 1,600 photos (default runtime), then the same command",
                ["store", "killed_after_s", "workers", "orphans_after_5s", "rerun_rc"]),
    "concurrency": ("12 image uploads and 16 new texts at once on a fresh server",
                    ["runtime", "trial", "answers", "seconds", "health_s"]),
    "nul": ("NUL on both stores", ["store", "case", "result"]),
    "creation": ("A first run killed at every system call of creating the database",
                 ["kill", "killed", "equal"]),
}  # fmt: skip


def _hostile_table(name: str, rows: list[dict[str, Any]]) -> str:
    title, columns = _HOSTILE_TABLES[name]
    ok = sum(bool(r.get("ok", r.get("equal"))) for r in rows)
    table = markdown_table([*columns, "ok"], [
        [str(r.get(c)) for c in columns] + ["yes" if r.get("ok", r.get("equal")) else "NO"]
        for r in rows
    ])  # fmt: skip
    return f"## {title} ({ok} of {len(rows)} ok)\n\n{table}"


if __name__ == "__main__":
    main()
