"""Interactions: construction, CSR, subset, id lookups, sequences, fingerprint, filter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _data_fixtures import toy
from annrec.data import Interactions, as_external_ids, factorize_ids
from annrec.errors import DataError, InputError, UnknownIdError


def small() -> Interactions:
    # users 10, 20, 30; items 100, 200; (10,100) twice
    return Interactions.from_arrays([20, 10, 10, 30, 10], [100, 200, 100, 200, 100],
                                    [4.0, 3.0, 5.0, 1.0, 2.0], [5, 3, 1, 9, 1], name="small")


def test_from_arrays_dtypes_and_sorted_ids():
    d = small()
    assert d.user_idx.dtype == np.int32 and d.item_idx.dtype == np.int32
    assert d.rating.dtype == np.float32 and d.timestamp.dtype == np.int64
    assert d.user_ids.dtype == np.int64 and d.item_ids.dtype == np.int64
    assert d.user_ids.tolist() == [10, 20, 30] and d.item_ids.tolist() == [100, 200]
    assert (d.n_users, d.n_items, d.n_events, len(d)) == (3, 2, 5, 5)
    assert d.user_ids[d.user_idx].tolist() == [20, 10, 10, 30, 10]
    assert "n_events=5" in repr(d)


def test_defaults_for_implicit_feedback():
    d = Interactions.from_arrays(["a", "b"], ["x", "x"])
    assert d.rating.tolist() == [1.0, 1.0] and d.timestamp.tolist() == [0, 0]
    assert d.user_ids.dtype == object and d.user_ids.tolist() == ["a", "b"]


def test_external_id_types():
    assert as_external_ids(np.array(["1", "22", "-3"], dtype=object)).dtype == np.int64
    assert as_external_ids(np.array(["1", "007"], dtype=object)).dtype == object  # leading zero kept
    assert as_external_ids(np.array(["1", "x"], dtype=object)).tolist() == ["1", "x"]
    assert as_external_ids(np.array([1.0, 2.0])).dtype == np.int64
    idx, uniq = factorize_ids(["b", "a", "b"])
    assert uniq.tolist() == ["a", "b"] and idx.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="missing"):
        as_external_ids(np.array(["1", None], dtype=object))


def test_invalid_construction():
    with pytest.raises(DataError, match="lengths"):
        Interactions(np.zeros(3), np.zeros(2), None, None, np.array([1]), np.array([1]))
    with pytest.raises(DataError, match="user_idx must lie"):
        Interactions(np.array([0, 2]), np.array([0, 0]), None, None, np.array([1, 2]), np.array([1]))
    with pytest.raises(DataError, match="duplicates"):
        Interactions(np.array([0]), np.array([0]), None, None, np.array([1, 1]), np.array([1]))
    with pytest.raises(DataError, match="NaN"):
        Interactions(np.array([0]), np.array([0]), np.array([np.nan]), None, np.array([1]), np.array([1]))


def test_to_csr_sums_duplicates_and_binary():
    d = small()
    m = d.to_csr()
    assert m.shape == (3, 2) and m.dtype == np.float32
    u, i = d.user_index(10), d.item_index(100)
    assert m[u, i] == pytest.approx(7.0)  # 5 + 2
    assert m.nnz == 4
    b = d.to_csr(binary=True)
    assert b[u, i] == 1.0 and set(b.data.tolist()) == {1.0} and b.nnz == 4


def test_subset_keeps_id_space_and_order():
    d = small()
    s = d.subset(np.array([False, True, False, True, False]))
    assert (s.n_users, s.n_items, s.n_events) == (3, 2, 2)
    assert s.user_ids is d.user_ids or np.array_equal(s.user_ids, d.user_ids)
    assert s.rating.tolist() == [3.0, 1.0]
    assert d.subset(np.array([3, 1])).rating.tolist() == [1.0, 3.0]
    assert s.to_csr().shape == d.to_csr().shape
    with pytest.raises(InputError):
        d.subset(np.array([True]))


def test_user_and_item_index_lookups():
    d = small()
    assert d.user_index(20) == 1 and d.user_index("20") == 1 and d.user_index(np.int64(30)) == 2
    assert d.item_index(" 200 ") == 1
    with pytest.raises(UnknownIdError, match="unknown user id 99.*3 users.*small"):
        d.user_index(99)
    with pytest.raises(UnknownIdError, match="unknown item id 'abc'"):
        d.item_index("abc")
    with pytest.raises(KeyError):  # UnknownIdError is a KeyError for callers that catch that
        d.item_index(True)
    s = Interactions.from_arrays(["u1", "u2"], ["a", "b"])
    assert s.user_index("u2") == 1
    with pytest.raises(UnknownIdError, match="strings"):
        s.user_index(2)


def test_sequences_time_order_with_ties_in_source_order():
    d = small()
    seqs = d.sequences()
    assert len(seqs) == 3
    # user 10: events (item200,t3), (item100,t1), (item100,t1) -> t1,t1 in source order, then t3
    assert d.item_ids[seqs[d.user_index(10)]].tolist() == [100, 100, 200]
    assert seqs[d.user_index(30)].tolist() == [d.item_index(200)]
    empty = d.subset(np.array([0]))  # only user 20 has events
    assert [len(s) for s in empty.sequences()] == [0, 1, 0]


def test_fingerprint_is_stable_and_sensitive():
    a, b = toy(seed=1), toy(seed=1)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    assert a.fingerprint() != toy(seed=2).fingerprint()
    r = a.rating.copy()
    r[0] += 0.5
    changed = Interactions(a.user_idx, a.item_idx, r, a.timestamp, a.user_ids, a.item_ids)
    assert changed.fingerprint() != a.fingerprint()
    # same events, other external ids
    other = Interactions(a.user_idx, a.item_idx, a.rating, a.timestamp, a.user_ids + 1, a.item_ids)
    assert other.fingerprint() != a.fingerprint()
    assert toy(str_ids=True).fingerprint() != toy().fingerprint()


def test_item_titles():
    meta = pd.DataFrame({"title": ["A", "B"]}, index=pd.Index([100, 200], name="item_id"))
    d = Interactions.from_arrays([1, 2], [100, 200], items_meta=meta)
    assert d.item_titles() == {100: "A", 200: "B"}
    assert small().item_titles() == {}


def test_filter_is_a_k_core_and_reindexes():
    d = Interactions.from_arrays([1, 1, 1, 2, 2, 3], [10, 20, 30, 10, 20, 10])
    f = d.filter(min_user_events=2, min_item_events=2)
    # user 3 (1 event) drops; then item 30 (1 event) drops; users 1, 2 keep 2 events each
    assert f.user_ids.tolist() == [1, 2] and f.item_ids.tolist() == [10, 20]
    assert f.n_events == 4
    assert np.bincount(f.user_idx).min() >= 2 and np.bincount(f.item_idx).min() >= 2
    assert f.user_ids[f.user_idx].tolist() == [1, 1, 2, 2]
    with pytest.raises(DataError, match="leaves no events"):
        d.filter(min_user_events=10)
    with pytest.raises(InputError):
        d.filter(min_user_events=0)
