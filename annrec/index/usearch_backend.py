"""usearch backend: USearch's HNSW graphs (Unum, https://github.com/unum-cloud/usearch).

Build parameters take annrec's HNSW names for USearch's own: ``M`` (``connectivity``, default 16),
``ef_construction`` (``expansion_add``, default 128) and the query-time ``ef`` (``expansion_search``, default
64) — USearch's defaults; ``dtype`` stores the vectors as ``f32`` (default), ``f16`` or ``i8`` (USearch's
scalar quantisation). ``ip`` and ``cosine`` (on normalised vectors) use USearch's ``ip`` metric, whose
distance ``1 - <q, x>`` is turned back into a similarity; ``l2`` uses ``l2sq`` (squared distances, as FAISS).
Deletes are USearch's own (``remove``). USearch's Python search has no filter predicate, so an allow-list
search over-fetches unfiltered neighbours and keeps the allowed ones, and falls back to exact search over
the allowed labels when too few remain.

``usearch`` is an optional dependency (the ``bench`` extra): ``pip install usearch``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from annrec.errors import InputError
from annrec.index.base import Index
from annrec.index.filtered import overfetch_allowed, pad_results
from annrec.index.hnsw_backend import graph_params

_BUILD_PARAMS = {"M": 16, "ef_construction": 128, "ef": 64, "dtype": "f32"}
_DTYPES = ("f32", "f16", "i8")
#: an allow-list search over-fetches at most this many neighbours before it goes exact
MAX_FILTER_FETCH = 4096


def _usearch():
    import faiss  # noqa: F401  (loaded before usearch: the other order crashes FAISS's index_factory, faiss 1.x)

    try:
        from usearch.index import Index as UIndex
    except ImportError:
        raise InputError("the usearch backend needs the usearch package: pip install usearch (or the bench "
                         "extra: pip install -e \".[bench]\")") from None
    return UIndex


class UsearchIndex(Index):
    """A USearch index behind the :class:`~annrec.index.base.Index` interface.

    Params: ``M``, ``ef_construction``, ``ef`` (default query expansion), ``dtype`` (``f32``, ``f16``, ``i8``).

    Raises:
        InputError: an unknown parameter, a non-positive ``M`` / ``ef_construction`` / ``ef``, an unknown
            ``dtype``, or usearch not installed.
    """

    backend = "usearch"
    file_name = "index.usearch"
    query_param_names = ("ef",)
    native_deletes = True

    def __init__(self, dim: int, metric: str, **params: Any) -> None:
        merged = graph_params("usearch", params, _BUILD_PARAMS)
        if merged["dtype"] not in _DTYPES:
            raise InputError(f"usearch parameter dtype must be one of {', '.join(_DTYPES)}; got {merged['dtype']!r}")
        super().__init__(dim, metric, **merged)
        self._space = "l2sq" if metric == "l2" else "ip"
        self._index = None
        self._ef_lock = threading.Lock()

    def _new(self):
        return _usearch()(ndim=self.dim, metric=self._space, dtype=self.params["dtype"],
                          connectivity=int(self.params["M"]), expansion_add=int(self.params["ef_construction"]),
                          expansion_search=int(self.params["ef"]))

    def _backend_create(self, x: np.ndarray) -> None:
        self._index = self._new()
        self._grow(len(x))

    def _grow(self, n: int) -> None:
        """Reserve room for ``n`` vectors (USearch's ``add`` grows the index itself, a step at a time)."""
        compiled = getattr(self._index, "_compiled", None)
        if compiled is not None and hasattr(compiled, "reserve") and n > self._index.capacity:
            compiled.reserve(n)

    def _backend_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        self._index.add(labels.astype(np.uint64), x, threads=0)

    def _backend_reserve(self, n_labels: int, rw=None, vectors: bool = True) -> None:
        if self._index is not None and n_labels > self._index.capacity:
            if rw is None:
                self._grow(n_labels)
            else:
                with rw.write():  # reserving reallocates under the searches' feet
                    self._grow(n_labels)

    def _backend_mark_deleted(self, labels: np.ndarray) -> None:
        self._index.remove(labels.astype(np.uint64))

    def _backend_set_query_params(self, params: dict[str, Any]) -> None:
        if "ef" in params:
            self._index.expansion_search = int(params["ef"])

    # -- search
    def _query(self, q: np.ndarray, k: int, ef: int | None, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        """USearch's top-``k`` as ``(labels int64 (nq, k), scores float32 (nq, k))``, unfilled slots ``-1`` / NaN."""
        nt = 0 if threads is None else int(threads)
        if ef is not None and int(ef) != self._index.expansion_search:
            with self._ef_lock:
                self._index.expansion_search = int(ef)
                try:
                    res = self._index.search(q, k, threads=nt)
                finally:
                    self._index.expansion_search = int(self.params["ef"])
        else:
            res = self._index.search(q, k, threads=nt)
        keys = np.atleast_2d(res.keys).astype(np.int64)
        dist = np.array(np.atleast_2d(res.distances), dtype=np.float32)
        counts = np.atleast_1d(res.counts) if hasattr(res, "counts") else np.array([len(np.atleast_1d(res.keys))])
        keys, dist = pad_results(keys, dist, k)
        missing = np.arange(k)[None, :] >= counts[:, None]
        keys[missing] = -1
        dist[missing] = np.nan
        if self._space == "ip":
            np.subtract(1.0, dist, out=dist)
        return keys, dist

    def _backend_search(self, q, k, params, mask, threads):
        ef = params.get("ef") if params else None
        if mask is None:
            return self._query(q, k, ef, threads)
        base = int(ef if ef is not None else self.params["ef"])
        return overfetch_allowed(self, q, k, mask, lambda kk: self._query(q, kk, max(base, kk), threads),
                                 len(self._label), MAX_FILTER_FETCH)

    # -- persistence
    def _backend_save(self, file: Path) -> None:
        self._index.save(str(file))

    def _backend_load(self, file: Path, n_labels: int) -> None:
        if not file.exists():
            raise FileNotFoundError(2, "missing", str(file))
        idx = self._new()
        idx.load(str(file))
        self._index = idx

    def _backend_verify(self, file: Path) -> None:
        from annrec.errors import ArtifactError

        n, dim = len(self._index), int(self._index.ndim)  # USearch counts live vectors (removed ones not)
        live = len(self._ext) - self._n_deleted
        if n != live or dim != self.dim:
            raise ArtifactError(f"{file} holds {n} vectors of dim {dim} but the folder has {live} live ids of dim "
                                f"{self.dim}: rebuild the index with `annrec index build`")

    def memory_bytes(self) -> int:
        """USearch's own figure (``memory_usage``): graph and vectors, in bytes."""
        return int(self._index.memory_usage)

    @property
    def raw(self):
        """The underlying ``usearch.index.Index`` (keys are internal labels, not external ids)."""
        return self._index
