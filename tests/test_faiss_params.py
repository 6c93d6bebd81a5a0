"""FAISS query parameters on every wrapper against FAISS's own ParameterSpace, errors that name the valid
parameters, k_factor on the CLI / HTTP / bench layers, OpenMP threads per thread, HNSW build parameters."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from annrec.errors import InputError
from annrec.index import build_index

RNG = np.random.default_rng(1)
CENTERS = RNG.normal(size=(30, 32)).astype(np.float32) * 3
X = (CENTERS[RNG.integers(0, 30, 4000)] + RNG.normal(size=(4000, 32))).astype(np.float32)
Q = (CENTERS[RNG.integers(0, 30, 100)] + RNG.normal(size=(100, 32))).astype(np.float32)
IDS = np.arange(len(X))
GT = build_index(X, IDS, "l2", backend="faiss", factory="Flat").search(Q, 10)[0]
PS_NAME = {"nprobe": "nprobe", "efSearch": "efSearch", "k_factor": "k_factor_rf"}


def recall(ids: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), GT.tolist())]))


def raw_search(index, params: dict) -> np.ndarray:
    """The same search done by FAISS alone: a copy of the index, parameters set by ``faiss.ParameterSpace``."""
    raw = faiss.clone_index(index.raw)
    ps = faiss.ParameterSpace()
    for name, value in params.items():
        ps.set_index_parameter(raw, PS_NAME[name], value)
    return raw.search(Q, 10)[1]


# every wrapper: pre-transform, re-ranking, id map, and their nests; low and high settings of each parameter
WRAPPED = [
    ("PCA16,IVF64,Flat", ["nprobe"], {"nprobe": 1}, {"nprobe": 32}),
    ("IVF64,PQ8x4fs,RFlat", ["nprobe", "k_factor"], {"nprobe": 1, "k_factor": 1}, {"nprobe": 32, "k_factor": 16}),
    ("IVF64,PQ8x4fs,Refine(Flat)", ["nprobe", "k_factor"], {"nprobe": 2, "k_factor": 1},
     {"nprobe": 32, "k_factor": 8}),
    ("PCA16,IVF64,PQ8x4fs,RFlat", ["nprobe", "k_factor"], {"nprobe": 1, "k_factor": 1},
     {"nprobe": 32, "k_factor": 16}),
    ("IDMap,IVF64,Flat", ["nprobe"], {"nprobe": 1}, {"nprobe": 32}),
    ("IDMap2,HNSW8", ["efSearch"], {"efSearch": 1}, {"efSearch": 128}),
    ("HNSW8,SQ4,RFlat", ["efSearch", "k_factor"], {"efSearch": 1, "k_factor": 1}, {"efSearch": 128, "k_factor": 4}),
    ("IDMap,HNSW8,SQ4,RFlat", ["efSearch", "k_factor"], {"efSearch": 1, "k_factor": 1},
     {"efSearch": 128, "k_factor": 4}),
]


@pytest.mark.parametrize("factory,valid,low,high", WRAPPED, ids=[w[0] for w in WRAPPED])
def test_per_call_parameters_reach_the_wrapped_index(factory, valid, low, high):
    index = build_index(X, IDS, "l2", backend="faiss", factory=factory)
    assert index.valid_query_params() == valid
    ids_low, ids_high = (index.search(Q, 10, params=p)[0] for p in (low, high))
    # the very answers FAISS gives with the parameters set by its own ParameterSpace
    assert (ids_low == raw_search(index, low)).all() and (ids_high == raw_search(index, high)).all()
    assert recall(ids_high) > recall(ids_low)
    index.set_query_params(**high)  # the same values as defaults reach the same indexes
    assert (index.search(Q, 10)[0] == ids_high).all()
    assert (index.search(Q, 10, params=low)[0] == ids_low).all()  # a per-call value beats the default


def test_recall_rises_with_nprobe_and_with_k_factor_on_a_fast_scan_reranking_index():
    index = build_index(X, IDS, "l2", backend="faiss", factory="IVF64,PQ16x4fs,RFlat")
    by_nprobe = [recall(index.search(Q, 10, params={"nprobe": n, "k_factor": 8})[0]) for n in (1, 4, 16, 64)]
    by_k_factor = [recall(index.search(Q, 10, params={"nprobe": 16, "k_factor": f})[0]) for f in (1, 2, 8)]
    assert by_nprobe == sorted(by_nprobe) and by_nprobe[-1] > by_nprobe[0] + 0.1
    assert by_k_factor == sorted(by_k_factor) and by_k_factor[-1] > by_k_factor[0] + 0.1


@pytest.mark.slow
def test_fashion_mnist_nprobe_and_k_factor_move_recall_of_ivf_pq_fastscan_rflat():
    from annrec.bench.datasets import fashion_mnist

    ds = fashion_mnist()
    x, q = ds.train[:10000], ds.test[:200]
    gt = build_index(x, np.arange(len(x)), "l2", backend="faiss", factory="Flat").search(q, 10)[0]
    index = build_index(x, np.arange(len(x)), "l2", backend="faiss", factory="IVF64,PQ196x4fs,RFlat")

    def rec(**p):
        ids = index.search(q, 10, params=p)[0]
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), gt.tolist())]))

    assert rec(nprobe=1, k_factor=8) + 0.1 < rec(nprobe=16, k_factor=8)
    assert rec(nprobe=16, k_factor=1) + 0.05 < rec(nprobe=16, k_factor=8)


@pytest.mark.parametrize("factory,params,match", [
    ("Flat", {"nprobe": 4}, r"nprobe applies to an IVF index; this FAISS index is 'Flat', which takes none"),
    ("HNSW8,SQ8,RFlat", {"nprobe": 4}, r"which takes ef \(efSearch\), k_factor"),
    ("IVF16,Flat", {"k_factor": 4}, r"k_factor applies to a re-ranking index.*which takes nprobe"),
    ("IVF16,Flat", {"ef": 4}, r"ef \(efSearch\) applies to an HNSW index.*which takes nprobe"),
    ("IVF16,PQ8x4fs,RFlat", {"nprob": 4}, r"unknown query parameter 'nprob'.*takes nprobe, k_factor"),
])
def test_parameters_a_factory_lacks_are_errors_naming_the_valid_ones(factory, params, match):
    index = build_index(X[:1000], IDS[:1000], "l2", backend="faiss", factory=factory)
    with pytest.raises(InputError, match=match):
        index.search(Q, 10, params=params)
    with pytest.raises(InputError, match=match):
        index.set_query_params(**params)


def test_k_factor_on_the_cli_http_and_bench_layers():
    from annrec.bench.algorithms import AnnrecFaiss, RawFaiss
    from annrec.cli.index_cmds import query_params as cli_params
    from annrec.service.limits import query_params as http_params
    from annrec.service.registry import ServedIndex

    index = build_index(X, IDS, "l2", backend="faiss", factory="IVF64,PQ8x4fs,RFlat")
    assert cli_params(index, None, 8, 4) == {"nprobe": 8, "k_factor": 4}
    with pytest.raises(InputError, match="--k-factor applies to FAISS re-ranking indexes"):
        cli_params(build_index(X[:500], IDS[:500], "l2", backend="faiss", factory="Flat"), None, None, 4)
    srv = SimpleNamespace(index=index, name="pq")
    srv.query_param_names = lambda: ServedIndex.query_param_names(srv)
    assert http_params(srv, None, 8, 4) == {"nprobe": 8, "k_factor": 4}
    flat = SimpleNamespace(index=build_index(X[:500], IDS[:500], "l2", backend="faiss", factory="Flat"), name="f")
    flat.query_param_names = lambda: ServedIndex.query_param_names(flat)
    with pytest.raises(InputError, match="k_factor does not apply"):
        http_params(flat, None, None, 4)
    # the bench adapters: annrec and raw FAISS give the same rows for the same parameters
    found = []
    for cls in (AnnrecFaiss, RawFaiss):
        algo = cls("l2", factory="IVF64,PQ8x4fs,RFlat")
        algo.fit(X)
        algo.set_threads(1)
        for qa in ({"nprobe": 1, "k_factor": 1}, {"nprobe": 16, "k_factor": 8}):
            algo.set_query_arguments(**qa)
            found.append(np.stack([algo.query(q, 10) for q in Q]))
    assert (found[0] == found[2]).all() and (found[1] == found[3]).all()  # same training, same answers
    assert recall(found[1]) > recall(found[0]) + 0.2


def test_threads_are_set_per_calling_thread():
    index = build_index(X[:1000], IDS[:1000], "l2", backend="faiss", factory="Flat")
    all_cores = faiss.omp_get_max_threads()
    seen = {}

    def work(name, threads):
        index.search(Q, 10, threads=threads)
        seen[name] = faiss.omp_get_max_threads()

    index.search(Q, 10, threads=1)  # the main thread asks for 1 first: the workers must not inherit a cache
    for name, threads in (("one", 1), ("default", None)):
        t = threading.Thread(target=work, args=(name, threads))
        t.start()
        t.join()
    assert seen["one"] == 1 and faiss.omp_get_max_threads() == 1
    assert seen["default"] == all_cores or all_cores == 1


def test_cosine_matches_ip_on_normalised_vectors_single_and_batch():
    xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    qn = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
    cos = build_index(X, IDS, "cosine", backend="faiss", factory="HNSW16", efSearch=64)
    ip = build_index(xn, IDS, "ip", backend="faiss", factory="HNSW16", efSearch=64)
    for i in range(10):  # the single-query fast path scales by the norm it already computed
        (ci, cs), (ii, is_) = cos.search(Q[i:i + 1] * 7.0, 10), ip.search(qn[i:i + 1], 10)
        assert (ci == ii).all() and np.allclose(cs, is_, atol=1e-5)
    (ci, cs), (ii, is_) = cos.search(Q, 10), ip.search(qn, 10)
    assert (ci == ii).all() and np.allclose(cs, is_, atol=1e-5)
    (ci64, _) = cos.search(Q.astype(np.float64), 10)  # the checked path agrees with the fast path
    assert (ci64 == ci).all()
    assert np.allclose(cos.search(np.zeros((1, 32), dtype=np.float32), 3)[1], 0.0)


def test_hnsw_default_ef_construction_and_m():
    from annrec.index.faiss_backend import DEFAULT_EF_CONSTRUCTION

    index = build_index(X[:1000], IDS[:1000], "l2", backend="faiss", factory="HNSW{M},SQ8,RFlat", M=12)
    hnsw = faiss.downcast_index(faiss.downcast_index(index.raw).base_index)
    assert hnsw.hnsw.efConstruction == DEFAULT_EF_CONSTRUCTION
    assert index.params["factory_resolved"] == "HNSW12,SQ8,RFlat"
    assert hnsw.hnsw.nb_neighbors(0) == 24  # level 0 holds 2·M neighbours


def test_cli_build_and_query_take_k_factor(tmp_path):
    import json

    from typer.testing import CliRunner

    import annrec.cli  # noqa: F401  (registers every command)
    from annrec.cli.apps import app
    from annrec.embeddings import Embeddings
    from annrec.index import load_index

    emb = Embeddings(vectors=X, ids=IDS, metric="l2", manifest={"trainer": "synthetic"}).save(tmp_path / "emb")
    np.save(tmp_path / "q.npy", Q)
    out = tmp_path / "pq"
    res = CliRunner().invoke(app, ["index", "build", "--embeddings", str(emb), "--backend", "faiss", "--param",
                                   "factory=IVF64,PQ8x4fs,RFlat", "--param", "nprobe=16", "--param", "k_factor=1",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert faiss.downcast_index(load_index(out).raw).k_factor == 1

    def query(*opts):
        report = tmp_path / "q.json"
        res = CliRunner().invoke(app, ["index", "query", "--index", str(out), "--vectors", str(tmp_path / "q.npy"),
                                       "-k", "10", *opts, "--json", str(report)])
        assert res.exit_code == 0, res.output
        fig = json.loads(report.read_text())
        return fig["params"], recall(np.array([[r["id"] for r in row] for row in fig["results"]]))

    (p1, r1), (p16, r16) = query("--k-factor", "1"), query("--k-factor", "16")
    assert p1 == {"k_factor": 1} and p16 == {"k_factor": 16} and r16 > r1 + 0.2
