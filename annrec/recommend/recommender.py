"""``Recommender``: requests (a user, an item, a sequence, a text, raw vectors) to ranked items.

Verbs follow ``implicit``'s ``RecommenderBase`` (``recommend``, ``recommend`` for a batch of users,
``similar_items``) and qdrant-client's argument order (query, ``k``, then filters, then search
parameters). Dot-product models (matrix factorisation, ALS, the sequence model) are served by maximum
inner product search; DeepWalk and text models by cosine similarity.

Exclusions (a user's seen items, the query item, a sequence's own items, a client's ``denied_ids``) are
one deny-list handed to :meth:`annrec.index.Index.search`, which turns it into internal labels with a
vectorised lookup and lets the backend exclude them the cheapest way it has (a FAISS ``IDSelector``
bitmap; for hnswlib an over-fetch of ``k + len(deny-list)`` with the denied labels dropped).
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from annrec._validate import check_k
from annrec.embeddings import Embeddings
from annrec.errors import InputError, UnknownIdError
from annrec.index import Index, build_index
from annrec.recommend.pairing import check_pairing

#: allow-masks of seen items kept per user (Recommender._seen_deny_list): 64 MiB, one byte per item and user
DENY_CACHE_BYTES = 64 << 20


@dataclass(slots=True)
class Recommendation:
    """One ranked item.

    Attributes:
        item_id: the external item id (int or str).
        score: float, the index's score: a similarity for ``ip`` / ``cosine`` (higher is better), the
            squared L2 distance for ``l2`` (lower is better).
        metadata: the item's metadata (title, genres, …) or ``None``.
    """

    item_id: Any
    score: float
    metadata: dict[str, Any] | None = None

    @property
    def item(self) -> dict[str, Any] | None:
        """Deprecated spelling of :attr:`metadata` (annrec 0.1)."""
        _warnings.warn("Recommendation.item is deprecated: use Recommendation.metadata", DeprecationWarning,
                       stacklevel=2)
        return self.metadata

    def to_dict(self, include_metadata: bool = True) -> dict[str, Any]:
        """The HTTP/JSON form of a hit: ``{"id", "score", "metadata"}``."""
        out: dict[str, Any] = {"id": self.item_id, "score": self.score}
        if include_metadata:
            out["metadata"] = self.metadata
        return out


def encode_with(encoder: Any, *args: Any) -> tuple[np.ndarray, list[str]]:
    """Call a query encoder (``.encode(...)`` if it has one, else the callable itself).

    The encoder contract: text encoders take ``([text])``, sequence encoders
    ``(item_ids, timestamps, now)``; either returns a float32 vector ``(dim,)`` / ``(1, dim)`` or
    ``(vector, warnings: list[str])``.

    Returns:
        ``(query vector float32 (1, dim), warnings)``.

    Raises:
        InputError: the encoder returned something that is not one vector.
    """
    fn = encoder.encode if hasattr(encoder, "encode") else encoder
    out = fn(*args)
    warnings: list[str] = []
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list):
        out, warnings = out
    vec = np.asarray(out, dtype=np.float32)
    if vec.ndim == 1:
        vec = vec[None, :]
    if vec.ndim != 2 or vec.shape[0] != 1:
        raise InputError(f"the query encoder returned an array of shape {vec.shape} for one query; expected (dim,)")
    return np.ascontiguousarray(vec), [str(w) for w in warnings]


class Recommender:
    """Top-k items for users, items, sequences, texts and raw vectors through one index.

    Args:
        embeddings: the :class:`~annrec.embeddings.Embeddings` the index was built from (item vectors, user
            vectors, seen items, metadata); ``None`` serves an index alone (raw-vector search and similar
            items only).
        index: an :class:`~annrec.index.Index` over those item vectors; ``None`` builds an exact FAISS
            ``Flat`` index over them.
        encoder: the artifact's query encoder (a sequence model's or a text model's, see
            :func:`encode_with`), needed by :meth:`recommend_next` / :meth:`search_text`.
        seen: a CSR matrix ``(n_users, n_items)`` (rows follow ``embeddings.query_ids``, columns
            ``embeddings.ids``) of the items to exclude per user instead of ``embeddings.seen`` (an
            evaluation split's training part).

    Raises:
        InputError: neither embeddings nor an index, or an index that does not belong to the embeddings
            (:func:`~annrec.recommend.check_pairing`).
    """

    def __init__(self, embeddings: Embeddings | None, index: Index | None = None, encoder: Any = None, *,
                 seen: sp.csr_matrix | None = None) -> None:
        if index is None:
            if embeddings is None:
                raise InputError("a Recommender needs an Embeddings artifact, an index, or both")
            index = build_index(embeddings.vectors, embeddings.ids, embeddings.metric, backend="faiss",
                                factory="Flat")
        elif embeddings is not None:
            check_pairing(embeddings, index)
        self.embeddings = embeddings
        self.index = index
        self.encoder = encoder
        self.seen = seen if seen is not None else (embeddings.seen if embeddings is not None else None)
        if self.seen is not None and embeddings is not None and embeddings.queries is not None \
                and self.seen.shape != (len(embeddings.queries), len(embeddings)):
            raise InputError(f"the seen-items matrix has shape {self.seen.shape} but the model has "
                             f"{len(embeddings.queries)} users and {len(embeddings)} items")

    # ------------------------------------------------------------------ helpers
    @property
    def has_users(self) -> bool:
        """True when the embeddings carry user (query) vectors, so :meth:`recommend` can answer."""
        return self.embeddings is not None and self.embeddings.queries is not None

    def metadata(self, item_id) -> dict[str, Any] | None:
        """An item's metadata: the index's (written by upserts) first, then the embeddings'."""
        m = self.index.items.get(item_id)
        if m is None and self.embeddings is not None and self.embeddings.items:
            m = self.embeddings.items.get(item_id)
        return m

    def pack(self, ids: np.ndarray, scores: np.ndarray, include_metadata: bool = True) -> list[Recommendation]:
        """One result row (``ids`` ``(k,)``, ``scores`` ``(k,)`` from :meth:`Index.search`) as
        :class:`Recommendation` objects; unfilled slots (id ``-1`` / ``None``) are dropped."""
        pairs = zip(ids.tolist(), scores.tolist())
        if not include_metadata:
            return [Recommendation(i, s) for i, s in pairs if i is not None and i != -1]
        a = self.index.items
        b = (self.embeddings.items if self.embeddings is not None else None) or {}
        return [Recommendation(i, s, a.get(i) or b.get(i)) for i, s in pairs if i is not None and i != -1]

    def filter_ids(self, filter):
        """Ids of the items whose metadata satisfies a payload filter (:mod:`annrec.recommend.filters`): an int64
        array for integer ids, else a list.

        Evaluated once over every item's metadata (a Python pass), then kept per filter and brought up to date
        after writes from the ids the writes touched (:meth:`~annrec.index.Index.changed_since`), so a stream
        of upserts does not re-scan the catalogue for every filtered search.

        Raises:
            InputError: a malformed filter, an unknown operator or metadata key.
        """
        from annrec.recommend.filters import compile_filter

        index = self.index
        key = self._filter_key(filter)
        gen = getattr(index, "_generation", None)
        cache = self.__dict__.setdefault("_filter_cache", {})
        hit = cache.get(key)
        if hit is not None and hit["generation"] == gen:
            return hit["ids"]
        changed = index.changed_since(hit["generation"]) if hit is not None and hasattr(index, "changed_since") \
            else None
        if changed is not None and len(changed) <= 10_000:
            pred, members = hit["pred"], hit["set"]
            for i in changed:
                if i in index and pred(self._metadata_of(i) or {}):
                    members.add(i)
                else:
                    members.discard(i)
        else:
            merged = dict((self.embeddings.items if self.embeddings is not None else None) or {})
            merged.update(index.items)
            keys: set[str] = set()
            for meta in merged.values():
                if meta:
                    keys.update(meta)
            pred = compile_filter(filter, keys)
            members = {i for i, meta in merged.items() if pred(meta or {})}
            if len(cache) >= 64:
                cache.clear()
            hit = cache[key] = {"pred": pred, "set": members}
        ids = list(members)
        hit["ids"] = np.asarray(ids, dtype=np.int64) if ids and all(type(i) is int for i in ids) else ids
        hit["generation"] = gen
        return hit["ids"]

    def _metadata_of(self, item_id):
        meta = self.index.items.get(item_id)
        if meta is None and self.embeddings is not None and self.embeddings.items:
            meta = self.embeddings.items.get(item_id)
        return meta

    def _filter_count(self, key: str, allowed) -> int:
        """Live items among a filter's allow-set, cached with it (per filter and index version)."""
        version = (getattr(self.index, "_generation", None), len(self.index))
        cache = self.__dict__.get("_count_cache")
        if cache is None or cache[0] != version:
            cache = self._count_cache = (version, {})
        n = cache[1].get(key)
        if n is None:
            n = cache[1][key] = self.index.count_live(allowed)
            if len(cache[1]) > 64:
                cache[1].clear()
        return n

    @staticmethod
    def _filter_key(filter) -> str:
        """The canonical JSON of a payload filter (the cache key of its allow-set and of its filter view)."""
        import json

        from annrec.recommend.filters import parse_filter

        return json.dumps(parse_filter(filter), sort_keys=True, default=str)

    def _user_row(self, user_id) -> int:
        if self.embeddings is None:
            raise UnknownIdError("this index has no embeddings with user vectors: use similar items or a query "
                                 "vector instead")
        return self.embeddings.query_row_of(user_id)

    def seen_ids(self, user_row: int) -> np.ndarray:
        """External ids of the items excluded for the user in ``user_row`` (empty without a seen matrix)."""
        emb = self.embeddings
        if self.seen is None or emb is None:
            return np.empty(0, dtype=np.int64)
        return emb.ids[self.seen.indices[self.seen.indptr[user_row]:self.seen.indptr[user_row + 1]]]

    def _seen_deny_list(self, user_row: int):
        """The user's seen items as the index's resolved deny-list (:meth:`annrec.index.Index.deny_list`),
        kept per user while the index does not change, so a returning user's exclusion costs only the
        search; the ids themselves for an index without deny-lists (a sharded one). At most
        :data:`DENY_CACHE_BYTES` of allow-masks are kept (then the cache starts again)."""
        index = self.index
        cache = self.__dict__.get("_deny_cache")
        if cache is None:
            cache = self._deny_cache = {}
        dl = cache.get(user_row)
        if dl is not None and dl.valid_for(index):
            return dl
        ids = self.seen_ids(user_row)
        if not len(ids) or not hasattr(index, "deny_list"):
            return ids
        if dl is None and len(cache) >= max(64, DENY_CACHE_BYTES // (len(index._ext) + 1)):
            cache.clear()
        dl = cache[user_row] = index.deny_list(ids)
        return dl

    def _search(self, q: np.ndarray, k: int, denied, allowed, params, threads, include_metadata: bool,
                filter=None):
        """Checked ``k`` (the catalogue less the excluded items) and one index search per query row."""
        index = self.index
        filter_key = None
        if filter is not None:
            matching = self.filter_ids(filter)
            if allowed is not None:
                keep = {index.coerce_id(i) for i in allowed}
                matching = [i for i in list(matching) if i in keep]
            else:
                filter_key = self._filter_key(filter)
            allowed = matching
        limit = len(index)
        if filter_key is not None and (denied is None or not len(denied)):
            limit = self._filter_count(filter_key, allowed)
        elif allowed is not None:
            if denied is not None and len(denied):
                denied = getattr(denied, "ids", denied)  # a DenyList's ids
                gone = {index.coerce_id(i) for i in np.asarray(denied, dtype=object).tolist()}
                limit = index.count_live([i for i in allowed if index.coerce_id(i) not in gone])
            else:
                limit = index.count_live(allowed)
        elif denied is not None and len(denied) and k + len(denied) > limit:  # else k fits whatever is denied
            limit -= denied.n_denied if hasattr(denied, "n_denied") else index.count_live(denied)
        if filter is not None:  # a filter answers with the items that match, fewer than k if need be
            check_k(k)
            if limit <= 0:
                return [[] for _ in range(len(np.atleast_2d(q)))]
            k = min(k, limit)
        k = check_k(k, limit=max(limit, 0))
        extra = {"filter_key": filter_key} if filter_key is not None and getattr(index, "filter_views", False) else {}
        ids, scores = index.search(q, k, params=params, allowed_ids=allowed,
                                   denied_ids=denied if denied is not None and len(denied) else None,
                                   threads=threads, **extra)
        return [self.pack(ids[r], scores[r], include_metadata) for r in range(len(ids))]

    # ------------------------------------------------------------------ verbs
    def recommend(self, user_id, k: int = 10, *, exclude_seen: bool = True, filter=None,
                  params: dict[str, Any] | None = None, threads: int | None = None,
                  include_metadata: bool = True) -> list[Recommendation]:
        """Top-``k`` items for a known user: maximum inner product search with the user's vector, the
        items the user saw in training excluded (``exclude_seen``).

        Args:
            user_id: an external user id of the embeddings' ``query_ids``.
            k: results, ``1 <= k <=`` the catalogue less the excluded items.
            filter: a payload filter on item metadata (:mod:`annrec.recommend.filters`), e.g.
                ``{"must": [{"key": "genres", "match": {"value": "Comedy"}}]}``.
            params: per-call query parameters (``{"ef": 128}``, ``{"nprobe": 16}``, ``{"efSearch": 64}``).
            threads: search threads (``None``: the index's default).

        Raises:
            UnknownIdError: unknown user, or a model without user vectors.
            InputError: ``k`` out of range, bad ``params``.
        """
        row = self._user_row(user_id)
        denied = self._seen_deny_list(row) if exclude_seen else None
        q = self.embeddings.queries[row:row + 1]
        return self._search(q, k, denied, None, params, threads, include_metadata, filter)[0]

    def recommend_batch(self, user_ids, k: int = 10, *, exclude_seen: bool = True, filter=None,
                        params: dict[str, Any] | None = None, threads: int | None = None,
                        include_metadata: bool = True) -> list[list[Recommendation]]:
        """:meth:`recommend` for several users (one list per user, in order). Without exclusions the users
        are one batched search; with them one search per user (each has its own deny-list).

        Raises:
            UnknownIdError / InputError: as :meth:`recommend` (for the first offending user).
        """
        rows = [self._user_row(u) for u in user_ids]
        if not rows:
            raise InputError("no user ids given: pass at least one")
        if not exclude_seen or self.seen is None:
            q = np.ascontiguousarray(self.embeddings.queries[rows])
            return self._search(q, k, None, None, params, threads, include_metadata, filter)
        return [self.recommend(u, k, exclude_seen=True, filter=filter, params=params, threads=threads,
                               include_metadata=include_metadata) for u in user_ids]

    def similar_items(self, item_id, k: int = 10, *, filter=None, params: dict[str, Any] | None = None,
                      threads: int | None = None, include_metadata: bool = True) -> list[Recommendation]:
        """The ``k`` items nearest to ``item_id`` under the index's metric, the item itself excluded.

        The query is the item's vector in the index (after upserts, the newest one), else its vector in
        the embeddings.

        Raises:
            UnknownIdError: unknown item. InputError: ``k`` out of range, bad ``params``.
        """
        if item_id in self.index:
            iid = self.index.coerce_id(item_id)
            q = self.index.get_vector(iid)[None, :]
        elif self.embeddings is not None:
            row = self.embeddings.row_of(item_id)
            iid = self.embeddings.ids[row].item() if hasattr(self.embeddings.ids[row], "item") \
                else self.embeddings.ids[row]
            q = self.embeddings.vectors[row:row + 1]
        else:
            self.index.get_vector(item_id)  # raises UnknownIdError
            raise AssertionError("unreachable")
        return self._search(q, k, [iid], None, params, threads, include_metadata, filter)[0]

    def recommend_next(self, item_ids, k: int = 10, *, timestamps=None, now: int | None = None,
                       exclude_input: bool = True, filter=None, params: dict[str, Any] | None = None,
                       threads: int | None = None, include_metadata: bool = True,
                       ) -> tuple[list[Recommendation], list[str]]:
        """Top-``k`` next items after a time-ordered sequence (a sequence model's encoder).

        Args:
            item_ids: external item ids, oldest first. timestamps: Unix seconds per item (optional).
            now: the reference time of the recency feature (default: the last timestamp).
            exclude_input: leave the sequence's own items out (the next *new* item, the default).

        Returns:
            ``(recommendations, warnings)``; the score is the model's logit ``h·w_i + b_i``.

        Raises:
            UnknownIdError: no sequence encoder, or every item unknown.
            InputError: empty sequence, timestamps out of order or in the future, ``k`` out of range.
        """
        enc = self._need_encoder("sequence")
        vec, warnings = encode_with(enc, list(item_ids), timestamps, now)
        denied = None
        if exclude_input:
            rows = enc.rows(list(item_ids))[0]
            denied = np.unique(self.embeddings.ids[rows]) if len(rows) else None
        return self._search(vec, k, denied, None, params, threads, include_metadata, filter)[0], warnings

    def search_text(self, query: str, k: int = 10, *, allowed_ids=None, denied_ids=None, filter=None,
                    params: dict[str, Any] | None = None, threads: int | None = None,
                    include_metadata: bool = True) -> tuple[list[Recommendation], list[str]]:
        """Items nearest to a text query (a text model's sentence-transformers encoder), cosine similarity.

        Returns:
            ``(hits, warnings)``.

        Raises:
            UnknownIdError: the model has no text encoder. InputError: empty query, ``k`` out of range.
        """
        enc = self._need_encoder("text")
        vec, warnings = encode_with(enc, [query])
        return self._search(vec, k, denied_ids, allowed_ids, params, threads, include_metadata, filter)[0], warnings

    def search(self, vectors, k: int = 10, *, allowed_ids=None, denied_ids=None, filter=None,
               params: dict[str, Any] | None = None, threads: int | None = None,
               include_metadata: bool = True) -> list[list[Recommendation]]:
        """Nearest items of raw query vectors, float32 ``(nq, dim)`` or ``(dim,)``: one hit list per query.

        Raises:
            InputError: wrong dimension, NaN/Inf, ``k`` out of range, bad ``params``.
        """
        return self._search(vectors, k, denied_ids, allowed_ids, params, threads, include_metadata, filter)

    def _need_encoder(self, kind: str):
        if self.encoder is None:
            what = "a sequence model (`annrec train sequence`)" if kind == "sequence" else \
                "a text model (`annrec train text`)"
            raise UnknownIdError(f"this model has no {kind} encoder: serve the Embeddings of {what}")
        return self.encoder
