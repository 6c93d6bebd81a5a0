"""Exact nearest neighbours by brute force (FAISS's exhaustive search), cached per data set; distance and recall computations.

Distances follow ANN-Benchmarks (smaller is closer): Euclidean distance for ``l2`` (not squared),
``1 - cos`` for ``cosine``, ``-<q, x>`` for ``ip`` (maximum inner product search).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annrec.bench.datasets import Dataset, default_cache_dir
from annrec.errors import DataError, InputError

#: largest k the cached ground truth is computed for (ANN-Benchmarks files store 100 neighbours)
GT_K = 100
#: ANN-Benchmarks' tolerance of the distance-threshold recall (``plotting/metrics.py``: knn, epsilon=1e-3)
THRESHOLD_EPSILON = 1e-3


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    n[n == 0] = 1.0
    return (x / n).astype(np.float32)


def _faiss_metric(metric: str):
    import faiss

    if metric not in ("l2", "cosine", "ip"):
        raise InputError(f"unknown metric {metric!r}: use l2, cosine or ip")
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def brute_force_knn(train: np.ndarray, test: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``train`` for every row of ``test`` by FAISS's exhaustive search.

    Calls FAISS's brute-force helper: ``faiss.knn_gpu`` when faiss-gpu sees a device
    (``faiss.get_num_gpus() > 0``), else ``faiss.knn`` (a BLAS matrix product from 20 queries on,
    FAISS's ``distance_compute_blas_threshold``). No index is built and the vectors are not copied.

    Args:
        train: float32 ``(n, dim)``; test: float32 ``(nq, dim)``, both unit length for ``cosine``
            (the caller normalises); k: ``1 <= k``; ``k > n`` pads with id ``-1``.
        metric: ``l2`` (squared Euclidean), ``cosine`` or ``ip`` (inner product).

    Returns:
        ``(ids int64 (nq, k), scores float32 (nq, k))``, best first: FAISS's own scores, i.e. squared L2
        distances for ``l2`` and inner products for ``cosine`` / ``ip``.

    Raises:
        InputError: unknown metric.
    """
    import faiss

    fm = _faiss_metric(metric)
    train = np.ascontiguousarray(train, dtype=np.float32)
    test = np.ascontiguousarray(test, dtype=np.float32)
    if hasattr(faiss, "knn_gpu") and faiss.get_num_gpus() > 0:
        d, i = faiss.knn_gpu(faiss.StandardGpuResources(), test, train, k, metric=fm)
    else:
        d, i = faiss.knn(test, train, k, metric=fm)
    return i.astype(np.int64, copy=False), d.astype(np.float32, copy=False)


def exact_knn(train: np.ndarray, test: np.ndarray, k: int, metric: str, *, block: int = 4096,
              rerank: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours of every row of ``test`` among the rows of ``train``.

    Candidates come from FAISS's exhaustive search (:func:`brute_force_knn`). With ``rerank`` (the
    default) the best ``2k + 16`` candidates per query are re-ranked with float64 distances, so float32
    rounding in ``|x|² - 2<q, x>`` cannot reorder the result (ties broken by the smaller row); without
    it FAISS's float32 result is returned as is (IndexFlat semantics, exact ties in any order).

    Args:
        train: float32 ``(n, dim)``; test: float32 ``(nq, dim)``; k: ``1 <= k <= n``;
        metric: ``l2``, ``cosine`` or ``ip``; block: queries per FAISS call (bounds the memory of
            the candidate lists).

    Returns:
        ``(neighbors int64 (nq, k), distances float32 (nq, k))``, ascending distance (ANN-Benchmarks
        convention, see the module docstring).

    Raises:
        InputError: bad ``k`` or metric.
    """
    n = len(train)
    if not 1 <= k <= n:
        raise InputError(f"k must be between 1 and the {n} base vectors; got {k}")
    _faiss_metric(metric)
    train = np.ascontiguousarray(train, dtype=np.float32)
    test = np.ascontiguousarray(test, dtype=np.float32)
    if metric == "cosine":
        train, test = _normalize(train), _normalize(test)
    kk = min(n, 2 * k + 16) if rerank else k
    out_i = np.empty((len(test), k), dtype=np.int64)
    out_d = np.empty((len(test), k), dtype=np.float32)
    for s in range(0, len(test), max(1, int(block))):
        q = test[s:s + block]
        cand, score = brute_force_knn(train, q, kk, metric)
        if not rerank:
            d = score.astype(np.float64)
            d = np.sqrt(np.maximum(d, 0)) if metric == "l2" else (1.0 - d if metric == "cosine" else -d)
            out_i[s:s + block], out_d[s:s + block] = cand, d
            continue
        exact = pair_distances(train, q, cand, metric, normalized=True)
        order = np.lexsort((cand, exact), axis=1)[:, :k]  # by distance, then row
        out_i[s:s + block] = np.take_along_axis(cand, order, axis=1)
        out_d[s:s + block] = np.take_along_axis(exact, order, axis=1)
    return out_i, out_d


def pair_distances(train: np.ndarray, test: np.ndarray, ids: np.ndarray, metric: str, *,
                   normalized: bool = False, block: int = 256) -> np.ndarray:
    """float64 distances (ANN-Benchmarks convention) between ``test[i]`` and ``train[ids[i, j]]``.

    Args:
        train: ``(n, dim)``; test: ``(nq, dim)``; ids: int ``(nq, m)``, ``-1`` marks a missing result.
        normalized: the vectors are already unit length (cosine).

    Returns:
        float64 ``(nq, m)``; ``inf`` where ``ids`` is ``-1`` (or out of range).
    """
    ids = np.asarray(ids)
    if metric not in ("l2", "cosine", "ip"):
        raise InputError(f"unknown metric {metric!r}: use l2, cosine or ip")
    out = np.full(ids.shape, np.inf, dtype=np.float64)
    if ids.size == 0:
        return out
    valid = (ids >= 0) & (ids < len(train))
    safe = np.where(valid, ids, 0).astype(np.int64)
    block = max(1, min(block, (1 << 24) // max(1, ids.shape[1] * train.shape[1])))  # ~128 MB of float64
    for s in range(0, len(ids), block):
        x = train[safe[s:s + block]].astype(np.float64)     # (b, m, dim)
        q = test[s:s + block].astype(np.float64)
        if metric == "cosine" and not normalized:
            x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
            q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-300)
        dot = np.matmul(x, q[:, :, None])[..., 0]           # float64 (b, m)
        if metric == "l2":
            xx = np.matmul(x[:, :, None, :], x[:, :, :, None])[..., 0, 0]
            d = np.sqrt(np.maximum(xx - 2 * dot + (q * q).sum(-1)[:, None], 0.0))
        elif metric == "cosine":
            d = 1.0 - dot
        else:
            d = -dot
        out[s:s + block] = np.where(valid[s:s + block], d, np.inf)
    return out


@dataclass
class GroundTruth:
    """Exact neighbours of a data set's queries.

    Attributes:
        neighbors: int64 ``(nq, k)`` base rows, nearest first.
        distances: float64 ``(nq, k)`` their distances, recomputed by :func:`pair_distances` (so that run
            distances and ground-truth distances come from the same arithmetic).
        origin: ``"file"`` (the data set's own, checked), ``"cache"`` or ``"computed"``.
    """

    neighbors: np.ndarray
    distances: np.ndarray
    origin: str

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])


def check_groundtruth(ds: Dataset, neighbors: np.ndarray, k: int, *, n_check: int = 16, seed: int = 0,
                      what: str = "ground truth") -> np.ndarray:
    """Check claimed neighbours against an exact search on a random sample of queries.

    Returns:
        float64 ``(nq, k)`` distances of the claimed neighbours.

    Raises:
        DataError: fewer than ``k`` columns, wrong number of rows, ids out of range, or neighbours that
            are not the exact ones for the sampled queries (the ground truth belongs to other data).
    """
    neighbors = np.asarray(neighbors)
    if neighbors.ndim != 2 or neighbors.shape[0] != len(ds.test):
        raise DataError(f"{what} of {ds.name} has shape {neighbors.shape} for {len(ds.test)} queries: it does "
                        f"not match the data set (recompute it: drop the file's neighbours or pass the right one)")
    if neighbors.shape[1] < k:
        raise DataError(f"{what} of {ds.name} lists {neighbors.shape[1]} neighbours per query but k={k}: "
                        f"use k <= {neighbors.shape[1]} or recompute the ground truth")
    nb = neighbors[:, :k].astype(np.int64)
    if nb.min() < 0 or nb.max() >= len(ds.train):
        raise DataError(f"{what} of {ds.name} holds ids outside 0..{len(ds.train) - 1}: it does not match the "
                        f"data set")
    dist = pair_distances(ds.train, ds.test, nb, ds.metric)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(ds.test), min(n_check, len(ds.test)), replace=False))
    _, exact = exact_knn(ds.train, ds.test[sample], k, ds.metric)
    claimed = np.sort(dist[sample], axis=1)
    exact = exact.astype(np.float64)
    scale = np.abs(exact).max(axis=1, keepdims=True) + 1e-12
    bad = np.abs(claimed - exact) > 1e-3 * scale + 1e-5
    if bad.any():
        qi = int(sample[np.argmax(bad.any(axis=1))])
        raise DataError(f"{what} of {ds.name} does not match the data set: for query {qi} its neighbours are "
                        f"not the exact {k} nearest under {ds.metric} (checked {len(sample)} queries by brute "
                        f"force). Pair the right files, or drop the ground truth to have it recomputed")
    return dist


def ground_truth(ds: Dataset, k: int, *, cache_dir: str | os.PathLike | None = None,
                 recompute: bool = False) -> GroundTruth:
    """Exact ``k`` nearest neighbours of ``ds``'s queries.

    Uses the data set's own neighbours when it has them (checked on a sample by
    :func:`check_groundtruth`); else loads ``cache_dir/gt/<data hash>.npz`` or computes
    ``max(k, 100)`` neighbours by brute force (:func:`exact_knn`) and caches them there.

    Raises:
        InputError: ``k`` out of range. DataError: the file's ground truth does not match the data.
    """
    if not 1 <= k <= len(ds.train):
        raise InputError(f"k must be between 1 and the {len(ds.train)} base vectors; got {k}")
    if ds.neighbors is not None and not recompute:
        dist = check_groundtruth(ds, ds.neighbors, k)
        return GroundTruth(ds.neighbors[:, :k].astype(np.int64), dist, "file")
    cache = Path(cache_dir or default_cache_dir()) / "gt" / f"{ds.hash()}.npz"
    if cache.is_file() and not recompute:
        try:
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                nb = z["neighbors"]
            if meta.get("hash") == ds.hash() and nb.shape[0] == len(ds.test) and nb.shape[1] >= k:
                nb = nb[:, :k].astype(np.int64)
                return GroundTruth(nb, pair_distances(ds.train, ds.test, nb, ds.metric), "cache")
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: recompute below
    kk = min(max(k, GT_K), len(ds.train))
    nb, _ = exact_knn(ds.train, ds.test, kk, ds.metric)
    buf = io.BytesIO()
    np.savez(buf, neighbors=nb.astype(np.int32),
             meta=np.array(json.dumps({"hash": ds.hash(), "k": kk, "metric": ds.metric, "name": ds.name,
                                       "n_train": len(ds.train), "n_test": len(ds.test)})))
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gt.", dir=cache.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(buf.getvalue())
    os.replace(tmp, cache)
    nb = nb[:, :k]
    return GroundTruth(nb, pair_distances(ds.train, ds.test, nb, ds.metric), "computed")


# --------------------------------------------------------------------------- recall
def knn_recall(found: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Recall@k by neighbour ids: ``|found[:k] ∩ truth[:k]| / k`` per query.

    ``-1`` entries (missing results) and repeated ids count once at most.

    Args:
        found: int ``(nq, >=k)`` returned rows; truth: int ``(nq, >=k)`` exact rows.

    Returns:
        float64 ``(nq,)`` in ``[0, 1]``.
    """
    found = np.asarray(found)[:, :k]
    truth = np.asarray(truth)[:, :k]
    out = np.empty(len(found), dtype=np.float64)
    for s in range(0, len(found), 2048):
        f = found[s:s + 2048]
        t = truth[s:s + 2048]
        fs = np.sort(f, axis=1)
        dup = np.zeros_like(fs, dtype=bool)
        dup[:, 1:] = fs[:, 1:] == fs[:, :-1]
        hit = (fs[:, :, None] == t[:, None, :]).any(-1) & ~dup & (fs >= 0)
        out[s:s + 2048] = hit.sum(1) / k
    return out


def threshold_recall(found_distances: np.ndarray, truth_distances: np.ndarray, k: int,
                     epsilon: float = THRESHOLD_EPSILON) -> np.ndarray:
    """ANN-Benchmarks' distance-threshold recall ("k-nn" in ``plotting/metrics.py``).

    A returned neighbour counts when its distance is at most the true k-th distance plus ``epsilon``,
    so ties at the k-th distance are not penalised.

    Args:
        found_distances: ``(nq, >=k)`` distances of the returned neighbours (``inf`` for missing).
        truth_distances: ``(nq, >=k)`` exact distances, ascending.

    Returns:
        float64 ``(nq,)`` in ``[0, 1]``.
    """
    f = np.asarray(found_distances, dtype=np.float64)[:, :k]
    t = np.asarray(truth_distances, dtype=np.float64)[:, k - 1] + epsilon
    return (f <= t[:, None]).sum(1) / k
