"""hnswlib backend: Hierarchical Navigable Small World graphs (Malkov & Yashunin, 2018).

Build parameters follow hnswlib's names and defaults: ``M`` (graph degree, default 16),
``ef_construction`` (efConstruction, default 200), ``random_seed`` (default 100); the query-time
``ef`` (efSearch, default 50) is at least ``k`` at query time. ``ip`` and ``cosine`` (on normalised
vectors) use hnswlib's ``ip`` space, whose distance ``1 - <q, x>`` is turned back into a similarity.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from annrec._validate import check_int
from annrec.errors import InputError
from annrec.index.base import Index
from annrec.index.filtered import pad_results

_BUILD_PARAMS = {"M": 16, "ef_construction": 200, "random_seed": 100, "ef": 50}


#: upper bound of the widened candidate list of a filtered search
MAX_FILTER_EF = 2048


def graph_params(library: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """An HNSW library's build parameters: ``defaults`` overridden by ``params``, with ``M``,
    ``ef_construction`` and ``ef`` positive integers.

    Raises:
        InputError: a parameter ``defaults`` does not name (the message lists them), a non-positive value.
    """
    unknown = set(params) - set(defaults)
    if unknown:
        raise InputError(f"unknown {library} parameter(s) {sorted(unknown)}: use {', '.join(defaults)}")
    merged = {**defaults, **params}
    for name in ("M", "ef_construction", "ef"):
        check_int(merged[name], f"{library} parameter {name}")
    return merged


class HnswIndex(Index):
    """An hnswlib index behind the :class:`~annrec.index.base.Index` interface.

    Params: ``M``, ``ef_construction``, ``random_seed``, ``ef`` (default query efSearch).

    Raises:
        InputError: an unknown parameter, or a non-positive ``M`` / ``ef_construction`` / ``ef``.
    """

    backend = "hnswlib"
    file_name = "index.hnsw"
    query_param_names = ("ef",)
    native_deletes = True
    filter_views = True
    view_params = ("M", "ef_construction", "ef", "random_seed")

    def __init__(self, dim: int, metric: str, **params: Any) -> None:
        super().__init__(dim, metric, **graph_params("hnswlib", params, _BUILD_PARAMS))
        self._space = "l2" if metric == "l2" else "ip"
        self._index: hnswlib.Index | None = None
        self._ef_lock = threading.Lock()

    def _new(self, capacity: int) -> hnswlib.Index:
        idx = hnswlib.Index(space=self._space, dim=self.dim)
        idx.init_index(max_elements=max(capacity, 1), M=int(self.params["M"]),
                       ef_construction=int(self.params["ef_construction"]),
                       random_seed=int(self.params["random_seed"]))
        idx.set_ef(int(self.params["ef"]))
        return idx

    def _backend_create(self, x: np.ndarray) -> None:
        self._index = self._new(len(x))

    def _backend_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        need = int(labels[-1]) + 1
        cap = self._index.get_max_elements()
        if need > cap:
            self._index.resize_index(max(need, int(cap * 1.5)))
        self._index.add_items(x, labels)

    def _backend_reserve(self, n_labels: int, rw=None, vectors: bool = True) -> None:
        if self._index is not None and n_labels > self._index.get_max_elements():
            if rw is None:
                self._index.resize_index(n_labels)
            else:
                with rw.write():  # resize_index reallocates the graph under the searches' feet
                    self._index.resize_index(n_labels)

    def _backend_mark_deleted(self, labels: np.ndarray) -> None:
        for lab in labels.tolist():
            self._index.mark_deleted(int(lab))

    def _backend_set_query_params(self, params: dict[str, Any]) -> None:
        if "ef" in params:
            self._index.set_ef(int(params["ef"]))

    def _backend_search(self, q, k, params, mask, threads):
        if mask is None and params is None:  # hot path: positional call, no filter, no ef change
            try:
                labels, dist = self._index.knn_query(q, k, -1 if threads is None else threads)
            except RuntimeError:
                labels, dist = self._query(q, k, -1 if threads is None else threads, None)
            if self._space == "ip":
                np.subtract(1.0, dist, out=dist)
            return labels.view(np.int64), dist
        filt = None
        ef = params.get("ef") if params else None
        if mask is not None:
            got = self._overfetch_allowed(q, k, params, mask, threads)
            if got is not None:
                return got
            filt = mask.__getitem__  # hnswlib calls it with each candidate label
            # a filter that keeps a fraction f of the graph leaves ~f of each candidate list useful: widen the
            # list by 1/f (capped) so a filtered search keeps the recall of an unfiltered one at this ef
            frac = np.count_nonzero(mask) / max(len(self._label), 1)
            base = int(ef if ef is not None else self.params["ef"])
            if frac < 1.0:
                ef = min(max(base, int(base / max(frac, 1e-3))), MAX_FILTER_EF, max(len(self._label), base))
        nthreads = -1 if threads is None else threads
        if ef is not None and int(ef) != self._index.ef:
            with self._ef_lock:
                self._index.set_ef(int(ef))
                try:
                    labels, dist = self._query(q, k, nthreads, filt)
                finally:
                    self._index.set_ef(int(self.params["ef"]))
        else:
            labels, dist = self._query(q, k, nthreads, filt)
        labels = labels.view(np.int64)  # hnswlib returns uint64 labels; ours are < 2**63
        if self._space == "ip":
            np.subtract(1.0, dist, out=dist)
        return labels, dist

    def _overfetch_allowed(self, q, k, params, mask, threads):
        """An allow-mask keeping a fraction ``f >= 0.05`` of the graph: ask for ``2k / f`` unfiltered neighbours
        (C++ only) and keep the allowed ones; ``None`` when a row keeps fewer than ``k`` (then hnswlib's filter)."""
        frac = np.count_nonzero(mask) / max(len(self._label), 1)
        if frac < 0.05:
            return None
        kk = min(len(self._label), max(k, int(np.ceil(2 * k / frac))))
        if kk > MAX_FILTER_EF:
            return None
        labels, dist = self._backend_search(q, kk, params, None, threads)
        good = mask[labels]
        if not (good.sum(axis=1) >= k).all():
            return None
        order = np.argsort(~good, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(labels, order, axis=1), np.take_along_axis(dist, order, axis=1)

    def _backend_search_denied(self, q, k, params, denied, threads):
        """Over-fetch ``k + denied.n_denied`` unfiltered neighbours and drop the denied labels (vectorised).

        hnswlib calls a Python filter once per visited candidate; the unfiltered search with a larger ``k``
        stays in C++ (``bench/seen_exclusion.py`` measures both). Rows left with fewer than ``k`` results
        fall back to the filter.
        """
        kk = min(k + denied.n_denied, len(self._label))
        labels, dist = self._backend_search(q, kk, params, None, threads)
        mask = denied.mask
        good = mask[labels]
        if len(q) == 1:
            keep = np.flatnonzero(good[0])[:k]
            if len(keep) == k:
                return labels[:, keep], dist[:, keep]
        elif (good.sum(axis=1) >= k).all():
            order = np.argsort(~good, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(labels, order, axis=1), np.take_along_axis(dist, order, axis=1)
        return self._backend_search(q, k, params, mask[:-1], threads)

    def _query(self, q, k, nthreads, filt):
        try:
            return self._index.knn_query(q, k=k, num_threads=nthreads, filter=filt)
        except RuntimeError:
            # hnswlib cannot fill k results (heavy filtering / many deletions): exact search instead.
            allowed = np.flatnonzero(~self._deleted if filt is None else filt.__self__)
            labels, scores = pad_results(*self._exact(q, min(k, len(allowed)), allowed), k)
            dist = 1.0 - scores if self._space == "ip" else scores
            return labels, dist.astype(np.float32)

    def _backend_save(self, file: Path) -> None:
        self._index.save_index(str(file))

    def _backend_load(self, file: Path, n_labels: int) -> None:
        if not file.exists():
            raise FileNotFoundError(2, "missing", str(file))
        idx = hnswlib.Index(space=self._space, dim=self.dim)
        idx.load_index(str(file), max_elements=max(n_labels, 1))
        idx.set_ef(int(self.params["ef"]))
        self._index = idx

    def _backend_verify(self, file: Path) -> None:
        from annrec.errors import ArtifactError

        n, dim = int(self._index.get_current_count()), int(self._index.dim)
        if n != len(self._ext) or dim != self.dim or self._index.space != self._space:
            raise ArtifactError(f"{file} holds {n} vectors of dim {dim} in space {self._index.space!r} but the folder "
                                f"has {len(self._ext)} ids of dim {self.dim} (space {self._space!r}): rebuild the "
                                f"index with `annrec index build`")

    def memory_bytes(self) -> int:
        """hnswlib's own estimate: the size of its serialised index (data + link lists)."""
        return int(self._index.index_file_size())

    @property
    def raw(self) -> hnswlib.Index:
        """The underlying ``hnswlib.Index`` (labels are internal labels, not external ids)."""
        return self._index
