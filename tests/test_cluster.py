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

import httpx
import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipsearch[cluster]')")

import ray
from ray.cluster_utils import Cluster

import clipsearch
from clipsearch.cluster import ClusterOptions, RayRunner, ShardedVectors
from clipsearch.cluster import runner as ray_runner
from clipsearch.facts import Progress
from clipsearch.indexer.options import PipelineOptions
from clipsearch.search.filters import Filter
from tests.conftest import write_images
from tests.serving import Collection, start_server, stop_server

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
    # Registered before the actors are placed: under load they could all land on the head.
    cluster.wait_for_nodes()
    runner = _runner(cluster, encoders=3)
    # SPREAD is best effort: on a loaded machine Ray may put every actor on the head, and
    # then there is no node to lose; such a pool is dropped and placed again.
    with clipsearch.open(store("probe"), model=MODEL) as probe:
        for _attempt in range(5):
            ray_runner._POOLS.clear()  # a pool spread over the new node too
            pool = runner.encoders(probe.encoder)  # the pool the run below uses
            hosts = set(ray.get([actor.node.remote() for actor in pool]))
            victims = [
                n for n in cluster.list_all_nodes()
                if n is not cluster.head_node and n.node_id in hosts
            ]  # fmt: skip
            if victims:
                break
            for actor in pool:
                ray.kill(actor)
    assert victims, "no encoder actor on a worker node in five placements"
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
    total = 320  # 40 batches: enough run left after the first commit to kill it mid-way
    write_images(folder, total)
    db = store("ray")
    argv = [sys.executable, "-m", "clipsearch.cli", "index", str(folder), "--db", db,
            "--model", MODEL, "--batch-size", str(BATCH), "--ray", cluster.address,
            "--quiet", "--json"]  # fmt: skip
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.monotonic() + 120
    while committed == 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        committed = _count(db)
    driver.send_signal(signal.SIGKILL)
    _, err = driver.communicate()
    committed = _count(db)
    assert 0 < committed < total, f"the driver was not killed mid-run: {err.decode()[-2000:]}"
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["added"] == total - committed and summary["unchanged"] == committed
    assert set(_rows(db)) == {str(p) for p in sorted(folder.iterdir())}


def _count(db: str) -> int:
    try:
        with clipsearch.open(db, create=False) as idx:
            return idx.count()
    except clipsearch.errors.ClipsearchError:
        return 0  # not created yet


# -- sharded search -----------------------------------------------------------------------

QUERIES = ["a red circle", "a blue square on green", "shapes", "a photo"]


@pytest.fixture(scope="module")
def sharded(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, module_store: Callable[..., str]
) -> Iterator[tuple[Any, ShardedVectors, Path]]:
    """60 photos indexed with clipsearch-mini, and 3 shards of their vectors."""
    folder = tmp_path_factory.mktemp("shards") / "photos"
    write_images(folder, 60)
    db = module_store("sharded")
    idx = clipsearch.open(db, model="clipsearch-mini", workers=0)
    idx.add([folder])
    shards = ShardedVectors(idx.location.address, 3, cluster.address)
    shards.wait_ready(timeout=120)
    yield idx, shards, folder
    idx.close()
    for actor in shards.shards:
        ray.kill(actor, no_restart=True)


def _hits(idx: Any, **query: Any) -> list[tuple[int, float]]:
    return [(h.id, h.score) for h in idx.search(**query)]


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_sharded_search_equals_the_single_index(sharded: tuple[Any, Any, Path]) -> None:
    idx, shards, folder = sharded
    photo = sorted(folder.iterdir())[7]
    cases = [{"text": q, "k": 10} for q in QUERIES] + [{"image": photo, "k": 12}]
    cases.append({"text": "shapes", "k": 5, "filters": Filter(path_glob="*img_001?.jpg")})
    for case in cases:
        idx.use_vector_index(None)
        want = _hits(idx, **case)
        idx.use_vector_index(shards)
        _same(_hits(idx, **case), want)
    idx.use_vector_index(None)
    assert sum(s["vectors"] for s in shards.status()) == 60


def test_shards_filter_by_id_like_the_local_index(sharded: tuple[Any, Any, Path]) -> None:
    """The id filter itself, past the searcher's small-filter shortcut: every shard gets
    its share of the allowed ids."""
    idx, shards, _ = sharded
    queries = idx.encode_texts(QUERIES)
    allowed = np.asarray(sorted(r.id for r in idx.db.rows())[::3], dtype=np.int64)
    local = idx.vector_index()
    for subset in (None, allowed):
        want_scores, want_ids = local.search(queries, 8, subset)
        got_scores, got_ids = shards.at(idx.space().identity).search(queries, 8, subset)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_a_killed_shard_answers_503_then_the_same_hits(
    cluster: Cluster, tmp_path: Path, store: Callable[..., str]
) -> None:
    """`clipsearch serve --ray --shards 3` over HTTP on loopback; one shard actor killed."""
    folder = tmp_path / "photos"
    write_images(folder, 30)
    db = store("served")
    with clipsearch.open(db, model="clipsearch-mini", workers=0) as idx:
        idx.add([folder])
        want = [(h.path, h.score) for h in idx.search(text="shapes", k=8)]
    collection = Collection(tmp_path, db, folder, folder, folder, folder, folder, folder)
    server, base = start_server(collection, "--ray", cluster.address, "--shards", "3")
    try:

        def search() -> httpx.Response:
            return httpx.get(f"{base}/api/search", params={"q": "shapes", "k": 8}, timeout=60)

        first = search()
        assert first.status_code == 200
        got = [(h["path"], h["score"]) for h in first.json()["hits"]]
        assert [p for p, _ in got] == [p for p, _ in want]
        ray.kill(_shard_actor(), no_restart=False)  # asynchronous: it lands a moment later
        statuses: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = search()
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert "retry shortly" in answer.json()["error"]
            elif 503 in statuses:
                break  # the shard is back
            time.sleep(0.05)
        assert 503 in statuses, statuses
        assert answer.status_code == 200, (statuses, answer.text)
        assert set(statuses) <= {200, 503}
        after = [(h["path"], h["score"]) for h in answer.json()["hits"]]
        assert [p for p, _ in after] == [p for p, _ in want]
        np.testing.assert_allclose([s for _, s in after], [s for _, s in want], atol=1e-5)
    finally:
        stop_server(server)


def _shard_actor() -> Any:
    """Shard 2 of the server's (another driver: another namespace than this process's)."""
    mine = ray.get_runtime_context().namespace
    named = [
        a for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("clipsearch-shard-2-of-3-") and a["namespace"] != mine
    ]  # fmt: skip
    assert len(named) == 1, named
    return ray.get_actor(named[0]["name"], namespace=named[0]["namespace"])


def test_encoders_that_cannot_be_placed_fail_clearly(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for GPUs on a cluster without any: a clear error, not a hang."""
    monkeypatch.setattr(ray_runner, "START_TIMEOUT_S", 3.0)
    write_images(tmp_path / "photos", 4)
    runner = _runner(cluster, gpus_per_worker=1.0, encoders=1)
    with pytest.raises(clipsearch.errors.ClusterError, match="did not start within 3 s"):
        _index(str(tmp_path / "db"), tmp_path / "photos", runner)


def test_unseeded_random_weights_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    """Each actor would draw other weights: the run stops before any actor starts."""
    write_images(tmp_path / "photos", 2)
    with (
        clipsearch.open(str(tmp_path / "db"), model="ViT-S-32", workers=0) as idx,
        pytest.raises(clipsearch.errors.ClusterError, match="unseeded random weights"),
    ):
        idx.add([tmp_path / "photos"], runner=_runner(cluster))
