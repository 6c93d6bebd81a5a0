"""FAISS query parameters through wrappers (re-ranking, pre-transforms), per-thread OpenMP threads, cosine."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from annrec.errors import InputError
from annrec.index import build_index

RNG = np.random.default_rng(0)
# clustered data, so IVF probes and PQ quantisation both matter
CENTERS = RNG.normal(size=(40, 32)).astype(np.float32) * 4
X = (CENTERS[RNG.integers(0, 40, 6000)] + RNG.normal(size=(6000, 32))).astype(np.float32)
Q = (CENTERS[RNG.integers(0, 40, 200)] + RNG.normal(size=(200, 32))).astype(np.float32)
IDS = np.arange(6000)
GT = build_index(X, IDS, "l2", backend="faiss", factory="Flat").search(Q, 10)[0]


def recall(ids):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), GT.tolist())]))


@pytest.fixture(scope="module")
def refine():
    return build_index(X, IDS, "l2", backend="faiss", factory="IVF64,PQ8x4fs,RFlat", nprobe=1)


def test_nprobe_and_k_factor_reach_a_reranking_fast_scan_index(refine):
    r1 = recall(refine.search(Q, 10, params={"nprobe": 1, "k_factor": 16})[0])
    r16 = recall(refine.search(Q, 10, params={"nprobe": 16, "k_factor": 16})[0])
    assert r16 > r1 + 0.1 and r16 >= 0.95
    kf1 = recall(refine.search(Q, 10, params={"nprobe": 16, "k_factor": 1})[0])
    kf8 = recall(refine.search(Q, 10, params={"nprobe": 16, "k_factor": 16})[0])
    assert kf8 > kf1 + 0.3  # 4-bit PQ alone ranks poorly; re-ranking 160 candidates exactly fixes it
    refine.set_query_params(nprobe=16, k_factor=16)  # defaults reach the wrapped indexes too
    assert recall(refine.search(Q, 10)[0]) == pytest.approx(kf8)
    refine.set_query_params(nprobe=1, k_factor=1)


def test_filters_work_through_the_reranking_wrapper(refine):
    denied = GT[:, 0]
    ids = refine.search(Q[:20], 10, params={"nprobe": 64, "k_factor": 16}, denied_ids=np.unique(denied))[0]
    assert not set(ids.ravel().tolist()) & set(denied.tolist())
    allowed = np.arange(0, 6000, 3)
    ids = refine.search(Q[:20], 10, params={"nprobe": 64}, allowed_ids=allowed)[0]
    assert set(ids.ravel().tolist()) <= set(allowed.tolist())


def test_nprobe_reaches_an_ivf_behind_a_pretransform():
    index = build_index(X, IDS, "l2", backend="faiss", factory="PCA16,IVF64,Flat")
    assert recall(index.search(Q, 10, params={"nprobe": 32})[0]) > recall(index.search(Q, 10, params={"nprobe": 1})[0])


def test_parameters_a_factory_lacks_are_errors():
    flat = build_index(X[:500], IDS[:500], "l2", backend="faiss", factory="Flat")
    with pytest.raises(InputError, match="k_factor applies to a re-ranking index"):
        flat.search(Q, 10, params={"k_factor": 4})
    with pytest.raises(InputError, match="nprobe applies to an IVF index"):
        flat.search(Q, 10, params={"nprobe": 4})


def test_threads_1_holds_in_a_fresh_worker_thread():
    index = build_index(X, IDS, "l2", backend="faiss", factory="Flat")
    seen = {}

    def work():
        index.search(Q, 10, threads=1)
        seen["threads"] = faiss.omp_get_max_threads()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["threads"] == 1


def test_cosine_equals_inner_product_on_normalised_vectors():
    xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = build_index(X, IDS, "cosine", backend="faiss", factory="Flat")
    ip = build_index(xn, IDS, "ip", backend="faiss", factory="Flat")
    qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    (ci, cs), (ii, is_) = cos.search(Q * 3.0, 10), ip.search(qn.astype(np.float32), 10)
    assert (ci == ii).all() and np.allclose(cs, is_, atol=1e-5)
    zero = cos.search(np.zeros((1, 32), dtype=np.float32), 3)[1]
    assert np.allclose(zero, 0.0)


def test_hnsw_build_parameters_reach_faiss(tmp_path):
    index = build_index(X[:2000], IDS[:2000], "l2", backend="faiss", factory="HNSW{M}", M=12, ef_construction=80)
    inner = faiss.downcast_index(index.raw)
    assert inner.hnsw.efConstruction == 80 and index.params["factory_resolved"] == "HNSW12"
    loaded = type(index).load(index.save(tmp_path / "h"))
    assert faiss.downcast_index(loaded.raw).hnsw.efConstruction == 80
    assert build_index(X[:500], IDS[:500], "l2", backend="faiss", factory="HNSW8",
                       efConstruction=64).raw.hnsw.efConstruction == 64  # FAISS's own spelling
    with pytest.raises(InputError, match="needs a factory string with"):
        build_index(X[:500], IDS[:500], "l2", backend="faiss", factory="HNSW32", M=16)
    with pytest.raises(InputError, match="ef_construction applies to an HNSW index"):
        build_index(X[:500], IDS[:500], "l2", backend="faiss", factory="Flat", ef_construction=100)
