"""FAISS ``mips_l2``: maximum inner product search answered by an L2 index (Bachrach et al. 2014).

Unit tests on synthetic vectors with widely varying norms (the case the reduction exists for); whether it
pays on real embeddings is measured by ``annrec bench run … -d bench/mips.yaml`` (ALS, MF and sequence
artifacts of ml-latest-small; docs/cli.md), and one slow test here checks the IVF gain on a real ALS model.
"""

from __future__ import annotations

import numpy as np
import pytest

from _index_fixtures import brute_force
from annrec.errors import InputError
from annrec.index import build_index, load_index

RNG = np.random.default_rng(1)
X = (RNG.standard_normal((1500, 16)) * RNG.uniform(0.1, 4.0, (1500, 1))).astype(np.float32)
Q = RNG.standard_normal((40, 16)).astype(np.float32)
IDS = np.arange(1500) * 3 + 11


def test_flat_mips_l2_returns_the_exact_inner_product_top_k_and_scores():
    idx = build_index(X, IDS, "ip", backend="faiss", factory="Flat", mips_l2=True)
    labels, scores = brute_force(X, Q, 10, "ip")
    ids, got = idx.search(Q, 10)
    assert (ids == IDS[labels]).all()
    np.testing.assert_allclose(got, scores, rtol=1e-4, atol=1e-3)   # inner products, not L2 distances
    assert idx.raw.d == 17 and idx.params["mips_max_norm"] == pytest.approx(np.linalg.norm(X, axis=1).max(), 1e-5)


def test_filters_and_small_allow_lists_keep_inner_product_scores():
    idx = build_index(X, IDS, "ip", backend="faiss", factory="Flat", mips_l2=True)
    ids, scores = idx.search(Q[:1], 5, denied_ids=IDS[:750])
    assert not set(ids[0].tolist()) & set(IDS[:750].tolist())
    np.testing.assert_allclose(scores[0], [X[(i - 11) // 3] @ Q[0] for i in ids[0]], rtol=1e-4, atol=1e-3)
    ids2, scores2 = idx.search(Q[:1], 2, allowed_ids=[int(IDS[0]), int(IDS[1])])
    assert sorted(ids2[0].tolist()) == [int(IDS[0]), int(IDS[1])]
    np.testing.assert_allclose(sorted(scores2[0]), sorted([X[0] @ Q[0], X[1] @ Q[0]]), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    idx = build_index(X, IDS, "ip", backend="faiss", factory="IVF16,Flat", nprobe=4, mips_l2=True)
    idx.save(tmp_path / "i")
    back = load_index(tmp_path / "i")
    assert back.params["mips_l2"] is True and back.params["mips_max_norm"] == idx.params["mips_max_norm"]
    a, sa = idx.search(Q, 10)
    b, sb = back.search(Q, 10)
    assert (a == b).all() and np.allclose(sa, sb)


def test_upsert_within_the_norm_bound_is_found_and_one_above_it_is_refused_losing_nothing():
    idx = build_index(X, IDS, "ip", backend="faiss", factory="Flat", mips_l2=True)
    bound = idx.params["mips_max_norm"]
    target = int(IDS[5])
    q = Q[0] / np.linalg.norm(Q[0])
    inside = (q * bound * 0.999).astype(np.float32)            # the best possible item for q within the bound
    idx.add(inside[None, :], [target])
    assert idx.search(q[None, :], 1)[0][0, 0] == target
    with pytest.raises(InputError, match="rebuild the index"):
        idx.add((q * bound * 2)[None, :].astype(np.float32), [target])
    assert target in idx and np.allclose(idx.get_vector(target), inside)   # the refused upsert changed nothing
    assert idx.search(q[None, :], 1)[0][0, 0] == target


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_mips_l2_needs_metric_ip(metric):
    with pytest.raises(InputError, match="needs metric 'ip'"):
        build_index(X, IDS, metric, backend="faiss", factory="Flat", mips_l2=True)


def test_mips_l2_must_be_a_boolean():
    with pytest.raises(InputError, match="true or false"):
        build_index(X, IDS, "ip", backend="faiss", factory="Flat", mips_l2="yes")


@pytest.mark.slow
def test_ivf_recall_gain_on_a_real_als_model():
    """On ALS item vectors of ml-latest-small (norms spread over two orders of magnitude), IVF with the
    reduction finds more of the exact inner-product top-10 at the same nprobe (bench/mips.yaml: 0.31 -> 0.47
    at nprobe 1, 0.79 -> 0.87 at nprobe 8)."""
    from tests._data_fixtures import require_real_data

    from annrec.data import load_movielens
    from annrec.train.als import ImplicitALS

    require_real_data()
    ml = load_movielens("ml-latest-small")
    als = ImplicitALS(factors=64, iterations=15, seed=0, num_threads=1).fit(ml)
    emb = als.to_embeddings()
    x, q = emb.vectors, np.ascontiguousarray(emb.queries, dtype=np.float32)
    truth = build_index(x, np.arange(len(x)), "ip", backend="faiss", factory="Flat").search(q, 10)[0]

    def rec(found):
        return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])

    plain = build_index(x, np.arange(len(x)), "ip", backend="faiss", factory="IVF128,Flat")
    mips = build_index(x, np.arange(len(x)), "ip", backend="faiss", factory="IVF128,Flat", mips_l2=True)
    for nprobe in (1, 4):
        r_plain = rec(plain.search(q, 10, params={"nprobe": nprobe})[0])
        r_mips = rec(mips.search(q, 10, params={"nprobe": nprobe})[0])
        assert r_mips > r_plain + 0.05, (nprobe, r_plain, r_mips)


def test_the_preset_spec_builds_a_mips_l2_ivf_index():
    from pathlib import Path

    from annrec.index.spec import IndexSpec

    spec = IndexSpec.from_yaml(Path(__file__).resolve().parents[1] / "index" / "ivf-flat-mips.yaml")
    assert spec.metric == "ip" and spec.params["mips_l2"] is True
    idx = build_index(X, IDS, spec.metric, backend=spec.backend, **spec.params)
    truth = IDS[brute_force(X, Q, 10, "ip")[0]]
    found = idx.search(Q, 10, params={"nprobe": 64})[0]      # every list probed: exact
    assert (np.sort(found, axis=1) == np.sort(truth, axis=1)).all()
