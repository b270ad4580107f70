"""Indexing on a real multi-node Ray cluster (`ray.cluster_utils.Cluster` on loopback), into
both stores: the same rows and vectors as the local pipeline, nothing embedded twice, and a
worker node lost mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipsearch[cluster]')")

import ray
from ray.cluster_utils import Cluster

import clipsearch
from clipsearch.cluster import ClusterOptions, RayRunner
from clipsearch.cluster import runner as ray_runner
from clipsearch.facts import Progress
from clipsearch.indexer.options import PipelineOptions
from tests.conftest import write_images

MODEL = "tiny-random"
BATCH = 8


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and two worker nodes, one CPU each, all on 127.0.0.1."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keeps Ray on loopback
    os.environ["HF_HUB_OFFLINE"] = "1"
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    for _ in range(2):
        made.add_node(num_cpus=1)
    ray.init(address=made.address, logging_level="WARNING")
    yield made
    ray.shutdown()
    ray_runner._POOLS.clear()
    made.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cluster") / "photos"
    write_images(folder, 40)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def _index(db: str, folder: Path, runner: Any = None, **kw: Any) -> Any:
    with clipsearch.open(db, model=MODEL, workers=0, batch_size=BATCH) as idx:
        return idx.add([folder], runner=runner, **kw)


def _rows(db: str) -> dict[str, tuple[Any, ...]]:
    with clipsearch.open(db, create=False) as idx:
        rows = idx.db.rows()
        found, _, vectors = idx.db.vectors_for([r.id for r in rows])
        by_id = dict(zip(found, vectors, strict=True))
        return {r.path: (r.sha256, r.width, r.height, r.size, by_id[r.id]) for r in rows}


def _runner(cluster: Cluster, **kw: Any) -> RayRunner:
    options = PipelineOptions(BATCH, 0, progress=False)
    return RayRunner(options, ClusterOptions(cluster.address, **kw))


def test_ray_indexing_matches_the_local_pipeline(
    cluster: Cluster, photos: Path, store: Callable[..., str]
) -> None:
    local, remote = store("local"), store("ray")
    local_summary = _index(local, photos)
    ray_summary = _index(remote, photos, _runner(cluster))
    assert ray_summary.added == local_summary.added == 40
    assert [(s.path, s.reason) for s in ray_summary.skipped] == [
        (s.path, s.reason) for s in local_summary.skipped
    ]
    want, got = _rows(local), _rows(remote)
    assert set(got) == set(want)
    for path, (sha, w, h, size, vector) in want.items():
        assert got[path][:4] == (sha, w, h, size)
        np.testing.assert_allclose(got[path][4], vector, atol=1e-5)
    again = _index(remote, photos, _runner(cluster))
    assert (again.added, again.updated, again.encoded, again.unchanged) == (0, 0, 0, 40)


def test_a_worker_node_lost_mid_run_loses_nothing(
    cluster: Cluster, tmp_path: Path, store: Callable[..., str]
) -> None:
    folder = tmp_path / "many"
    write_images(folder, 96)
    extra = cluster.add_node(num_cpus=1)
    ray_runner._POOLS.clear()  # a pool spread over the new node too
    runner = _runner(cluster, encoders=3)
    with clipsearch.open(store("probe"), model=MODEL) as probe:
        pool = runner.encoders(probe.encoder.info)
    hosts = set(ray.get([actor.node.remote() for actor in pool]))
    victims = [
        n for n in cluster.list_all_nodes()
        if n is not cluster.head_node and n.node_id in hosts
    ]  # fmt: skip
    assert victims, "no encoder actor on a worker node"
    victim = extra if extra in victims else victims[0]
    removed: list[int] = []

    def on_progress(p: Progress) -> None:
        if p.phase == "embedding" and p.done and not removed:
            removed.append(p.done)  # some batches are committed: now lose a node
            cluster.remove_node(victim)

    db = store("ray")
    summary = _index(db, folder, runner, on_progress=on_progress)
    assert removed and removed[0] < 96
    assert summary.added == 96 and not summary.skipped
    assert set(_rows(db)) == {str(p) for p in sorted(folder.iterdir())}
    if victim is not extra:
        cluster.add_node(num_cpus=1)  # leave the module's cluster as big as it was


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_a_killed_driver_reruns_only_what_is_missing(
    cluster: Cluster, tmp_path: Path, store: Callable[..., str]
) -> None:
    """The CLI driver, SIGKILLed after its first batches commit (PostgreSQL, the store a
    cluster writes to)."""
    folder = tmp_path / "many"
    write_images(folder, 96)
    db = store("ray")
    argv = [sys.executable, "-m", "clipsearch.cli", "index", str(folder), "--db", db,
            "--model", MODEL, "--batch-size", str(BATCH), "--ray", cluster.address,
            "--quiet", "--json"]  # fmt: skip
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.monotonic() + 120
    while committed == 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        committed = _count(db)
    driver.send_signal(signal.SIGKILL)
    _, err = driver.communicate()
    committed = _count(db)
    assert 0 < committed < 96, f"the driver was not killed mid-run: {err.decode()[-2000:]}"
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["added"] == 96 - committed and summary["unchanged"] == committed
    assert set(_rows(db)) == {str(p) for p in sorted(folder.iterdir())}


def _count(db: str) -> int:
    try:
        with clipsearch.open(db, create=False) as idx:
            return idx.count()
    except clipsearch.errors.ClipsearchError:
        return 0  # not created yet
