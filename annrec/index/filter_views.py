"""Cached sub-indexes for payload filters that recur: a filtered HNSW search at the cost of an unfiltered one.

A payload filter that keeps a fraction ``f`` of an HNSW graph makes the graph search visit ~``1/f`` times
more candidates, and hnswlib checks each one through a Python callback: at ``f`` = 10 % on Fashion-MNIST
that is ~50x slower than the unfiltered search. Vector databases answer recurring filters from indexes
built per filter value instead (Qdrant builds extra HNSW links per indexed payload value; Milvus and
Weaviate partition by a key). annrec keeps, per recurring filter (the caller names it with ``filter_key``:
the canonical JSON of the filter), a **view**: an index of the same backend and parameters over the
vectors the filter allowed when the view was built, whose ids are the parent's labels.

A search through a view, like a search of a sealed segment plus its growing segment (Milvus):

* the view is searched for ``2k`` neighbours; labels the filter no longer allows (deleted, or whose
  metadata changed) are dropped;
* labels the filter allows now but the view lacks (written since the build) are searched exactly;
* the two lists are merged by score. A row left with fewer than ``k`` goes back to the caller, which
  runs the filtered graph search.

A view is built in a background thread the second time a filter is used (the first searches take the
filtered graph path), and rebuilt in the background once the labels written since its build pass
``REBUILD_FRACTION`` of its size or :data:`MAX_DELTA`. At most :data:`MAX_VIEWS` views are kept
(least recently used first out), holding at most as many vectors as the parent.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from annrec.index.base import Index

log = logging.getLogger("annrec.index")

BUILD_AFTER_USES = 2      # a filter's second search starts its view's build
MAX_VIEWS = 8
MAX_DELTA = 4096          # labels searched exactly beside a view before a rebuild is forced
REBUILD_FRACTION = 0.1    # labels written since the build, as a fraction of the view, that start a rebuild


@dataclass
class View:
    """An index over the labels a filter allowed at build time (its ids are those labels)."""

    index: Index
    mask: np.ndarray   # bool (n_labels at build,) the labels in the view
    size: int
    delta: tuple | None = None  # (the allow-mask it was computed for, labels allowed there but not in the view, count)


class FilterViews:
    """The views of one parent index (thread-safe; builds run on daemon threads)."""

    def __init__(self) -> None:
        self._views: OrderedDict[str, View] = OrderedDict()
        self._uses: dict[str, int] = {}
        self._building: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def search(self, parent: Index, key: str, q: np.ndarray, k: int, mask: np.ndarray, params: dict | None,
               threads: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Top-``k`` labels and scores among the labels ``mask`` (bool, one per parent label) allows, through
        the view of ``key``; ``None`` when there is no usable view yet (the caller searches the graph)."""
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
            else:
                self._uses[key] = self._uses.get(key, 0) + 1
                if self._uses[key] >= BUILD_AFTER_USES:
                    self._start_build(parent, key, mask)
                return None
        memo = view.delta
        if memo is None or memo[0] is not mask:  # the labels allowed now that the view lacks, once per mask
            new = mask.copy()
            new[:len(view.mask)] &= ~view.mask
            extra = np.flatnonzero(new)
            memo = view.delta = (mask, extra, int(np.count_nonzero(mask)))
        _, extra, n_allowed = memo
        n_new = len(extra)
        if n_new > max(REBUILD_FRACTION * view.size, 64) or n_new > MAX_DELTA:
            with self._lock:
                self._start_build(parent, key, mask)
            if n_new > MAX_DELTA:
                return None
        kk = min(view.size, 2 * k)
        labels, scores = view.index.search(q, kk, params=params, threads=threads)
        labels = labels.astype(np.int64, copy=False)
        good = (labels >= 0) & mask[np.maximum(labels, 0)]
        larger_is_better = parent.metric != "l2"
        if n_new:
            el, es = parent._exact(q, min(k, n_new), extra)
            labels = np.concatenate([labels, el], axis=1)
            scores = np.concatenate([scores, es], axis=1)
            good = np.concatenate([good, np.ones_like(el, dtype=bool)], axis=1)
        if not (good.sum(axis=1) >= min(k, n_allowed)).all():
            return None
        key_scores = np.where(good, -scores if larger_is_better else scores, np.inf)
        order = np.argsort(key_scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(labels, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def _start_build(self, parent: Index, key: str, mask: np.ndarray) -> None:
        """Start a background build of ``key``'s view over ``mask`` (caller holds the lock)."""
        if key in self._building:
            return
        labels = np.flatnonzero(mask)
        vectors = parent._vectors[labels].copy()  # rows never change once written: safe beside the writers
        cls, metric = type(parent), parent.metric
        params = {k: v for k, v in parent.params.items() if k in getattr(parent, "view_params", ())}
        n_labels = len(mask)

        def build() -> None:
            try:
                index = cls.build(vectors, labels, metric, **params)
                view_mask = np.zeros(n_labels, dtype=bool)
                view_mask[labels] = True
                with self._lock:
                    self._views[key] = View(index, view_mask, len(labels))
                    self._views.move_to_end(key)
                    self._evict(len(parent._ext))
            except Exception as e:  # noqa: BLE001 - a view is an optimisation: searches keep the graph path
                log.warning("building the filter view %s failed: %s", key[:80], e)
            finally:
                with self._lock:
                    self._building.pop(key, None)

        t = threading.Thread(target=build, name="annrec-filter-view", daemon=True)
        self._building[key] = t
        t.start()

    def _evict(self, budget: int) -> None:
        while len(self._views) > MAX_VIEWS or (len(self._views) > 1 and
                                               sum(v.size for v in self._views.values()) > budget):
            self._views.popitem(last=False)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the builds in progress (tests and benchmarks)."""
        with self._lock:
            threads = list(self._building.values())
        for t in threads:
            t.join(timeout)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"views": len(self._views), "vectors": sum(v.size for v in self._views.values()),
                    "building": len(self._building)}
