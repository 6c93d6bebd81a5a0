"""A deny-list resolved once (Index.deny_list) answers like the ids it came from, on every backend, and is
resolved again after the index changes; the Recommender's per-user copy follows the index's writes."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.embeddings import Embeddings
from annrec.index import build_index
from annrec.recommend import Recommender

CONFIGS = [dict(backend="faiss", factory="Flat"), dict(backend="faiss", factory="IVF8,Flat", nprobe=8),
           dict(backend="hnswlib", M=16, ef_construction=100, ef=200), dict(backend="usearch", ef=200)]


def _data(n=400, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), np.arange(1000, 1000 + n)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["backend"] + "-" + c.get("factory", "hnsw"))
def test_a_resolved_deny_list_answers_like_its_ids(cfg):
    x, ids = _data()
    index = build_index(x, ids, "ip", **cfg)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(5, x.shape[1])).astype(np.float32)
    for r in range(len(q)):
        top = index.search(q[r], 30, threads=1)[0][0]
        denied = np.concatenate([top[:25], [5, 99_999]])  # most of the top, plus ids the index lacks
        dl = index.deny_list(denied)
        assert dl.n_denied == 25 and dl.n_allowed == len(ids) - 25
        want = index.search(q[r], 10, denied_ids=denied, threads=1)
        got = index.search(q[r], 10, denied_ids=dl, threads=1)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
        assert not set(got[0][0].tolist()) & set(denied.tolist())
        assert len(set(got[0][0].tolist()) & set(top[25:30].tolist())) >= 4  # the nearest unseen ones


@pytest.mark.parametrize("cfg", CONFIGS[::2], ids=["faiss", "hnswlib"])
def test_a_deny_list_is_resolved_again_after_the_index_changes(cfg):
    x, ids = _data()
    index = build_index(x, ids, "ip", **cfg)
    q = x[:1] * 3
    top = index.search(q, 5, threads=1)[0][0]
    dl = index.deny_list(top[:2])
    assert dl.valid_for(index)
    index.remove([top[2]])  # the third nearest goes away: the stale mask would still allow it
    assert not dl.valid_for(index)
    got = index.search(q, 3, denied_ids=dl, threads=1)[0][0]
    assert top[2] not in got and top[0] not in got and top[1] not in got
    assert got[0] == top[3]
    # an upsert that makes a denied id the best match keeps it denied; new items count
    index.add(q * 10, [top[0]])
    got = index.search(q, 3, denied_ids=dl, threads=1)[0][0]
    assert top[0] not in got and top[1] not in got


def test_all_but_a_few_denied_leaves_exactly_the_rest():
    x, ids = _data(n=50)
    index = build_index(x, ids, "l2", backend="hnswlib", M=8, ef_construction=50, ef=10)
    dl = index.deny_list(ids[3:])
    got, scores = index.search(x[10], 5, denied_ids=dl, threads=1)
    assert sorted(got[0][:3].tolist()) == ids[:3].tolist() and got[0][3:].tolist() == [-1, -1]
    assert np.isnan(scores[0][3:]).all()


def test_the_recommender_keeps_a_users_deny_list_until_the_index_changes():
    x, ids = _data(n=200)
    rng = np.random.default_rng(3)
    users = rng.normal(size=(4, x.shape[1])).astype(np.float32)
    import scipy.sparse as sp

    seen = sp.csr_matrix((np.ones(40), (np.repeat(np.arange(4), 10), rng.choice(200, 40))), shape=(4, 200))
    emb = Embeddings(vectors=x, ids=ids, metric="ip", queries=users, query_ids=np.arange(4), seen=seen)
    index = build_index(x, ids, "ip", backend="faiss", factory="Flat")
    rec = Recommender(emb, index)
    first = [h.item_id for h in rec.recommend(2, 5)]
    seen_ids = set(rec.seen_ids(2).tolist())
    assert not set(first) & seen_ids
    assert [h.item_id for h in rec.recommend(2, 5)] == first  # from the kept deny-list
    index.remove([first[0]])
    again = [h.item_id for h in rec.recommend(2, 5)]
    assert again[:4] == first[1:] and first[0] not in again and not set(again) & seen_ids
