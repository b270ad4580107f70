"""`RayRunner`: indexing on a Ray cluster. The driver (the `clipsearch index` process) plans
and writes exactly as it does alone; only reading and encoding move out:

    driver: batches of jobs ─▶ read_batch tasks (CPU workers, any node)
                                  │ facts (small) back to the driver; pixels stay on the node
            reuse lookup ─▶ EncoderWorker actors (one model load each; one per GPU)
                                  │ vectors back to the driver
            SqlSink.write (one transaction per batch, or per group of batches whose vectors
                           came back together; in completion order)

Fault tolerance comes from Ray: a read task whose node dies runs again elsewhere; an encoder
actor whose node dies restarts elsewhere (loading the model again) and the call is retried;
pixels lost with a node are rebuilt by re-running their read task. A batch reaches the sink
only once, after its vectors are back, and rows are upserts by path, so a batch can never be
stored twice; a killed driver leaves committed batches committed, and the next run's plan
embeds only what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsearch.cluster.connect import connect, node_resources
from clipsearch.errors import ClusterError, ModelMismatchError
from clipsearch.indexer import stages
from clipsearch.indexer.decode import register_heif
from clipsearch.indexer.options import PipelineOptions
from clipsearch.indexer.plan import EmbedJob
from clipsearch.indexer.runners import OnProgress, ProgressCounter
from clipsearch.indexer.sinks import Sink
from clipsearch.indexer.stages import (
    EncodedBatch,
    EncodingPlan,
    Reader,
    Reuse,
)
from clipsearch.models.base import Encoder, ModelInfo
from clipsearch.models.runtime.choice import RuntimeChoice


@dataclass(frozen=True)
class ClusterOptions:
    """How indexing uses the cluster. `address`: see `connect`. `encoders`: encoder actors,
    spread over the nodes (default: one per `gpus_per_worker` GPUs where the cluster has
    GPUs, else one per node with CPUs). `threads_per_encoder`: torch threads of each
    (default: the CPUs its node offers Ray). Encoders reserve GPUs, not CPUs: read tasks
    always find a CPU, and share the cores with the model as the local pipeline's worker
    processes do. `retries`: how often a read task or an encoder call runs again after a
    lost node."""

    address: str = "auto"
    encoders: int | None = None
    gpus_per_worker: float = 0.0
    threads_per_encoder: int | None = None
    retries: int = 3


def read_batch(
    reader: Reader, jobs: Sequence[EmbedJob]
) -> tuple[tuple[list[Any], list[Any]], np.ndarray[Any, Any] | None]:
    """A Ray task: decode a batch of files. Returns the per-file facts (small: they go back
    to the driver) and the stacked pixels (they go straight to an encoder)."""
    register_heif()
    batch = stages.read_batch(reader, jobs)
    pixels = None if batch.pixels is None else np.asarray(batch.pixels)
    return (batch.ok, batch.failed), pixels


class EncoderWorker:
    """A Ray actor holding one loaded model; built by spec on its own node and checked
    against the identity the index records."""

    def __init__(
        self,
        spec: str,
        identity: str,
        device: str | None,
        threads: int | None,
        runtime: RuntimeChoice,
    ) -> None:
        from clipsearch.models import load_encoder
        from clipsearch.models.base import use_threads

        use_threads(max(1, threads or _node_cpus()), runtime.runtime)
        self.encoder = load_encoder(spec, device=device, runtime=runtime)
        if self.encoder.info.identity != identity:
            raise ModelMismatchError(
                f"the model {spec!r} loads as {self.encoder.info.identity!r} on this node, "
                f"not {identity!r} as on the driver; install the same weights on every node"
            )

    def ready(self) -> str:
        return self.encoder.info.identity

    def node(self) -> str:
        """The id of the node this actor runs on (for tests and diagnostics)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def encode(self, pixels: np.ndarray[Any, Any], rows: list[int] | None) -> np.ndarray[Any, Any]:
        chosen = pixels if rows is None else pixels[rows]
        writable = np.require(chosen, requirements="W")  # Ray's object store gives read-only
        return np.asarray(self.encoder.encode_images(writable), dtype=np.float32)


#: How long encoder actors may take to start (placement and a model load each).
START_TIMEOUT_S = 600.0

#: At most this many encoded batches go into one sink transaction.
MAX_JOINED = 16

#: Encoder actors kept for the life of this process, by (Ray job, model identity, options):
#: a server or a notebook indexing again does not load the models again.
_POOLS: dict[tuple[str, str, RuntimeChoice, ClusterOptions], list[Any]] = {}


class RayRunner:
    """Reads in Ray tasks and encodes in Ray actors across the cluster; the sink runs here."""

    def __init__(self, options: PipelineOptions, cluster: ClusterOptions | None = None) -> None:
        self.options = options
        self.cluster = cluster or ClusterOptions()

    def encoders(self, encoder: Encoder) -> list[Any]:
        """The encoder actors for the driver's encoder's model, started (and their models
        loaded) on first use, running it in the driver's runtime and precision (fp32 on GPU
        workers: torch, whose fp32 vectors equal every runtime's)."""
        info = encoder.info
        runtime = RuntimeChoice(
            getattr(encoder, "runtime", "torch"), getattr(encoder, "precision", "fp32")
        )
        if self.cluster.gpus_per_worker > 0 and runtime.precision == "fp32":
            runtime = RuntimeChoice("torch")
        if info.identity.endswith(":unseeded-random"):
            raise ClusterError(
                f"the model {info.spec!r} has unseeded random weights, which differ in every "
                "process: encoders on a cluster would disagree. Save the weights to a file and "
                "use ARCH:/path/to/weights.pt, or a seeded model such as tiny-random"
            )
        ray = connect(self.cluster.address)
        key = (ray.get_runtime_context().get_job_id(), info.identity, runtime, self.cluster)
        if key not in _POOLS:
            _POOLS[key] = self._start_encoders(ray, info, runtime)
        return _POOLS[key]

    def _start_encoders(self, ray: Any, info: ModelInfo, runtime: RuntimeChoice) -> list[Any]:
        c = self.cluster
        nodes, _, gpus = node_resources(ray)
        count = c.encoders
        if count is None:
            count = int(gpus // c.gpus_per_worker) if c.gpus_per_worker > 0 else nodes
        actor = ray.remote(EncoderWorker).options(
            num_cpus=0, num_gpus=c.gpus_per_worker, scheduling_strategy="SPREAD",
            max_restarts=c.retries, max_task_retries=c.retries,
        )  # fmt: skip
        device = None if c.gpus_per_worker > 0 else "cpu"
        args = (info.spec, info.identity, device, c.threads_per_encoder, runtime)
        pool = [actor.remote(*args) for _ in range(max(1, count))]
        try:
            ray.get([a.ready.remote() for a in pool], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            for a in pool:
                ray.kill(a)
            raise ClusterError(
                f"the {len(pool)} encoder actor(s) did not start within {START_TIMEOUT_S:.0f} "
                f"s: the cluster may lack the resources asked for ({c.gpus_per_worker:g} GPUs "
                "each; see `ray status`)"
            ) from exc
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"the encoder actors could not start: {_last_line(exc)}") from exc
        return pool

    def run(
        self,
        jobs: Sequence[EmbedJob],
        encoder: Encoder,
        sink: Sink,
        reuse: Reuse,
        on_progress: OnProgress | None = None,
    ) -> None:
        if not jobs:
            return
        pool = self.encoders(encoder)
        ray = connect(self.cluster.address)
        progress = ProgressCounter(len(jobs), self.options.progress, on_progress)
        try:
            _Flow(ray, self, pool, encoder, sink, reuse, progress).run(jobs)
        except ray.exceptions.RayError as exc:
            raise ClusterError(
                f"the cluster lost work it could not redo: {_last_line(exc)}"
            ) from exc
        finally:
            progress.close()


class _Flow:
    """One run's batches in flight: reading, then encoding, then into the sink."""

    def __init__(
        self,
        ray: Any,
        runner: RayRunner,
        pool: list[Any],
        encoder: Encoder,
        sink: Sink,
        reuse: Reuse,
        progress: ProgressCounter,
    ) -> None:
        self.ray, self.pool, self.sink, self.reuse, self.progress = ray, pool, sink, reuse, progress
        options, cluster = runner.options, runner.cluster
        self.batch_size = options.batch_size
        self.reader = ray.put(Reader.for_encoder(encoder, options.max_pixels))
        self.read = ray.remote(read_batch).options(
            num_returns=2, num_cpus=1, max_retries=cluster.retries
        )
        _, cpus, _ = node_resources(ray)
        self.window = max(4, 2 * len(pool) + int(cpus))
        self.load = [0] * len(pool)
        self.reading: dict[Any, Any] = {}  # facts ref -> pixels ref
        self.encoding: dict[Any, tuple[list[Any], list[Any], EncodingPlan, int]] = {}

    def run(self, jobs: Sequence[EmbedJob]) -> None:
        batches = [
            list(jobs[i : i + self.batch_size]) for i in range(0, len(jobs), self.batch_size)
        ]
        upcoming = iter(batches)
        pending = len(batches)
        while pending:
            while len(self.reading) + len(self.encoding) < self.window:
                batch = next(upcoming, None)
                if batch is None:
                    break
                facts, pixels = self.read.remote(self.reader, batch)
                self.reading[facts] = pixels
            [ready], _ = self.ray.wait([*self.reading, *self.encoding], num_returns=1)
            if ready in self.reading:
                pending -= self._read(ready)
            else:
                pending -= self._encoded(ready)

    def _read(self, facts_ref: Any) -> int:
        """A batch is read: store it at once if nothing needs the model, else send it to
        the least busy encoder. Returns how many batches were finished."""
        pixels = self.reading.pop(facts_ref)
        ok, failed = self.ray.get(facts_ref)
        plan = EncodingPlan(ok, self.reuse)
        if not plan.to_encode:
            self._store(EncodedBatch(ok, failed, plan.complete([]), 0))
            return 1
        actor = int(np.argmin(self.load))
        rows = None if len(plan.to_encode) == plan.size else plan.to_encode
        self.encoding[self.pool[actor].encode.remote(pixels, rows)] = (ok, failed, plan, actor)
        self.load[actor] += 1
        return 0

    def _encoded(self, ready: Any) -> int:
        """Store every batch whose vectors are back, in one transaction: when the sink is
        the bottleneck, batches pile up and commits grow (PostgreSQL takes about 5x the rows
        per second in batches of 256 as in batches of 32). Returns how many were stored."""
        others = [ref for ref in self.encoding if ref != ready]
        done, _ = self.ray.wait(others, num_returns=len(others), timeout=0) if others else ([], [])
        done = [ready, *done[: MAX_JOINED - 1]]
        batches = []
        for ref in done:
            ok, failed, plan, actor = self.encoding.pop(ref)
            self.load[actor] -= 1
            vectors = plan.complete(list(self.ray.get(ref)))
            batches.append(EncodedBatch(ok, failed, vectors, len(plan.to_encode)))
        self._store(EncodedBatch.joined(batches) if len(batches) > 1 else batches[0])
        return len(batches)

    def _store(self, batch: EncodedBatch) -> None:
        self.sink.write(batch)
        self.progress.advance(len(batch.ok) + len(batch.failed))


def _node_cpus() -> int:
    """The CPUs the node this runs on offers Ray (its share, where nodes share a machine)."""
    import ray

    me = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("NodeID") == me:
            return int(node.get("Resources", {}).get("CPU", 1))
    return 1


def _last_line(exc: BaseException) -> str:
    """The last line of a Ray error's text: the underlying cause, after Ray's traceback."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
