"""Sharded indexes: exact merge, routing of filters and writes, folders, the CLI, and Ray actors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from annrec.embeddings import Embeddings
from annrec.errors import InputError, UnknownIdError
from annrec.index import build_index, load_index
from annrec.index.sharded import ShardedIndex, build_sharded, merge_topk, shard_of
from annrec.recommend import Recommender

from _mf_fixtures import run_main

RNG = np.random.default_rng(1)
X = RNG.normal(size=(3000, 16)).astype(np.float32)
Q = RNG.normal(size=(50, 16)).astype(np.float32)
IDS = np.arange(100, 3100)


def test_merge_topk_orders_by_metric_and_pads():
    a = (np.array([[1, 2]]), np.array([[0.9, 0.1]], dtype=np.float32))
    b = (np.array([[3, -1]]), np.array([[0.5, np.nan]], dtype=np.float32))
    ids, scores = merge_topk([a, b], 4, "ip")
    assert ids.tolist() == [[1, 3, 2, -1]] and np.isnan(scores[0, 3])
    ids, _ = merge_topk([a, b], 2, "l2")
    assert ids.tolist() == [[2, 3]]
    assert shard_of(np.array([7, 8]), 4).tolist() == [3, 0] and shard_of(["a", "a"], 3)[0] == shard_of(["a"], 3)[0]


@pytest.mark.parametrize("partition", ["hash", "range"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_shards_equal_brute_force(tmp_path, partition, metric):
    path = build_sharded(X, IDS, metric, tmp_path / "s", shards=3, partition=partition, backend="faiss",
                         factory="Flat")
    sharded = load_index(path)
    assert isinstance(sharded, ShardedIndex) and len(sharded) == 3000
    flat = build_index(X, IDS, metric, backend="faiss", factory="Flat")
    for kwargs in ({}, {"denied_ids": IDS[::7]}, {"allowed_ids": IDS[:40]}, {"allowed_ids": IDS[:5]}):
        k = 10
        want_ids, want_scores = flat.search(Q, k, **kwargs)
        got_ids, got_scores = sharded.search(Q, k, **kwargs)
        assert (got_ids == want_ids).all(), kwargs
        assert np.allclose(np.nan_to_num(got_scores), np.nan_to_num(want_scores), atol=1e-4)
    sharded.close()


def test_hnsw_shards_recall_at_least_the_unsharded_index(tmp_path):
    gt = build_index(X, IDS, "l2", backend="faiss", factory="Flat").search(Q, 10)[0]
    one = build_index(X, IDS, "l2", backend="hnswlib", M=8, ef_construction=40, ef=10)
    four = load_index(build_sharded(X, IDS, "l2", tmp_path / "s", shards=4, backend="hnswlib", M=8,
                                    ef_construction=40, ef=10))

    def recall(ids):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), gt.tolist())])

    assert recall(four.search(Q, 10, params={"ef": 10})[0]) >= recall(one.search(Q, 10, params={"ef": 10})[0])
    four.close()


def test_writes_go_to_the_owning_shard_and_persist(tmp_path):
    path = build_sharded(X, IDS, "ip", tmp_path / "s", shards=2, backend="faiss", factory="Flat")
    idx = load_index(path)
    idx.add(np.ones((2, 16), dtype=np.float32) * 9, [5000, 5001])
    assert 5000 in idx and len(idx) == 3002
    assert idx.search(np.ones((1, 16), dtype=np.float32), 2)[0][0].tolist() in ([5000, 5001], [5001, 5000])
    assert 5000 in idx.shards[0].index and 5001 in idx.shards[1].index  # id % 2
    idx.remove([IDS[0]])
    with pytest.raises(UnknownIdError):
        idx.remove([999999])
    idx.save()
    again = load_index(path)
    assert len(again) == 3001 and IDS[0] not in again and np.allclose(again.get_vector(5000), 9)
    idx.close()
    again.close()


def test_string_ids_and_errors(tmp_path):
    ids = [f"doc{i}" for i in range(300)]
    idx = load_index(build_sharded(X[:300], ids, "cosine", tmp_path / "s", shards=3, backend="faiss",
                                   factory="Flat"))
    flat = build_index(X[:300], ids, "cosine", backend="faiss", factory="Flat")
    assert (idx.search(Q, 5)[0] == flat.search(Q, 5)[0]).all()
    with pytest.raises(InputError, match="larger than"):
        idx.search(Q, 301)
    with pytest.raises(InputError, match="shards must be an integer >= 2"):
        build_sharded(X, IDS, "ip", tmp_path / "t", shards=1)
    idx.close()


def test_recommender_and_cli_over_a_sharded_index(tmp_path, monkeypatch, capsys):
    import scipy.sparse as sp

    users = RNG.normal(size=(20, 16)).astype(np.float32)
    seen = sp.random(20, 3000, density=0.05, format="csr", random_state=0)
    seen.data[:] = 1
    emb = Embeddings(X, IDS, "ip", queries=users, query_ids=np.arange(20), seen=seen)
    emb.save(tmp_path / "emb")
    code, out = run_main(["index", "build", "--embeddings", tmp_path / "emb", "--backend", "faiss", "--param",
                          "factory=Flat", "--shards", "4", "--out", tmp_path / "sh"], monkeypatch, capsys)
    assert code == 0, out
    sharded = Recommender(emb, load_index(tmp_path / "sh"))
    exact = Recommender(emb)
    for u in range(20):
        assert [r.item_id for r in sharded.recommend(u, 10)] == [r.item_id for r in exact.recommend(u, 10)]
    assert [r.item_id for r in sharded.similar_items(int(IDS[3]), 5)] == \
        [r.item_id for r in exact.similar_items(int(IDS[3]), 5)]
    code, out = run_main(["recommend", "3", "--embeddings", tmp_path / "emb", "--index", tmp_path / "sh"],
                         monkeypatch, capsys)
    assert code == 0, out


# ----------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from annrec.index.ray_shards import init_ray

    init_ray(num_cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_shards_answer_like_local_ones_and_batch_concurrent_queries(local_ray, tmp_path):
    path = build_sharded(X, IDS, "ip", tmp_path / "s", shards=2, backend="faiss", factory="Flat")
    local = load_index(path)
    remote = load_index(path, backend="ray")
    want = local.search(Q, 10)
    got = remote.search(Q, 10, denied_ids=None)
    assert (got[0] == want[0]).all()
    assert (remote.search(Q[:3], 10, denied_ids=IDS[:50])[0] == local.search(Q[:3], 10, denied_ids=IDS[:50])[0]).all()
    results = {}

    def one(i):
        results[i] = remote.search(Q[i:i + 1], 10)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(Q))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all((results[i][0] == want[0][i]).all() for i in range(len(Q)))
    remote.add(np.ones((1, 16), dtype=np.float32), [7777])
    assert 7777 in remote and len(remote) == 3001
    local.close()


@pytest.mark.ray
def test_a_killed_shard_actor_restarts_and_searches_resume(local_ray, tmp_path):
    path = build_sharded(X, IDS, "l2", tmp_path / "s", shards=2, backend="faiss", factory="Flat")
    remote = load_index(path, backend="ray")
    want = remote.search(Q, 5)[0]
    before = remote.shards[0].info()["pid"]
    local_ray.kill(remote.shards[0].actor, no_restart=False)
    assert (remote.search(Q, 5)[0] == want).all()  # retried until the actor is back
    assert remote.shards[0].info()["pid"] != before


TWO_NODES = '''
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray process on 127.0.0.1
from pathlib import Path
import numpy as np
import ray
from ray.cluster_utils import Cluster
from annrec.index import load_index
from annrec.index.sharded import build_sharded

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
try:
    ray.init(address=cluster.address, log_to_driver=False)
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(2000, 16)).astype(np.float32), rng.normal(size=(20, 16)).astype(np.float32)
    path = build_sharded(x, np.arange(2000), "ip", Path(sys.argv[1]), shards=2, backend="faiss", factory="Flat")
    remote = load_index(path, backend="ray", address=cluster.address)
    nodes = {s.info()["node_id"] for s in remote.shards}
    same = bool((remote.search(q, 10)[0] == load_index(path).search(q, 10)[0]).all())
    print("RESULT", len(nodes), same)
finally:
    ray.shutdown()
    cluster.shutdown()
'''


@pytest.mark.ray
def test_two_node_cluster_spreads_the_shards_and_answers_like_one_process(tmp_path):
    """A two-node mini-cluster (``ray.cluster_utils.Cluster``, in its own process): one shard actor per node
    (``SPREAD``), the same answers as the shards in this process, and no Ray process left behind."""
    import subprocess
    import sys

    pytest.importorskip("ray")
    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "s")], capture_output=True, text=True,
                         timeout=240)
    assert "RESULT 2 True" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
