"""Recommenders: turn a request into a query vector and ask an index (``DESIGN.md``, "Interfaces").

Verbs follow ``implicit``'s ``RecommenderBase``: :meth:`Recommender.recommend` (a user's top-k,
items seen in training excluded) and :meth:`Recommender.similar_items`. Dot-product models (matrix
factorisation, ALS) use maximum inner product search; DeepWalk and text models use cosine. Without an
index the recommender answers by exact search (a FAISS ``Flat`` index built on the fly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from annrec._validate import check_k
from annrec.embeddings import Embeddings
from annrec.errors import InputError
from annrec.index import Index, build_index


@dataclass
class Recommendation:
    """One recommended item: external id, score (similarity, or squared L2 distance) and metadata."""

    item_id: Any
    score: float
    item: dict[str, Any] | None = None


class Recommender:
    """Answers ``recommend`` and ``similar_items`` for an :class:`Embeddings` artifact through an index.

    Args:
        embeddings: item vectors (and user vectors for collaborative filtering).
        index: an index built from those item vectors (same ids, dim and metric); ``None`` builds an
            exact FAISS ``Flat`` index.

    Raises:
        InputError: the index does not match the embeddings (dimension, metric or count).
    """

    def __init__(self, embeddings: Embeddings, index: Index | None = None) -> None:
        if index is None:
            index = build_index(embeddings.vectors, embeddings.ids, embeddings.metric, backend="faiss",
                                factory="Flat")
        if index.dim != embeddings.dim or index.metric != embeddings.metric:
            raise InputError(f"index (dim {index.dim}, metric {index.metric}) does not match the embeddings "
                             f"(dim {embeddings.dim}, metric {embeddings.metric}): build the index from them")
        self.embeddings = embeddings
        self.index = index

    def _pack(self, ids: np.ndarray, scores: np.ndarray) -> list[Recommendation]:
        items = self.embeddings.items or {}
        out = []
        for i, s in zip(ids.tolist(), scores.tolist()):
            if i is None or (isinstance(i, int) and i < 0):
                continue
            out.append(Recommendation(i, float(s), items.get(i) or self.index.items.get(i)))
        return out

    def recommend(self, user_id, k: int = 10, exclude_seen: bool = True,
                  params: dict[str, Any] | None = None) -> list[Recommendation]:
        """Top-``k`` items for a known user by maximum inner product search with the user's vector.

        Raises:
            UnknownIdError: the user is unknown (or the model has no user vectors).
            InputError: ``k`` <= 0 or larger than the catalogue (less the seen items).
        """
        row = self.embeddings.query_row_of(user_id)
        seen = self.embeddings.seen_ids(user_id) if exclude_seen else None
        limit = len(self.index) - (len(seen) if seen is not None else 0)
        k = check_k(k, limit=max(limit, 0))
        q = self.embeddings.queries[row]
        ids, scores = self.index.search(q, k, params=params,
                                        denied_ids=seen if seen is not None and len(seen) else None)
        return self._pack(ids[0], scores[0])

    def similar_items(self, item_id, k: int = 10, params: dict[str, Any] | None = None) -> list[Recommendation]:
        """The ``k`` items nearest to ``item_id`` under the model's metric, the item itself excluded.

        Raises:
            UnknownIdError: unknown item. InputError: ``k`` <= 0 or larger than the catalogue - 1.
        """
        if item_id in self.index:
            q = self.index.get_vector(item_id)
        else:
            q = self.embeddings.vectors[self.embeddings.row_of(item_id)]
        k = check_k(k, limit=len(self.index) - 1)
        ids, scores = self.index.search(q, k, params=params, denied_ids=[item_id])
        return self._pack(ids[0], scores[0])
