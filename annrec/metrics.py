"""Ranking and rating metrics for the evaluation protocols of ``DESIGN.md``.

Top-N definitions (per user with at least one relevant item, then averaged over those users):

- ``recall@k`` = hits / min(k, |relevant|)  — the truncated recall of ``implicit.evaluation.
  ranking_metrics_at_k`` (and of the RecSys literature), so that a perfect top-k scores 1.0 when a
  user has more than k relevant items. With this definition the popularity baseline reaches 0.082 on
  the per-user temporal split of ml-latest-small, the figure the docs quote.
- ``precision@k`` = hits / k.
- ``NDCG@k`` = DCG / ideal DCG with binary gains and ``1/log2(rank+1)`` discounts; the ideal ranking
  places min(k, |relevant|) hits first.
- ``MRR`` = 1 / rank of the first hit within the top k (0 when none).
- ``MAP@k`` = mean over hits of precision at that hit, divided by min(k, |relevant|).
- ``coverage`` = distinct recommended items / catalogue size (over all users).
- ``RMSE`` = sqrt(mean((prediction - rating)²)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from annrec.errors import InputError

if TYPE_CHECKING:
    from annrec.data import Interactions


def rmse(predicted, actual) -> float:
    """Root mean squared error of two equal-length float arrays (rating units).

    Raises:
        InputError: different lengths or empty input.
    """
    p = np.asarray(predicted, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if p.shape != a.shape or p.size == 0:
        raise InputError(f"rmse needs two non-empty arrays of equal shape; got {p.shape} and {a.shape}")
    return float(np.sqrt(np.mean((p - a) ** 2)))


def ranking_metrics(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int,
                    n_items: int | None = None) -> dict[str, float]:
    """Top-N metrics of recommendation lists against relevant sets.

    Args:
        recommended: int ``(n_users, >=k)`` item indices in rank order; ``-1`` pads missing slots.
        relevant: per user (same order) an int array of relevant item indices (may be empty: the user
            is then skipped).
        k: cut-off.
        n_items: catalogue size, for ``coverage`` (omitted when None).

    Returns:
        ``{"recall", "precision", "ndcg", "mrr", "map", "coverage", "users"}`` (floats; users = count).

    Raises:
        InputError: ``k`` <= 0, or ``recommended`` and ``relevant`` of different lengths.
    """
    if k <= 0:
        raise InputError(f"k must be >= 1; got {k}")
    rec = np.asarray(recommended)[:, :k]
    if len(rec) != len(relevant):
        raise InputError(f"{len(rec)} recommendation lists for {len(relevant)} relevant sets")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict(recall=0.0, precision=0.0, ndcg=0.0, mrr=0.0, map=0.0)
    users = 0
    for row, rel in zip(rec, relevant):
        rel = np.asarray(rel)
        if rel.size == 0:
            continue
        users += 1
        hit = np.isin(row, rel) & (row >= 0)
        n_hit = int(hit.sum())
        denom = min(k, rel.size)
        sums["recall"] += n_hit / denom
        sums["precision"] += n_hit / k
        sums["ndcg"] += float(discounts[hit].sum() / discounts[:denom].sum())
        if n_hit:
            ranks = np.flatnonzero(hit) + 1
            sums["mrr"] += 1.0 / ranks[0]
            sums["map"] += float((np.arange(1, n_hit + 1) / ranks).sum() / denom)
    out = {name: (v / users if users else 0.0) for name, v in sums.items()}
    if n_items:
        valid = rec[rec >= 0]
        out["coverage"] = float(np.unique(valid).size / n_items)
    out["users"] = users
    return out


def top_k_excluding(scores: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> np.ndarray:
    """Top-``k`` column indices per row of ``scores`` ``(n, n_items)`` (descending), skipping ``exclude``.

    Returns int64 ``(n, k)``. ``exclude[i]`` (item indices) are set to ``-inf`` before ranking.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        for i, ex in enumerate(exclude):
            if len(ex):
                s[i, ex] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def evaluate_topn(recommend: Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray], train: Interactions,
                  test: Interactions, k: int = 10, batch_size: int = 256) -> dict[str, float]:
    """Run the top-N protocol: for each test user, rank items unseen in ``train`` and score them.

    Args:
        recommend: ``f(user_idx (b,) int, k, seen: list of item-index arrays) -> item_idx (b, k)``;
            it must not return items in ``seen`` (the protocol excludes training items).
        train, test: the two halves of a split in the same id space (``annrec.data.splits``).
        k: cut-off (10 in DESIGN.md).

    Returns:
        :func:`ranking_metrics` figures, keys ``recall@k``-style (``"recall@10"``, ``"ndcg@10"``,
        ``"mrr"``, ``"map@10"``, ``"precision@10"``, ``"coverage@10"``, ``"users"``).
    """
    tr = train.to_csr(binary=True)
    te = test.to_csr(binary=True)
    users = np.flatnonzero(np.diff(te.indptr) > 0)
    recs, rels = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        seen = [tr.indices[tr.indptr[u]:tr.indptr[u + 1]] for u in batch]
        recs.append(np.asarray(recommend(batch, k, seen)))
        rels.extend(te.indices[te.indptr[u]:te.indptr[u + 1]] for u in batch)
    m = ranking_metrics(np.concatenate(recs) if recs else np.empty((0, k), dtype=np.int64), rels, k,
                        n_items=tr.shape[1])
    return {f"recall@{k}": m["recall"], f"ndcg@{k}": m["ndcg"], "mrr": m["mrr"], f"map@{k}": m["map"],
            f"precision@{k}": m["precision"], f"coverage@{k}": m.get("coverage", 0.0), "users": m["users"]}


def popularity_recommender(train: Interactions) -> Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]:
    """The most-popular baseline: items ranked by training interaction count, seen items skipped."""
    counts = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float32)

    def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
        return top_k_excluding(np.broadcast_to(counts, (len(users), len(counts))), k, seen)

    return recommend


def dot_recommender(user_vectors: np.ndarray, item_vectors: np.ndarray
                    ) -> Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]:
    """Exact maximum inner product recommender over row-aligned user ``(n_users, d)`` and item
    ``(n_items, d)`` float32 matrices (indices = the Interactions' contiguous indices)."""

    def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
        return top_k_excluding(user_vectors[users] @ item_vectors.T, k, seen)

    return recommend
