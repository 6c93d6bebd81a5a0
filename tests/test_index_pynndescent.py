"""The pynndescent backend behind Index: recall and exact scores per metric, epsilon, filters, adds through
NNDescent.update, removes, save/load, bad parameters, the CLI and the read-only service.

PyNNDescent compiles its numba kernels on the first build of a process (tens of seconds), so the indexes
are few, small and shared by the tests of this module.
"""

from __future__ import annotations

import numpy as np
import pytest

from _index_fixtures import brute_force
from annrec.errors import ArtifactError, InputError
from annrec.index import PynndescentIndex, build_index, load_index  # annrec (and FAISS) before pynndescent

pytest.importorskip("pynndescent")

RNG = np.random.default_rng(7)
CENTERS = RNG.standard_normal((12, 16)).astype(np.float32) * 2
# norms vary (0.3x .. 3x): inner product search differs from cosine search here
X = ((CENTERS[RNG.integers(0, 12, 600)] + RNG.standard_normal((600, 16)))
     * RNG.uniform(0.3, 3.0, (600, 1))).astype(np.float32)
Q = (CENTERS[RNG.integers(0, 12, 40)] + RNG.standard_normal((40, 16))).astype(np.float32)
IDS = np.arange(600) * 5 + 11  # external ids differ from row numbers


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)]))


def _exact_scores(ids: np.ndarray, metric: str) -> np.ndarray:
    """The metric's own value of each returned (query, id): squared L2, inner product or cosine."""
    rows = (ids - 11) // 5
    x, q = X.astype(np.float64), Q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        return ((q[:, None, :] - x[rows]) ** 2).sum(-1)
    return np.einsum("qkd,qd->qk", x[rows], q)


@pytest.fixture(scope="module")
def indexes() -> dict[str, PynndescentIndex]:
    """One index per metric (n_neighbors 12, epsilon 0.2), built once for the module."""
    return {m: build_index(X, IDS, m, backend="pynndescent", n_neighbors=12, epsilon=0.2)
            for m in ("l2", "ip", "cosine")}


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_recall_and_scores_are_the_metrics_own(indexes, metric):
    index = indexes[metric]
    ids, scores = index.search(Q, 10)
    order, _ = brute_force(X, Q, 10, metric)
    assert _recall(ids, IDS[order]) >= 0.9
    # squared L2 distances (as FAISS), inner products, cosine similarities: the exact values of the returned ids
    np.testing.assert_allclose(scores, _exact_scores(ids, metric), rtol=1e-4, atol=2e-4)
    diffs = np.diff(scores, axis=1)
    assert (diffs >= -1e-4).all() if metric == "l2" else (diffs <= 1e-4).all()
    assert index.memory_bytes() > X.nbytes
    # the compiled query plan called directly answers as NNDescent.query does
    assert index._fast_plan() is not None
    index._plan_cache = (index.raw._fast_plan, None)  # as if there were no plan: NNDescent.query
    try:
        ids2, scores2 = index.search(Q, 10)
    finally:
        del index._plan_cache
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5, atol=1e-5)


def test_ip_is_maximum_inner_product_not_cosine(indexes):
    """PyNNDescent's own "dot" normalises the vectors; annrec's ip answers the real inner product."""
    ids, _ = indexes["ip"].search(Q, 5)
    ip_order, _ = brute_force(X, Q, 5, "ip")
    cos_order, _ = brute_force(X, Q, 5, "cosine")
    assert _recall(ids, IDS[ip_order]) >= 0.9 and _recall(IDS[ip_order], IDS[cos_order]) < 0.8
    assert indexes["ip"].params["mips_max_norm"] == pytest.approx(float(np.linalg.norm(X, axis=1).max()), rel=1e-5)


def test_epsilon_per_call_and_as_default(indexes):
    index = indexes["l2"]
    truth = IDS[brute_force(X, Q, 10, "l2")[0]]
    greedy = _recall(index.search(Q, 10, params={"epsilon": 0.0})[0], truth)
    wide = _recall(index.search(Q, 10, params={"epsilon": 0.5})[0], truth)
    assert wide >= greedy and wide >= 0.97
    assert index.params["epsilon"] == 0.2  # a per-call epsilon leaves the default alone
    before = index.search(Q, 10)[0]
    index.set_query_params(epsilon=0.5)
    try:
        np.testing.assert_array_equal(index.search(Q, 10)[0], index.search(Q, 10, params={"epsilon": 0.5})[0])
    finally:
        index.set_query_params(epsilon=0.2)
    np.testing.assert_array_equal(index.search(Q, 10)[0], before)
    one = np.concatenate([index.search(q, 10, threads=1)[0] for q in Q[:5]])
    np.testing.assert_array_equal(one, before[:5])  # one at a time == batch


def test_bad_parameters_are_refused_with_the_valid_ones_named(indexes):
    for kw, msg in (({"n_neighbors": 1}, "n_neighbors must be an integer >= 2"),
                    ({"diversify_prob": 1.5}, "diversify_prob must be a number in \\[0, 1\\]"),
                    ({"pruning_degree_multiplier": 0}, "pruning_degree_multiplier must be a positive number"),
                    ({"leaf_size": 0}, "leaf_size must be a positive integer"),
                    ({"random_state": -3}, "random_state must be an integer >= 0"),
                    ({"epsilon": -0.1}, "epsilon must be a number >= 0"),
                    ({"M": 16}, "unknown pynndescent parameter.*use n_neighbors, diversify_prob")):
        with pytest.raises(InputError, match=msg):
            build_index(X[:10], IDS[:10], "l2", backend="pynndescent", **kw)
    index = indexes["l2"]
    with pytest.raises(InputError, match="unknown query parameter 'ef' for the pynndescent backend: use epsilon"):
        index.search(Q, 5, params={"ef": 64})
    for bad in (-1, float("nan"), True, "0.1"):
        with pytest.raises(InputError, match="epsilon must be a number >= 0"):
            index.search(Q, 5, params={"epsilon": bad})
    with pytest.raises(InputError, match="epsilon must be a number >= 0"):
        index.set_query_params(epsilon=-1)


def test_allow_and_deny_lists_respect_the_filter(indexes):
    index = indexes["l2"]
    allowed = IDS[::3]  # large: over-fetch and keep the allowed
    ids, scores = index.search(Q, 10, allowed_ids=allowed)
    assert np.isin(ids, allowed).all()
    assert _recall(ids, allowed[brute_force(X[::3], Q, 10, "l2")[0]]) >= 0.9
    np.testing.assert_allclose(scores, _exact_scores(ids, "l2"), rtol=1e-4, atol=2e-4)
    small = IDS[:7]  # fewer than k: exact, padded
    ids, scores = index.search(Q[:3], 10, allowed_ids=small)
    assert sorted(ids[0][:7].tolist()) == sorted(small.tolist()) and (ids[:, 7:] == -1).all()
    assert np.isnan(scores[:, 7:]).all()
    denied = IDS[:300]
    ids, _ = index.search(Q, 10, denied_ids=denied)
    assert not np.isin(ids, denied).any()
    assert _recall(ids, IDS[300:][brute_force(X[300:], Q, 10, "l2")[0]]) >= 0.9


def test_same_seed_same_graph_and_zero_cosine_query(indexes):
    again = build_index(X, IDS, "l2", backend="pynndescent", n_neighbors=12, epsilon=0.2)
    np.testing.assert_array_equal(again.search(Q, 10)[0], indexes["l2"].search(Q, 10)[0])
    ids, scores = indexes["cosine"].search(np.zeros((2, 16), np.float32), 5)
    assert len(set(ids[0].tolist())) == 5 and (scores == 0).all()  # no direction: distinct items, score 0


def test_adds_removes_upserts_and_save_load(tmp_path):
    index = build_index(X[:500], IDS[:500], "l2", backend="pynndescent", n_neighbors=12, epsilon=0.2)
    index.add(X[500:], IDS[500:])  # NNDescent.update: rows 500.. appended, graph refined
    assert len(index) == 600 and index.raw.neighbor_graph[0].shape[0] == 600
    ids, scores = index.search(Q, 10)
    assert _recall(ids, IDS[brute_force(X, Q, 10, "l2")[0]]) >= 0.9
    np.testing.assert_allclose(scores, _exact_scores(ids, "l2"), rtol=1e-4, atol=2e-4)
    nearest = ids[0][0]
    index.remove([nearest])
    assert nearest not in index.search(Q[:1], 10)[0][0] and len(index) == 599
    index.add(Q[:1], [10**9])  # a new id exactly on the query
    got, sc = index.search(Q[:1], 1)
    assert got[0][0] == 10**9 and sc[0][0] == pytest.approx(0.0, abs=1e-4)
    index.add(Q[:1] + 50, [10**9])  # upsert: replaced, not duplicated
    assert len(index) == 600 and index.search(Q[:1], 1)[0][0][0] != 10**9
    ids, scores = index.search(Q, 10)
    index.save(tmp_path / "p")
    loaded = load_index(tmp_path / "p")
    assert type(loaded) is PynndescentIndex and loaded.params == index.params
    ids2, scores2 = loaded.search(Q, 10)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)
    assert nearest not in loaded
    loaded.add(Q[1:2], [10**9 + 1])  # a loaded index still takes adds
    assert loaded.search(Q[1:2], 1)[0][0][0] == 10**9 + 1


def test_ip_refuses_a_vector_above_the_norm_bound_and_damaged_files(indexes, tmp_path):
    index = indexes["ip"]
    with pytest.raises(InputError, match="above the bound .* rebuild the index"):
        index.add(X[:1] * 100, [1])
    assert len(index) == 600  # refused before anything changed
    index.save(tmp_path / "ip")
    from annrec.index.storage import snapshot_folder

    (snapshot_folder(tmp_path / "ip") / "index.pynndescent").write_bytes(b"not a pickle")
    with pytest.raises(ArtifactError, match="not a readable PyNNDescent index.*rebuild"):
        load_index(tmp_path / "ip")


def test_cli_builds_and_queries_with_epsilon(tmp_path, monkeypatch, capsys):
    from _mf_fixtures import run_main
    from _service_fixtures import make_model_dir

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    code, text = run_main(["index", "build", "--embeddings", d / "mf", "--spec", "index/pynndescent.yaml",
                           "--param", "n_neighbors=8", "--out", tmp_path / "p"], monkeypatch, capsys)
    assert code == 0 and "built pynndescent index" in text, text
    code, text = run_main(["index", "query", "--index", tmp_path / "p", "--item", "1005", "-k", "3",
                           "--epsilon", "0.3"], monkeypatch, capsys)
    assert code == 0 and "1005" in text and "'epsilon': 0.3" in text, text
    code, text = run_main(["index", "query", "--index", tmp_path / "p", "--item", "1005", "--ef", "64"],
                          monkeypatch, capsys)
    assert code == 2 and "use --epsilon" in text, text
    code, text = run_main(["index", "query", "--index", d / "mf-hnsw", "--item", "1005", "--epsilon", "0.1"],
                          monkeypatch, capsys)
    assert code == 2 and "--epsilon applies to pynndescent indexes" in text, text


def test_a_pynndescent_index_is_served_read_only(tmp_path):
    from _service_fixtures import ADMIN_KEY, DIM, READ_KEY, make_model_dir
    from fastapi.testclient import TestClient

    from annrec.embeddings import Embeddings
    from annrec.service import create_app
    from annrec.service.settings import load_settings

    d = make_model_dir(tmp_path / "m", with_text=False, with_sequence=False)
    e = Embeddings.load(d / "mf")
    index = build_index(e.vectors, e.ids, e.metric, backend="pynndescent", n_neighbors=8, epsilon=0.3)
    index.source = {"embeddings": str((d / "mf").resolve()), "embeddings_name": "mf",
                    "data_hash": e.manifest.get("data_hash")}
    index.save(d / "mf-pnd")
    settings = load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as c:
        info = c.get("/v1/indexes/mf-pnd", headers={"X-API-Key": READ_KEY}).json()
        assert info["backend"] == "pynndescent" and not info["writable"] and info["query_params"] == []
        v = e.vectors[3].tolist()
        r = c.post("/v1/indexes/mf-pnd/search", headers={"X-API-Key": READ_KEY}, json={"vector": v, "k": 3})
        want = index.search(e.vectors[3], 3)[0][0].tolist()
        assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == want
        r = c.put("/v1/indexes/mf-pnd/items", headers={"X-API-Key": ADMIN_KEY},
                  json={"items": [{"id": 777777, "vector": [1.0] * DIM}]})
        assert r.status_code in (400, 409, 422) and "read-only over HTTP" in r.text, r.text
