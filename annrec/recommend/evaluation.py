"""The evaluation protocols' view of a :class:`~annrec.recommend.Recommender` (``annrec.metrics.evaluate_topn``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from annrec.recommend.recommender import Recommender


def topn_recommend_fn(recommender: Recommender, query_vectors: np.ndarray, item_ids: np.ndarray,
                      params: dict[str, Any] | None = None
                      ) -> Callable[[np.ndarray, int, list[np.ndarray]], np.ndarray]:
    """An :func:`annrec.metrics.evaluate_topn` recommender served by ``recommender.search``.

    Args:
        recommender: over an index whose external ids are ``item_ids`` (or a subset of them).
        query_vectors: float32 ``(n_users, dim)`` user vectors in the split's user-index space.
        item_ids: ``(n_items,)`` external item id of each item index of the split.
        params: per-call query parameters (``{"ef": 64}``, ``{"nprobe": 8}``).

    Returns:
        ``f(user_idx (b,) int, k, seen: list of item-index arrays) -> item_idx (b, k)`` (``-1`` where
        the index returned an item outside ``item_ids``); each user's ``seen`` items are the deny-list of
        one single-threaded search, exactly as a served recommendation excludes them.
    """
    pos = {v: i for i, v in enumerate(item_ids.tolist())}
    q_all = np.ascontiguousarray(query_vectors, dtype=np.float32)

    def recommend(users: np.ndarray, k: int, seen: list[np.ndarray]) -> np.ndarray:
        out = np.full((len(users), k), -1, dtype=np.int64)
        for row, (u, s) in enumerate(zip(users.tolist(), seen)):
            hits = recommender.search(q_all[u:u + 1], k, denied_ids=item_ids[s] if len(s) else None,
                                      params=params, threads=1, include_metadata=False)[0]
            out[row, :len(hits)] = [pos.get(h.item_id, -1) for h in hits]
        return out

    return recommend
