"""Exact ground truth, its cache and checks, and the two recall measures."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.bench.datasets import Dataset
from annrec.bench.groundtruth import (
    brute_force_knn,
    check_groundtruth,
    exact_knn,
    ground_truth,
    knn_recall,
    pair_distances,
    threshold_recall,
)
from annrec.errors import DataError, InputError

from _bench_fixtures import naive_knn, synthetic


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("rerank", [True, False])
def test_exact_knn_matches_naive(metric, rerank):
    ds = synthetic(n=700, nq=30, metric=metric)
    ids, d = exact_knn(ds.train, ds.test, 15, metric, block=7, rerank=rerank)
    ref_ids, ref_d = naive_knn(ds.train, ds.test, 15, metric)
    np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=1e-4)
    assert (ids == ref_ids).mean() > 0.99  # float32 FAISS may swap exact ties; the re-rank is float64
    if rerank:
        np.testing.assert_array_equal(ids, ref_ids)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_brute_force_knn_is_faiss_exhaustive_search(metric):
    """One query and a batch (FAISS's BLAS path from 20 queries on) give the naive top-k and FAISS's scores."""
    ds = synthetic(n=500, nq=25, metric=metric)
    x, q = ds.train, ds.test
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    ref_ids, _ = naive_knn(ds.train, ds.test, 10, metric)
    for queries in (q[:1], q):
        ids, scores = brute_force_knn(x, queries, 10, metric)
        assert ids.shape == scores.shape == (len(queries), 10) and ids.dtype == np.int64
        np.testing.assert_array_equal(ids, ref_ids[:len(queries)])
        want = ((queries[:, None, :] - x[ids]) ** 2).sum(-1) if metric == "l2" else \
            np.einsum("qd,qkd->qk", queries, x[ids])
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-3)
    with pytest.raises(InputError):
        brute_force_knn(x, q, 3, "hamming")


def test_exact_knn_breaks_ties_by_row():
    train = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [3, 3]], np.float32)
    ids, d = exact_knn(train, np.zeros((1, 2), np.float32), 4, "l2")
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3]])
    np.testing.assert_allclose(d, [[1, 1, 1, 1]])


def test_exact_knn_bad_arguments():
    ds = synthetic(n=20, nq=2)
    with pytest.raises(InputError):
        exact_knn(ds.train, ds.test, 21, "l2")
    with pytest.raises(InputError):
        exact_knn(ds.train, ds.test, 3, "hamming")


def test_ground_truth_is_cached_by_data_hash(tmp_path):
    ds = synthetic()
    g1 = ground_truth(ds, 10, cache_dir=tmp_path)
    assert g1.origin == "computed" and g1.neighbors.shape == (len(ds.test), 10)
    files = list((tmp_path / "gt").glob("*.npz"))
    assert len(files) == 1 and ds.hash() in files[0].name
    g2 = ground_truth(ds, 5, cache_dir=tmp_path)
    assert g2.origin == "cache"
    np.testing.assert_array_equal(g2.neighbors, g1.neighbors[:, :5])
    other = Dataset(ds.name, ds.train + 1, ds.test, ds.metric)  # same name, other data -> other key
    assert ground_truth(other, 5, cache_dir=tmp_path).origin == "computed"
    assert len(list((tmp_path / "gt").glob("*.npz"))) == 2


def test_file_ground_truth_is_checked_against_the_data(tmp_path):
    ds = synthetic()
    ids, d = exact_knn(ds.train, ds.test, 10, "l2")
    good = Dataset(ds.name, ds.train, ds.test, "l2", ids, d)
    assert ground_truth(good, 10, cache_dir=tmp_path).origin == "file"
    shuffled = np.roll(ids, 1, axis=0)  # neighbours of other queries
    bad = Dataset(ds.name, ds.train, ds.test, "l2", shuffled)
    with pytest.raises(DataError, match="does not match the data set"):
        ground_truth(bad, 10, cache_dir=tmp_path)
    with pytest.raises(DataError, match="k=20"):
        check_groundtruth(good, ids, 20)
    # recompute=True ignores the file's neighbours
    assert ground_truth(bad, 10, cache_dir=tmp_path, recompute=True).origin == "computed"


def test_knn_recall_hand_made_case():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]])
    found = np.array([[4, 3, 2, 1],      # all found, other order
                      [5, 9, -1, -1],    # one found, two missing slots
                      [1, 1, 1, 9]])     # a repeated id counts once
    np.testing.assert_allclose(knn_recall(found, truth, 4), [1.0, 0.25, 0.25])
    np.testing.assert_allclose(knn_recall(found, truth, 2), [0.0, 0.5, 0.5])


def test_threshold_recall_forgives_ties_like_ann_benchmarks():
    truth_d = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    found_d = np.array([[1.0, 2.0, 3.0005],        # within the 1e-3 tolerance
                        [1.0, 1.0, np.inf]])        # a missing result
    np.testing.assert_allclose(threshold_recall(found_d, truth_d, 3), [1.0, 2 / 3])
    np.testing.assert_allclose(threshold_recall(np.array([[1.0, 2.0, 3.01]]), truth_d[:1], 3), [2 / 3])
    # a tie at the k-th distance: other ids, same distance -> full threshold recall, partial id recall
    train = np.array([[1, 0], [0, 1], [-1, 0], [5, 5]], np.float32)
    q = np.zeros((1, 2), np.float32)
    d = pair_distances(train, q, np.array([[0, 2]]), "l2")
    t = pair_distances(train, q, np.array([[0, 1]]), "l2")
    assert threshold_recall(d, t, 2)[0] == 1.0 and knn_recall(np.array([[0, 2]]), np.array([[0, 1]]), 2)[0] == 0.5


def test_pair_distances_conventions_and_missing():
    train = np.array([[3, 4], [1, 0]], np.float32)
    q = np.array([[0, 0], [1, 0]], np.float32)
    ids = np.array([[0, -1], [1, 0]])
    np.testing.assert_allclose(pair_distances(train, q, ids, "l2"), [[5, np.inf], [0, np.sqrt(20)]])
    np.testing.assert_allclose(pair_distances(train, q[1:], ids[1:], "cosine"), [[0, 1 - 3 / 5]], atol=1e-12)
    np.testing.assert_allclose(pair_distances(train, q[1:], ids[1:], "ip"), [[-1, -3]])
