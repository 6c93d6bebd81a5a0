"""Filter views: a recurring payload filter on hnswlib is answered from a cached sub-index plus an exact delta."""

from __future__ import annotations

import numpy as np
import pytest

import annrec.index.filtered as filtered
from annrec.index import build_index
from annrec.recommend import Recommender

RNG = np.random.default_rng(7)
N, DIM = 3000, 16
X = RNG.normal(size=(N, DIM)).astype(np.float32)
IDS = np.arange(N)
Q = RNG.normal(size=(40, DIM)).astype(np.float32)
FLT = {"must": [{"key": "c", "match": {"value": 1}}]}


@pytest.fixture
def rec(monkeypatch):
    # the allowed sets here are small; lower the exact-search thresholds so they take the graph/view path
    monkeypatch.setattr(filtered, "EXACT_FILTER_THRESHOLD", 10)
    monkeypatch.setattr(filtered, "EXACT_FILTER_BUDGET", 100)
    index = build_index(X, IDS, "l2", backend="hnswlib", M=16, ef_construction=100, ef=64)
    index.items = {int(i): {"c": int(i % 3)} for i in IDS}
    return Recommender(None, index)


def _exact_filtered(index, q, allowed, k=10):
    labels = np.asarray(sorted(index._label[i] for i in allowed))
    x = index._vectors[labels]
    d = ((x - q) ** 2).sum(1)
    return [int(index._ext[labels[j]]) for j in np.argsort(d)[:k]]


def _ids(hits):
    return [h.item_id for h in hits]


def test_a_recurring_filter_gets_a_view_with_the_same_answers(rec):
    index = rec.index
    allowed = [i for i in index.ids.tolist() if i % 3 == 1]
    first = _ids(rec.search(Q[0], 10, filter=FLT)[0])
    assert index.views.describe()["views"] == 0  # the first use takes the filtered graph search
    rec.search(Q[1], 10, filter=FLT)
    index.views.wait(30)
    assert index.views.describe() == {"views": 1, "vectors": len(allowed), "building": 0}
    recalls = []
    for q in Q:
        got = _ids(rec.search(q, 10, filter=FLT)[0])
        assert all(i % 3 == 1 for i in got) and len(got) == 10
        recalls.append(len(set(got) & set(_exact_filtered(index, q, allowed))) / 10)
    assert np.mean(recalls) >= 0.95
    assert len(set(first) & set(_ids(rec.search(Q[0], 10, filter=FLT)[0]))) >= 9  # graph path ~ view path


def test_writes_after_the_build_are_seen_through_the_view(rec):
    index = rec.index
    for q in Q[:2]:
        rec.search(q, 10, filter=FLT)
    index.views.wait(30)
    view = next(iter(index.views._views.values()))
    # a new matching item right at the query: written after the build, found by the exact delta
    index.add(Q[:1] + 1e-4, [10**6], items={10**6: {"c": 1}})
    # a new non-matching item, also at the query: never returned under the filter
    index.add(Q[:1] + 2e-4, [10**6 + 1], items={10**6 + 1: {"c": 2}})
    got = _ids(rec.search(Q[0], 10, filter=FLT)[0])
    assert got[0] == 10**6 and 10**6 + 1 not in got
    assert next(iter(index.views._views.values())) is view  # answered through the same view
    # the view's best hit deleted: gone from the answer, the rest still 10 matching items
    top = _ids(rec.search(Q[5], 10, filter=FLT)[0])[0]
    index.remove([top])
    got = _ids(rec.search(Q[5], 10, filter=FLT)[0])
    assert top not in got and len(got) == 10 and all(i % 3 == 1 for i in got)
    # metadata changed by an upsert: the item leaves the filter's allow-set and the answer
    keep = got[0]
    index.add(index.get_vector(keep)[None, :], [keep], items={keep: {"c": 0}})
    assert keep not in _ids(rec.search(Q[5], 10, filter=FLT)[0])


def test_many_writes_start_a_rebuild(rec):
    index = rec.index
    for q in Q[:2]:
        rec.search(q, 10, filter=FLT)
    index.views.wait(30)
    old = next(iter(index.views._views.values()))
    n_new = int(0.2 * old.size)
    index.add(RNG.normal(size=(n_new, DIM)).astype(np.float32), np.arange(10**6, 10**6 + n_new),
              items={10**6 + j: {"c": 1} for j in range(n_new)})
    rec.search(Q[0], 10, filter=FLT)  # the delta passes REBUILD_FRACTION: a rebuild starts in the background
    index.views.wait(30)
    new = next(iter(index.views._views.values()))
    assert new is not old and new.size == old.size + n_new


def test_filters_with_other_deny_or_allow_lists_skip_views(rec):
    index = rec.index
    for q in Q[:3]:
        rec.search(q, 10, filter=FLT, allowed_ids=list(range(0, N, 2)))  # an explicit allow-list too: no key
    index.views.wait(30)
    assert index.views.describe()["views"] == 0


def test_a_filters_allow_set_follows_writes_without_rescanning_the_catalogue(rec, monkeypatch):
    import annrec.recommend.filters as filters

    index = rec.index
    first = set(rec.filter_ids(FLT).tolist())
    assert first == {i for i in IDS.tolist() if i % 3 == 1}
    calls = []
    real = filters.compile_filter
    monkeypatch.setattr(filters, "compile_filter", lambda *a, **k: calls.append(1) or real(*a, **k))
    index.add(RNG.normal(size=(2, DIM)).astype(np.float32), [10**6, 10**6 + 1],
              items={10**6: {"c": 1}, 10**6 + 1: {"c": 2}})
    index.remove([4])                                                   # a matching item deleted
    index.add(index.get_vector(7)[None, :], [7], items={7: {"c": 0}})    # a matching item that no longer matches
    index.add(index.get_vector(9)[None, :], [9], items={9: {"c": 1}})    # a non-matching item that now matches
    now = set(rec.filter_ids(FLT).tolist())
    assert calls == []  # brought up to date from the ids the writes touched
    assert now == (first - {4, 7}) | {10**6, 9}
    assert now == set(Recommender(None, index).filter_ids(FLT).tolist())  # what a fresh evaluation gives
