"""Splits: sizes, disjointness, same id space, temporal order, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from _data_fixtures import toy
from annrec.data import Interactions, leave_last_one, random_split, temporal_user_split
from annrec.errors import InputError


def _event_keys(d: Interactions) -> np.ndarray:
    """Events as rows (user, item, rating, timestamp) in the external id space."""
    return np.stack([d.user_ids[d.user_idx], d.item_ids[d.item_idx], d.rating * 2, d.timestamp], axis=1)


def _assert_partition(full: Interactions, train: Interactions, test: Interactions):
    assert train.n_events + test.n_events == full.n_events
    for part in (train, test):
        assert part.n_users == full.n_users and part.n_items == full.n_items
        assert np.array_equal(part.user_ids, full.user_ids) and np.array_equal(part.item_ids, full.item_ids)
        assert part.to_csr().shape == full.to_csr().shape
    both = np.concatenate([_event_keys(train), _event_keys(test)])
    a = both[np.lexsort(both.T[::-1])]
    k = _event_keys(full)
    b = k[np.lexsort(k.T[::-1])]
    assert np.array_equal(a, b)  # every event exactly once


def test_random_split_sizes_disjoint_deterministic_seeded():
    d = toy(n_events=1000)
    tr, te = random_split(d, 0.1, seed=0)
    assert te.n_events == 100 and tr.n_events == 900
    _assert_partition(d, tr, te)
    tr2, te2 = random_split(d, 0.1, seed=0)
    assert tr2.fingerprint() == tr.fingerprint() and te2.fingerprint() == te.fingerprint()
    _, te3 = random_split(d, 0.1, seed=1)
    assert te3.fingerprint() != te.fingerprint()
    # the draw is documented: default_rng(seed).permutation(n)[:n_test]
    perm = np.random.default_rng(0).permutation(1000)[:100]
    assert np.array_equal(te.rating, d.rating[np.sort(perm)])
    with pytest.raises(InputError):
        random_split(d, 1.0)
    with pytest.raises(InputError):
        random_split(d, 0)


def _per_user_check_temporal(d, tr, te):
    for u in range(d.n_users):
        tr_t = tr.timestamp[tr.user_idx == u]
        te_t = te.timestamp[te.user_idx == u]
        if len(tr_t) and len(te_t):
            assert te_t.min() >= tr_t.max()


def test_temporal_user_split_counts_order_and_determinism():
    d = toy(n_users=6, n_items=9, n_events=200, seed=3)
    tr, te = temporal_user_split(d, 0.2)
    _assert_partition(d, tr, te)
    _per_user_check_temporal(d, tr, te)
    counts = np.bincount(d.user_idx, minlength=d.n_users)
    te_counts = np.bincount(te.user_idx, minlength=d.n_users)
    expected = np.clip(np.floor(counts * 0.2 + 0.5), 1, counts - 1)
    assert np.array_equal(te_counts, expected)
    tr2, te2 = temporal_user_split(d, 0.2)
    assert te2.fingerprint() == te.fingerprint() and tr2.fingerprint() == tr.fingerprint()


def test_temporal_split_ties_follow_source_order_and_small_users():
    # user 1: 5 events all at t=7 -> the last in source order (item 50) is the test event
    # user 2: one event -> stays in train; user 3: two events -> 1 train, 1 test
    d = Interactions.from_arrays([1, 1, 1, 1, 1, 2, 3, 3], [10, 20, 30, 40, 50, 10, 20, 10],
                                 None, [7, 7, 7, 7, 7, 1, 9, 3])
    tr, te = temporal_user_split(d, 0.2)
    assert sorted(zip(te.user_ids[te.user_idx].tolist(), te.item_ids[te.item_idx].tolist())) == \
        [(1, 50), (3, 20)]
    assert 2 in tr.user_ids[tr.user_idx].tolist()
    _per_user_check_temporal(d, tr, te)
    # every user with >= 2 events keeps >= 1 train and >= 1 test event even for a large fraction
    tr, te = temporal_user_split(d, 0.99)
    assert set(tr.user_ids[tr.user_idx].tolist()) == {1, 2, 3}
    assert set(te.user_ids[te.user_idx].tolist()) == {1, 3}


def test_leave_last_one():
    d = toy(n_users=8, n_events=150, seed=5)
    tr, te = leave_last_one(d)
    _assert_partition(d, tr, te)
    _per_user_check_temporal(d, tr, te)
    counts = np.bincount(d.user_idx, minlength=d.n_users)
    assert np.array_equal(np.bincount(te.user_idx, minlength=d.n_users), (counts >= 2).astype(int))
    # the test item is the last element of the user's time-ordered sequence
    seqs = d.sequences()
    for u, i in zip(te.user_idx.tolist(), te.item_idx.tolist()):
        assert seqs[u][-1] == i
    single = Interactions.from_arrays([1, 2, 2], [5, 5, 6], None, [0, 1, 2])
    tr, te = leave_last_one(single)
    assert te.n_events == 1 and te.item_ids[te.item_idx[0]] == 6 and tr.n_events == 2


def test_splits_work_with_string_ids():
    d = toy(str_ids=True, n_events=100)
    for tr, te in (random_split(d), temporal_user_split(d), leave_last_one(d)):
        _assert_partition(d, tr, te)


def test_splits_warn_when_they_fall_back_to_file_order():
    import warnings

    from annrec.data import Interactions
    from annrec.data.splits import FileOrderWarning, leave_last_one, temporal_user_split

    inter = Interactions.from_arrays([1, 1, 1, 2, 2], [10, 11, 12, 10, 13])  # no timestamps
    with pytest.warns(FileOrderWarning, match="no timestamps.*order in the file"):
        train, test = temporal_user_split(inter, 0.34)
    assert test.n_events == 2  # the last event of each user in file order
    with pytest.warns(FileOrderWarning):
        leave_last_one(inter)
    timed = Interactions.from_arrays([1, 1], [10, 11], timestamp=[5, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        temporal_user_split(timed, 0.5)
