"""The ScaNN backend behind Index: recall and exact scores per metric, nprobe / reorder, filters, removes,
the refused adds, save/load and bad parameters. Skipped where scann is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from _index_fixtures import brute_force
from annrec.errors import InputError
from annrec.index import ScannIndex, build_index, load_index  # annrec (and FAISS) before scann

pytest.importorskip("scann")

RNG = np.random.default_rng(3)
CENTERS = RNG.standard_normal((16, 16)).astype(np.float32) * 2
X = ((CENTERS[RNG.integers(0, 16, 3000)] + RNG.standard_normal((3000, 16)))
     * RNG.uniform(0.5, 2.0, (3000, 1))).astype(np.float32)
Q = (CENTERS[RNG.integers(0, 16, 40)] + RNG.standard_normal((40, 16))).astype(np.float32)
IDS = np.arange(3000) * 3 + 1


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(found, truth)]))


def _exact_scores(ids: np.ndarray, metric: str) -> np.ndarray:
    rows = (ids - 1) // 3
    x, q = X.astype(np.float64), Q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        return ((q[:, None, :] - x[rows]) ** 2).sum(-1)
    return np.einsum("qkd,qd->qk", x[rows], q)


@pytest.fixture(scope="module")
def indexes() -> dict[str, ScannIndex]:
    return {m: build_index(X, IDS, m, backend="scann", nlist=32, nprobe=8) for m in ("l2", "ip", "cosine")}


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_recall_and_exact_scores(indexes, metric):
    index = indexes[metric]
    ids, scores = index.search(Q, 10)
    order, _ = brute_force(X, Q, 10, metric)
    assert _recall(ids, IDS[order]) >= 0.9
    np.testing.assert_allclose(scores, _exact_scores(ids, metric), rtol=1e-4, atol=1e-3)  # re-ordered: exact
    diffs = np.diff(scores, axis=1)
    assert (diffs >= -1e-4).all() if metric == "l2" else (diffs <= 1e-4).all()
    one = np.concatenate([index.search(q, 10, threads=1)[0] for q in Q[:5]])
    np.testing.assert_array_equal(one, ids[:5])  # one at a time == batch


def test_nprobe_and_reorder_per_call(indexes):
    index = indexes["l2"]
    truth = IDS[brute_force(X, Q, 10, "l2")[0]]
    low = _recall(index.search(Q, 10, params={"nprobe": 1, "reorder": 10})[0], truth)
    high = _recall(index.search(Q, 10, params={"nprobe": 32, "reorder": 200})[0], truth)
    assert high >= low and high >= 0.97
    assert index.params["nprobe"] == 8 and index._has_param("nprobe") and not index._has_param("efSearch")
    with pytest.raises(InputError, match="unknown query parameter 'ef' for the scann backend: use nprobe, reorder"):
        index.search(Q, 5, params={"ef": 10})


def test_filters_removes_refused_adds_and_save_load(indexes, tmp_path):
    index = build_index(X, IDS, "ip", backend="scann", nlist=32, nprobe=8)
    allowed = IDS[::4]
    ids, _ = index.search(Q, 10, allowed_ids=allowed)
    assert np.isin(ids, allowed).all() and _recall(ids, allowed[brute_force(X[::4], Q, 10, "ip")[0]]) >= 0.9
    ids, _ = index.search(Q, 10, denied_ids=IDS[:1500])
    assert not np.isin(ids, IDS[:1500]).any()
    nearest = index.search(Q[:1], 1)[0][0][0]
    index.remove([nearest])
    assert nearest not in index.search(Q[:1], 10)[0][0] and len(index) == 2999
    with pytest.raises(InputError, match="read-only after its build.*rebuild"):
        index.add(Q[:1], [10**9])
    assert len(index) == 2999 and 10**9 not in index  # refused before anything changed
    ids, scores = index.search(Q, 10)
    index.save(tmp_path / "s")
    loaded = load_index(tmp_path / "s")
    assert type(loaded) is ScannIndex and loaded.params == index.params and nearest not in loaded
    ids2, scores2 = loaded.search(Q, 10)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)


def test_bad_parameters_name_the_valid_ones():
    for kw, msg in (({"nlist": 0}, "nlist must be a positive integer"), ({"reorder": -1}, "reorder"),
                    ({"anisotropic_quantization_threshold": -1}, "anisotropic_quantization_threshold"),
                    ({"M": 8}, "unknown scann parameter.*use nlist, nprobe")):
        with pytest.raises(InputError, match=msg):
            build_index(X[:100], IDS[:100], "l2", backend="scann", **kw)
