"""Filtered search for every backend: allow-lists (payload filters), deny-lists (seen items) and the exact
fallback, mixed into :class:`annrec.index.Index`.

An allow-list becomes a boolean mask over the index's labels; one small enough (:data:`EXACT_FILTER_BUDGET`)
is answered by exact search over its stored vectors, a larger one by the backend's filtered search (a FAISS
``IDSelectorBitmap``, an hnswlib filter or a cached filter view, :mod:`annrec.index.filter_views`).

A deny-list (the items a user has seen, the query item) is resolved once into a :class:`DenyList` — the
denied labels and the allow-mask of one index version — with :meth:`FilteredSearch.deny_list`; a caller
that searches with the same deny-list again (:class:`annrec.recommend.Recommender` keeps one per user)
passes the :class:`DenyList` instead of the ids and pays only the search. Both FAISS (``SearchParameters``
with an ``IDSelector``) and hnswlib (``filter=``) build the selector per request; here it outlives the
request while the index does not change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Allow-lists whose exact scan costs no more than EXACT_FILTER_BUDGET multiply-adds (allowed vectors x dim:
# 2,048 Fashion-MNIST vectors, ~25,000 of a 65-d MF model) are answered by exact search over their stored
# vectors: cheaper and exact, where graph/IVF search with a selective filter both slows down and loses
# recall (the rule Qdrant and Weaviate apply to small filtered sets).
EXACT_FILTER_BUDGET = 2048 * 784
EXACT_FILTER_THRESHOLD = 2048  # allow-lists at least this small are always answered exactly

# A deny-list search first asks for up to k + DENY_OVERFETCH * k (at least k + 32) unfiltered neighbours
# and drops the denied ones (FilteredSearch._search_denied); bench/seen_exclusion.py measures the choice.
DENY_OVERFETCH = 3


#: an allow-list search over-fetches at most this many unfiltered neighbours before it goes exact
MAX_FILTER_FETCH = 4096


def overfetch_allowed(index, q: np.ndarray, k: int, mask: np.ndarray, fetch, n_max: int,
                      limit: int = MAX_FILTER_FETCH) -> tuple[np.ndarray, np.ndarray]:
    """Allow-list search for a library without a filter predicate (usearch, PyNNDescent, ScaNN).

    ``fetch(kk)`` returns ``(labels, scores)`` of shape ``(nq, kk)`` (label -1 for an unfilled slot) for the
    ``float32 (nq, dim)`` queries ``q``; ``mask`` is the ``bool (n_labels,)`` allow-mask. Fetches
    ``kk = min(n_max, limit, max(2k, 2k / allowed fraction))`` unfiltered neighbours and keeps the first ``k``
    allowed ones of each row, in order; when some row has fewer than ``k`` of them (or ``kk < 2k``), answers
    by exact search over the allowed labels instead (``index._exact``), padded to ``k`` by :func:`pad_results`.
    Returns ``(labels int64 (nq, k), scores float32 (nq, k))``.
    """
    frac = int(np.count_nonzero(mask)) / max(len(index._label), 1)
    kk = min(n_max, limit, max(2 * k, int(2 * k / max(frac, 1e-6))))
    if kk >= 2 * k:
        labels, scores = fetch(kk)
        good = np.append(mask, False)[labels]  # label -1 -> the extra False slot
        if (good.sum(axis=1) >= k).all():
            order = np.argsort(~good, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(labels, order, axis=1), np.take_along_axis(scores, order, axis=1)
    allowed = np.flatnonzero(mask)  # too few allowed neighbours among the fetched ones: exact
    return pad_results(*index._exact(q, min(k, len(allowed)), allowed), k)


def pad_results(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels int64 ``(nq, got)`` and scores float32 ``(nq, got)`` widened to ``k`` columns with the "no result"
    marks, label ``-1`` and score NaN (unchanged when ``got >= k``)."""
    nq, got = labels.shape
    if got >= k:
        return labels, scores
    return (np.concatenate([labels, np.full((nq, k - got), -1, dtype=np.int64)], axis=1),
            np.concatenate([scores, np.full((nq, k - got), np.nan, dtype=np.float32)], axis=1))


class DenyList:
    """A deny-list resolved against one version of one index (:meth:`FilteredSearch.deny_list`).

    Attributes:
        ids: the external ids as given.
        labels: int64 ``(n,)`` their live labels (``-1`` for unknown or deleted ids).
        mask: bool ``(n_labels + 1,)`` the allow-mask: live and not denied; the extra last slot is ``False``
            so that ``mask[labels]`` is ``False`` for the ``-1`` of an unfilled result.
        n_denied: live labels denied; ``n_allowed``: live labels allowed.
        cache: the backend's objects built over ``mask`` (FAISS ``SearchParameters`` with a bitmap selector).
        transient: resolved inside one search from plain ids (used once: backends build nothing to keep).
    """

    __slots__ = ("ids", "labels", "mask", "n_denied", "n_allowed", "cache", "transient", "_owner", "_generation")

    def __init__(self, index, ids) -> None:
        self.ids = ids
        labels = index.labels_of(ids)
        self.labels = labels
        self._owner = id(index)
        self._generation = index._generation
        n = len(index._ext)
        mask = np.empty(n + 1, dtype=bool)
        np.logical_not(index._deleted, out=mask[:-1])
        mask[-1] = False  # also where unknown ids (-1) land
        mask[labels] = False
        self.mask = mask
        self.n_allowed = int(np.count_nonzero(mask))
        self.n_denied = len(index._label) - self.n_allowed
        self.cache: dict[Any, Any] = {}
        self.transient = False

    def __len__(self) -> int:
        return len(self.ids)

    def valid_for(self, index) -> bool:
        """True while ``index`` is the index this was resolved for and has not changed since."""
        return self._owner == id(index) and self._generation == index._generation


class FilteredSearch:
    """The filtered part of :meth:`Index.search` (allow-lists, deny-lists, exact fallback); a mixin of
    :class:`annrec.index.Index`, whose id map (``_ext``, ``_label``, ``_deleted``, ``labels_of``) it uses."""

    def deny_list(self, ids) -> DenyList:
        """Resolve ``ids`` (external ids: an int64 ``(n,)`` array, a list, or a :class:`DenyList` to resolve
        anew; unknown and deleted ids are ignored) into a :class:`DenyList` for ``search(..., denied_ids=...)``:
        its labels int64 ``(n,)`` and allow-mask bool ``(n_labels + 1,)``, ``O(n_labels)`` bytes and time to
        build, valid until the index changes (a search then resolves it again). Raises nothing for odd ids."""
        return DenyList(self, ids if not isinstance(ids, DenyList) else ids.ids)

    @property
    def views(self):
        """The cached filter sub-indexes (:class:`~annrec.index.filter_views.FilterViews`), created on first use."""
        v = self.__dict__.get("_views")
        if v is None:
            from annrec.index.filter_views import FilterViews

            v = self.__dict__.setdefault("_views", FilterViews())
        return v

    def _search_denied(self, q: np.ndarray, k: int, params, denied_ids, threads):
        """Search checked queries with a deny-list (seen items, the query item): ids or a :class:`DenyList`.

        First (where :meth:`_overfetch_denied`) an unfiltered search for a few more neighbours than ``k``
        (:data:`DENY_OVERFETCH`) with the denied labels dropped afterwards: for the ~97 % of ml-latest-small
        users whose top-10 unseen items lie in their unfiltered top 40 this costs little more than the plain
        search, and its answer is the filtered search's (the same lists or graph are visited). Queries it
        leaves short of ``k`` go to the backend's filtered search (:meth:`_backend_search_denied`); exact
        search when fewer than ``k`` items remain.
        """
        dl = denied_ids
        if type(dl) is not DenyList or dl._owner != id(self) or dl._generation != self._generation:
            dl = self.deny_list(denied_ids)
            dl.transient = type(denied_ids) is not DenyList
        if not dl.n_denied and not (self._n_deleted and not self.native_deletes):
            labels, scores = self._backend_search(q, k, params, None, threads)
            return self._ext_padded[labels], scores
        mask = dl.mask
        if dl.n_allowed < k:
            if dl.n_allowed == 0:
                return self._empty(len(q), k)
            labels, scores = self._exact(q, dl.n_allowed, np.flatnonzero(mask[:-1]))
            return self._finish(labels, scores, k)
        if self._overfetch_denied():
            kk = min(len(self._label), k + min(dl.n_denied, max(DENY_OVERFETCH * k, 32)))
            labels, scores = self._backend_search(q, kk, params, None, threads)
            if len(q) == 1:  # the served case: boolean selection, no index arrays
                row = labels[0]
                good = mask[row]
                kept = row[good]
                if len(kept) >= k:
                    return self._ext_padded[kept[:k]][None, :], scores[0][good][:k][None, :]
                good = good[None, :]
            else:
                good = mask[labels]
            if len(q) > 1 and (good.sum(axis=1) >= k).all():
                order = np.argsort(~good, axis=1, kind="stable")[:, :k]
                return (self._ext_padded[np.take_along_axis(labels, order, axis=1)],
                        np.take_along_axis(scores, order, axis=1))
        labels, scores = self._backend_search_denied(q, k, params, dl, threads)
        return self._finish(labels, scores, k)

    def _search_allowed(self, q: np.ndarray, k: int, params, allowed_ids, denied_ids, threads,
                        filter_key: str | None):
        """Search checked queries with an allow-list (and maybe a deny-list), or over an index with deleted
        labels the backend still returns: the mask (cached per named filter and index version), then exact
        search for small allow-lists, a filter view, or the backend's filtered search."""
        named = filter_key is not None and denied_ids is None
        if isinstance(denied_ids, DenyList):
            denied_ids = denied_ids.ids
        if named:  # a named filter: its mask, once per index version
            cached = self.__dict__.get("_mask_cache")
            if cached is None or cached[0] != self._generation:
                cached = self._mask_cache = (self._generation, {})
            hit = cached[1].get(filter_key)
            if hit is None:
                m = self._allow_mask(allowed_ids, None)
                hit = cached[1][filter_key] = (m, int(m.sum()))
                if len(cached[1]) > 64:
                    cached[1].clear()
            mask, n_allowed = hit
        else:
            mask = self._allow_mask(allowed_ids, denied_ids)
            n_allowed = int(mask.sum())
        if n_allowed == 0:
            return self._empty(len(q), k)
        if allowed_ids is not None and (n_allowed <= EXACT_FILTER_THRESHOLD
                                        or n_allowed * self.dim <= EXACT_FILTER_BUDGET):
            if named:  # the allowed vectors gathered once per filter and index version
                sub = self._mask_cache[1].setdefault(filter_key + "\x00exact", None)
                if sub is None:
                    lab = np.flatnonzero(mask)
                    xs = np.ascontiguousarray(self._vectors[lab])
                    sub = self._mask_cache[1][filter_key + "\x00exact"] = (lab, (xs, np.einsum("ij,ij->i", xs, xs)))
                labels, scores = self._exact(q, min(k, n_allowed), sub[0], sub[1])
            else:
                labels, scores = self._exact(q, min(k, n_allowed), np.flatnonzero(mask))
            return self._finish(labels, scores, k)
        if n_allowed < k:
            labels, scores = self._exact(q, n_allowed, np.flatnonzero(mask))
            return self._finish(labels, scores, k)
        if filter_key is not None and allowed_ids is not None and self.filter_views:
            got = self.views.search(self, filter_key, q, k, mask, params, threads)
            if got is not None:
                return self._finish(*got, k)
        labels, scores = self._backend_search(q, k, params, mask, threads)
        return self._ext_padded[labels], scores

    def _allow_mask(self, allowed_ids, denied_ids) -> np.ndarray:
        if allowed_ids is not None:
            mask = np.zeros(len(self._ext), dtype=bool)
            labs = self.labels_of(allowed_ids)
            mask[labs[labs >= 0]] = True
        else:
            mask = ~self._deleted
        if denied_ids is not None:
            labs = self.labels_of(denied_ids)
            mask[labs[labs >= 0]] = False
        if allowed_ids is not None and self._n_deleted:
            mask &= ~self._deleted
        return mask

    def _exact(self, q: np.ndarray, k: int, labels: np.ndarray, subset: tuple | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over a subset of labels, with the stored vectors (``subset``: their gathered
        ``(vectors, squared norms)``, cached by the caller for a recurring filter)."""
        x, xx = subset if subset is not None else (self._vectors[labels], None)
        if self.metric == "l2":
            if xx is None:
                xx = np.einsum("ij,ij->i", x, x)
            d = (q * q).sum(1)[:, None] - 2 * q @ x.T + xx[None, :]
        else:
            d = -(q @ x.T)
        if k < d.shape[1] // 4:  # partial selection first: O(n) instead of a full sort of every row
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
            sub = np.take_along_axis(d, part, axis=1)
            order = np.take_along_axis(part, np.argsort(sub, axis=1, kind="stable"), axis=1)
        else:
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(d, order, axis=1).astype(np.float32)
        return labels[order], (top if self.metric == "l2" else -top)

    def _finish(self, labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels, scores = pad_results(labels, scores, k)
        return self._ext_padded[labels], scores

    def _empty(self, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._finish(np.empty((nq, 0), dtype=np.int64), np.empty((nq, 0), dtype=np.float32), k)

    # -- backend hooks
    def _overfetch_denied(self) -> bool:
        """Whether a deny-list search tries the unfiltered over-fetch first (see :meth:`_search_denied`);
        backends whose filtered search is as cheap say no."""
        return True

    def _backend_search_denied(self, q: np.ndarray, k: int, params: dict[str, Any] | None, denied: DenyList,
                               threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Search with the labels of ``denied`` excluded; its allow-mask allows at least ``k`` labels.

        Default: the allow-mask handed to :meth:`_backend_search` (a FAISS ``IDSelectorBitmap``). Backends
        whose filters are costly override it.
        """
        return self._backend_search(q, k, params, denied.mask[:-1], threads)
