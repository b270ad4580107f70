"""Indexing jobs run by the server in the background, one at a time, with their progress.

A job is `Index.add` on a thread of its own. Each batch it embeds is committed to SQLite and
added to the live FAISS index as it goes, so searches running meanwhile see new images batch
by batch.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError, QueryError
from clipsearch.facts import IndexSummary, Progress
from clipsearch.server.errors import JobBusyError

log = logging.getLogger("clipsearch.server")

#: Finished jobs kept for `GET /api/jobs` (the oldest are forgotten first).
KEEP_FINISHED = 50
#: How far below searches a job runs (Linux nice: its thread, and with it the decoding
#: processes and model threads that thread starts). Under 20 clients on 2 cores, 5 kept
#: searches at 85-88/s (p99 0.46 s) with the job at 205/s; 7 and 10 gave searches a little
#: more and the job 179 and 120-124/s (benchmarks/results/serve_bars_*.md).
JOB_NICENESS = 5


@dataclass
class Job:
    id: int
    paths: list[str]
    state: str = "queued"  # queued | running | done | failed
    phase: str = ""  # scanning | embedding | finishing, while running
    done: int = 0  # files embedded (or skipped) so far
    total: int = 0  # files to embed
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def report(self, progress: Progress) -> None:
        self.phase = progress.phase
        if progress.total:  # "finishing" keeps the last count
            self.done, self.total = progress.done, progress.total


class Jobs:
    """Starts indexing jobs (`run` does the indexing) and keeps their state."""

    def __init__(
        self,
        run: Callable[[list[str], Callable[[Progress], None]], IndexSummary],
        on_finish: Callable[[], None] = lambda: None,
    ) -> None:
        self._run = run
        self._on_finish = on_finish
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    def running(self) -> Job | None:
        with self._lock:
            return self._unfinished()

    def _unfinished(self) -> Job | None:
        """The queued or running job, if any (the caller holds the lock)."""
        return next((j for j in self._jobs.values() if j.state in ("queued", "running")), None)

    def start(self, paths: list[str]) -> Job:
        resolved = [os.path.abspath(Path(p).expanduser()) for p in paths]
        missing = [p for p in resolved if not os.path.exists(p)]
        if missing:
            raise QueryError(f"no such file or folder on the server: {', '.join(missing)}")
        with self._lock:
            busy = self._unfinished()
            if busy is not None:
                raise JobBusyError(
                    f"indexing job {busy.id} is still running; wait for it "
                    f"(GET /api/jobs/{busy.id}) and start this one after"
                )
            job = Job(self._next_id, resolved)
            self._next_id += 1
            self._jobs[job.id] = job
            self._forget_old()
        thread = threading.Thread(target=self._work, args=(job,), name=f"clipsearch-job-{job.id}")
        thread.daemon = True
        thread.start()
        return job

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j.id)

    def _work(self, job: Job) -> None:
        job.state = "running"
        yield_to_searches()
        try:
            summary = self._run(job.paths, job.report)
            job.summary = summary.to_dict()
            job.state = "done"
        except ClipsearchError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # logged in full here; the client sees no internals
            log.exception("indexing job %d failed", job.id)
            job.error, job.state = f"internal error ({type(exc).__name__}); see the log", "failed"
        finally:
            job.phase = ""
            job.finished_at = time.time()
            self._on_finish()

    def _forget_old(self) -> None:
        finished = sorted(j.id for j in self._jobs.values() if j.finished_at is not None)
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]


def yield_to_searches() -> None:
    """Lower the calling thread's CPU priority by `JOB_NICENESS` (where the system has
    thread priorities: Linux; elsewhere nothing changes)."""
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + JOB_NICENESS))
    except OSError as exc:  # e.g. a sandbox that forbids it: the job runs as before
        log.warning("could not lower the indexing job's priority: %s", exc)
