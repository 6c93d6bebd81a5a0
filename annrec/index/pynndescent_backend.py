"""pynndescent backend: nearest-neighbour descent graphs (Dong, Charikar & Li, 2011, "Efficient k-nearest
neighbor graph construction for generic similarity measures"; Leland McInnes' PyNNDescent,
https://github.com/lmcinnes/pynndescent).

NN-descent builds an approximate k-NN graph from random-projection-tree neighbours by repeatedly joining the
neighbours of neighbours; ``NNDescent.prepare()`` then turns it into a search graph (diversified, made
undirected, degree-pruned) with a search tree that picks each query's entry points. Build parameters keep
PyNNDescent's names and defaults: ``n_neighbors`` (degree of the k-NN graph, default 30), ``diversify_prob``
(share of the redundant edges pruned, 0..1, default 1.0), ``pruning_degree_multiplier`` (maximum degree of the
search graph / ``n_neighbors``, default 1.5), ``leaf_size`` (random-projection-tree leaf size, default
``None``: PyNNDescent's choice, ``max(60, min(256, 5·n_neighbors))`` for the initial forest and 30 for the
search tree) and ``random_state`` (seed, default 0 as in annrec's benchmark adapter: the same data and
parameters give the same graph). The query-time ``epsilon`` (default 0.1, PyNNDescent's) widens the search:
a candidate is expanded while its distance is below ``(1 + epsilon)`` times the ``k``-th best found; 0 is a
greedy search, PyNNDescent suggests at most 0.3-0.5. It is a float, so the other backends' integer ``ef``
does not apply.

Metrics: ``l2`` runs PyNNDescent's ``euclidean`` and returns squared distances (as FAISS does); ``cosine``
runs its ``cosine`` on annrec's normalised vectors and returns ``1 - distance`` (the cosine similarity);
``ip`` cannot use PyNNDescent's ``dot``, which normalises the vectors (so answers cosine), and is answered by
the Euclidean reduction of Bachrach et al. (2014) as FAISS's ``mips_l2``: items get the extra coordinate
``sqrt(M² - |x|²)`` (``M``: the largest item norm at build time, kept as ``mips_max_norm``), queries a 0, and
inner products are recovered from the squared distances. An upsert above that norm is refused.

Adds go through ``NNDescent.update``, which appends the vectors (labels stay consecutive), refines the whole
k-NN graph by NN-descent and rebuilds the search graph: correct, but every ``add`` call costs about a
rebuild's refinement stage (seconds for tens of thousands of items), so add in batches; the service keeps
these indexes read-only for that reason. Removes are annrec's deletion marks: the graph keeps the removed
items and a search over-fetches past them (``native_deletes`` is False). PyNNDescent has no filter, so an
allow-list search over-fetches unfiltered neighbours and keeps the allowed ones, and falls back to exact
search over the allowed labels when too few remain (as the usearch backend).

PyNNDescent's search reuses one workspace per index, so searches of one index run one at a time (a lock);
a batch is searched sequentially on one thread whatever ``threads`` says. A search calls PyNNDescent's compiled
query plan directly where it has one (:meth:`PynndescentIndex._fast_plan`), else ``NNDescent.query``. The index file is a pickle of the
``NNDescent`` object (PyNNDescent's own persistence): load index folders only from sources you trust, with the
PyNNDescent version that wrote them (the manifest records it). The first build in a process compiles
PyNNDescent's numba kernels (tens of seconds; later builds reuse them).

``pynndescent`` is an optional dependency (the ``bench`` extra): ``pip install pynndescent``.
"""

from __future__ import annotations

import math
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np

from annrec._validate import check_int
from annrec.errors import ArtifactError, InputError
from annrec.index.base import Index
from annrec.index.filtered import overfetch_allowed, pad_results

#: build parameters and the default query ``epsilon`` (PyNNDescent's defaults; ``random_state`` 0 as the
#: benchmark adapter, ``leaf_size`` None = PyNNDescent's choice); ``mips_max_norm`` is set by an ``ip`` build
_BUILD_PARAMS: dict[str, Any] = {"n_neighbors": 30, "diversify_prob": 1.0, "pruning_degree_multiplier": 1.5,
                                 "leaf_size": None, "random_state": 0, "epsilon": 0.1}
_INTERNAL_PARAMS = ("mips_max_norm",)
#: an allow-list search over-fetches at most this many neighbours before it goes exact
MAX_FILTER_FETCH = 4096


def _pynndescent():
    try:
        import pynndescent
    except ImportError:
        raise InputError("the pynndescent backend needs the pynndescent package: pip install pynndescent (or the "
                         "bench extra: pip install -e \".[bench]\")") from None
    return pynndescent


def _make_heap(n: int, k: int):
    from pynndescent.utils import make_heap

    return make_heap(n, k)


def _uncorrected_finisher(nnd):
    """PyNNDescent's fused finisher without a distance correction (``finish_query_no_correction``), compiled for
    ``nnd``'s heap and vertex-order types and taken as its compiled entry point (no per-call type dispatch), or
    ``None`` where PyNNDescent has no such function (other versions)."""
    try:
        from pynndescent.utils import finish_query_no_correction as finisher
    except ImportError:
        return None
    import numba

    indices, distances, _ = _make_heap(1, 1)
    finisher(indices, distances, nnd._vertex_order)  # compiles (cached on disk by PyNNDescent)
    try:
        key = (numba.typeof(indices), numba.typeof(distances), numba.typeof(nnd._vertex_order))
        return finisher.overloads[key].entry_point
    except (AttributeError, KeyError, TypeError):
        return finisher


def check_epsilon(value: Any, name: str = "pynndescent parameter epsilon") -> float:
    """``value`` as a float after checking that it is a finite number ``>= 0`` (not a bool).

    Raises:
        InputError: a bool, a non-number, NaN/Inf or a negative value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or value < 0:
        raise InputError(f"{name} must be a number >= 0 (0: greedy search; PyNNDescent suggests at most 0.3-0.5); "
                         f"got {value!r}")
    return float(value)


def pynndescent_params(params: dict[str, Any]) -> dict[str, Any]:
    """The build parameters: :data:`_BUILD_PARAMS` overridden by ``params``, each checked.

    Raises:
        InputError: an unknown parameter (the message lists the valid ones), ``n_neighbors`` < 2, a
            ``diversify_prob`` outside [0, 1], a non-positive ``pruning_degree_multiplier`` or ``leaf_size``, a
            negative ``random_state``, a negative or non-finite ``epsilon``.
    """
    unknown = set(params) - set(_BUILD_PARAMS) - set(_INTERNAL_PARAMS)
    if unknown:
        raise InputError(f"unknown pynndescent parameter(s) {sorted(unknown)}: use {', '.join(_BUILD_PARAMS)}")
    merged = {**_BUILD_PARAMS, **params}
    check_int(merged["n_neighbors"], "pynndescent parameter n_neighbors", minimum=2)
    check_int(merged["random_state"], "pynndescent parameter random_state", minimum=0)
    if merged["leaf_size"] is not None:
        check_int(merged["leaf_size"], "pynndescent parameter leaf_size", hint=" (or null: PyNNDescent's choice)")
    for name, low, high in (("diversify_prob", 0.0, 1.0), ("pruning_degree_multiplier", 0.0, math.inf)):
        v = merged[name]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not (low <= float(v) <= high) or (name == "pruning_degree_multiplier" and v <= 0):
            want = "a number in [0, 1]" if high == 1.0 else "a positive number"
            raise InputError(f"pynndescent parameter {name} must be {want}; got {v!r}")
        merged[name] = float(v)
    merged["epsilon"] = check_epsilon(merged["epsilon"])
    return merged


class PynndescentIndex(Index):
    """A PyNNDescent ``NNDescent`` index behind the :class:`~annrec.index.base.Index` interface.

    Params: ``n_neighbors`` (30), ``diversify_prob`` (1.0), ``pruning_degree_multiplier`` (1.5), ``leaf_size``
    (None), ``random_state`` (0), ``epsilon`` (default query breadth, 0.1); see the module docstring.

    Raises:
        InputError: an unknown or out-of-range parameter, pynndescent not installed; at search time an
            unknown query parameter (the message names ``epsilon``) or a negative ``epsilon``; on ``add`` under
            ``ip``, a vector longer than the build's largest norm.
    """

    backend = "pynndescent"
    file_name = "index.pynndescent"
    query_param_names = ("epsilon",)

    def __init__(self, dim: int, metric: str, **params: Any) -> None:
        super().__init__(dim, metric, **pynndescent_params(params))
        self._mips = self.metric == "ip"
        self._fdim = self.dim + 1 if self._mips else self.dim  # the dimension PyNNDescent sees
        self._mips_m2 = float(self.params.get("mips_max_norm") or 0.0) ** 2
        self._library_metric = {"l2": "euclidean", "cosine": "cosine", "ip": "euclidean"}[self.metric]
        self._epsilon = float(self.params["epsilon"])
        self._nnd = None
        self._lock = threading.Lock()  # PyNNDescent's search reuses one workspace: one query at a time

    # -- query-time parameters (epsilon is a float, unlike the integer ef / nprobe of the other backends)
    def _check_query_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        if not params:
            return {}
        for name in params:
            if name not in self.query_param_names:
                raise InputError(f"unknown query parameter {name!r} for the pynndescent backend: use epsilon "
                                 f"(a number >= 0, default {self._epsilon})")
        return {"epsilon": check_epsilon(params["epsilon"], "query parameter epsilon")}

    def _backend_set_query_params(self, params: dict[str, Any]) -> None:
        if "epsilon" in params:
            self._epsilon = float(params["epsilon"])

    # -- MIPS -> L2 (Bachrach et al. 2014), as FAISS's mips_l2
    def _augment(self, x: np.ndarray) -> np.ndarray:
        """Items ``(n, dim)`` -> ``(n, dim + 1)`` with the extra coordinate ``sqrt(M² - |x|²)``."""
        n2 = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        out = np.empty((len(x), self._fdim), dtype=np.float32)
        out[:, :-1] = x
        out[:, -1] = np.sqrt(np.maximum(self._mips_m2 - n2, 0.0))
        return out

    def _backend_check(self, x: np.ndarray) -> None:
        if self._mips and len(x) and self._nnd is not None:
            n2 = float(np.einsum("ij,ij->i", x, x, dtype=np.float64).max())
            if n2 > self._mips_m2 * (1 + 1e-5):
                raise InputError(f"an item vector has norm {math.sqrt(n2):.6g}, above the bound "
                                 f"{math.sqrt(self._mips_m2):.6g} this pynndescent ip index was built with: "
                                 f"rebuild the index (annrec index build) with all items")

    # -- build and adds
    def _backend_create(self, x: np.ndarray) -> None:
        if self._mips:
            m = float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max())) if len(x) else 0.0
            self.params["mips_max_norm"] = m if m > 0 else 1.0
            self._mips_m2 = self.params["mips_max_norm"] ** 2
        self._nnd = None  # built by the first _backend_add, over the initial vectors

    def _backend_add(self, x: np.ndarray, labels: np.ndarray) -> None:
        data = self._augment(x) if self._mips else x
        with self._lock:
            if self._nnd is None:
                self._nnd = self._build(data)
                return
            if self._nnd._raw_data.shape[0] != int(labels[0]):
                raise RuntimeError("pynndescent label bookkeeping out of sync")  # programming error
            self._nnd.update(xs_fresh=data)  # appended as rows n.., graph refined, search graph rebuilt

    def _build(self, data: np.ndarray):
        p = self.params
        nnd = _pynndescent().NNDescent(
            data, metric=self._library_metric, n_neighbors=int(min(p["n_neighbors"], max(len(data) - 1, 1))),
            diversify_prob=p["diversify_prob"], pruning_degree_multiplier=p["pruning_degree_multiplier"],
            leaf_size=p["leaf_size"], random_state=int(p["random_state"]))
        nnd.prepare()
        return nnd

    def _backend_mark_deleted(self, labels: np.ndarray) -> None:
        pass  # the base class's deletion mask; searches over-fetch past the removed items

    # -- search
    def _fast_plan(self):
        """``(search function, finisher, ones_1)`` of PyNNDescent's plain dense query path, or ``None``.

        ``NNDescent.query`` (PyNNDescent >= 0.7) runs a compiled search function and a fused finisher (sort,
        map rows through ``_vertex_order``, correct the distances) kept in ``_fast_plan``; calling them directly
        skips its per-call checks and query copy (annrec has checked the queries), and under l2 and ip the
        uncorrected finisher returns the squared distances PyNNDescent searches with (no square root and
        square again). Cached per plan object (a new one after ``update``, ``prepare`` or unpickling); ``None``
        where the plan is missing or not the dense one (then :meth:`_query` calls ``NNDescent.query``).
        """
        nnd = self._nnd
        plan = getattr(nnd, "_fast_plan", None)
        cached = self.__dict__.get("_plan_cache")
        if cached is not None and cached[0] is plan:
            return cached[1]
        fast = None
        if isinstance(plan, tuple) and len(plan) == 6 and plan[0] is False and callable(plan[1]):
            finish = plan[2]
            if not self._cosine:  # euclidean searches squared distances and corrects them with a square root
                finish = _uncorrected_finisher(nnd) if nnd._distance_correction is np.sqrt else None
            if finish is not None:
                fast = (plan[1], finish, plan[5])
        self._plan_cache = (plan, fast)
        return fast

    def _query(self, q: np.ndarray, k: int, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
        """PyNNDescent's top-``k`` as ``(labels int64 (nq, k), scores float32 (nq, k))`` in annrec's units."""
        qq = q
        if self._mips:
            qq = np.zeros((len(q), self._fdim), dtype=np.float32)
            qq[:, :-1] = q
        elif not qq.flags.c_contiguous:
            qq = np.ascontiguousarray(qq)
        nnd = self._nnd
        squared = False
        with self._lock:
            fast = self._fast_plan()
            if fast is not None:
                search, finish, ones_1 = fast
                nq = len(qq)
                ws = getattr(nnd, "_query_workspace", None)
                if ws is None or ws[0].shape != (nq, k):
                    ws = nnd._query_workspace = _make_heap(nq, k)
                ind, dist, _ = search(qq, qq, ones_1 if nq == 1 else nnd._ones_for_queries(nq), ws, k, epsilon,
                                      nnd._visited, self._cosine, nnd.search_rng_state)
                ind, dist = finish(ind, dist, nnd._vertex_order)
                squared = not self._cosine
            elif self._cosine:  # annrec has normalised the queries: PyNNDescent need not
                ind, dist = nnd.query(qq, k, epsilon, pre_normalized=True)
            else:
                ind, dist = nnd.query(qq, k, epsilon)
        labels = ind.astype(np.int64)
        if self._cosine:
            scores = np.subtract(np.float32(1.0), dist, dtype=np.float32)
            # a zero query has no direction (every item scores 0, as the other backends answer it): PyNNDescent
            # returns one item k times with similarity 0, so such rows are answered by exact search
            if (scores[0, 0] <= 0.0 if len(q) == 1 else (scores[:, 0] <= 0.0).any()):
                zero = np.flatnonzero(~q.any(axis=1))
                if len(zero):
                    live = np.flatnonzero(~self._deleted)
                    labels[zero], scores[zero] = pad_results(*self._exact(q[zero], min(k, len(live)), live), k)
            return labels, scores
        scores = dist  # a fresh float32 array of PyNNDescent's
        if not squared:
            scores *= scores  # euclidean -> squared, as FAISS
        if self._mips:  # |q - x̃|² = |q|² + M² - 2 q·x
            if len(q) == 1:
                scores -= float(q[0] @ q[0]) + self._mips_m2
            else:
                scores -= np.einsum("ij,ij->i", q, q)[:, None] + np.float32(self._mips_m2)
            scores *= np.float32(-0.5)
        # a slot PyNNDescent could not fill keeps an infinite distance (results are sorted: the last column)
        if not (math.isfinite(scores[0, -1]) if len(q) == 1 else np.isfinite(scores[:, -1]).all()):
            missing = ~np.isfinite(scores)
            labels[missing] = -1
            scores[missing] = np.nan
        return labels, scores

    def _backend_search(self, q, k, params, mask, threads):
        epsilon = self._epsilon if not params else float(params.get("epsilon", self._epsilon))
        if mask is None:
            return self._query(q, k, epsilon)
        return overfetch_allowed(self, q, k, mask, lambda kk: self._query(q, kk, epsilon), len(self._ext),
                                 MAX_FILTER_FETCH)

    # -- persistence
    def manifest(self) -> dict[str, Any]:
        """The base manifest, with the PyNNDescent version that wrote the pickle among ``versions``."""
        import importlib.metadata as md

        m = super().manifest()
        try:
            m["versions"]["pynndescent"] = md.version("pynndescent")
        except md.PackageNotFoundError:  # pragma: no cover - built without the package is impossible
            pass
        return m

    def _backend_save(self, file: Path) -> None:
        with self._lock, open(file, "wb") as fh:
            pickle.dump(self._nnd, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def _backend_load(self, file: Path, n_labels: int) -> None:
        if not file.exists():
            raise FileNotFoundError(2, "missing", str(file))
        _pynndescent()
        try:
            with open(file, "rb") as fh:
                nnd = pickle.load(fh)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign pickle fails in many ways
            raise ArtifactError(f"{file} is not a readable PyNNDescent index ({type(e).__name__}: {e}); it may come "
                                f"from another PyNNDescent version (see versions in manifest.json): rebuild the "
                                f"index with `annrec index build`") from None
        if not hasattr(nnd, "query") or not hasattr(nnd, "_raw_data"):
            raise ArtifactError(f"{file} does not hold a PyNNDescent NNDescent index: rebuild the index with "
                                f"`annrec index build`")
        self._nnd = nnd

    def _backend_verify(self, file: Path) -> None:
        n, dim = self._nnd._raw_data.shape
        if n != len(self._ext) or dim != self._fdim or self._nnd.metric != self._library_metric:
            raise ArtifactError(f"{file} holds {n} vectors of dim {dim} (metric {self._nnd.metric!r}) but the folder "
                                f"has {len(self._ext)} ids of dim {self._fdim} (metric {self._library_metric!r}): "
                                f"rebuild the index with `annrec index build`")

    def memory_bytes(self) -> int:
        """The arrays the ``NNDescent`` object holds (vectors, k-NN and search graphs, search tree), in bytes."""
        seen: set[int] = set()

        def size(obj, depth: int = 0) -> int:
            if id(obj) in seen or depth > 3:
                return 0
            seen.add(id(obj))
            if isinstance(obj, np.ndarray):
                return int(obj.nbytes)
            if hasattr(obj, "indptr") and hasattr(obj, "data"):  # scipy sparse: the search graph
                return sum(size(getattr(obj, a), depth + 1) for a in ("data", "indices", "indptr"))
            if isinstance(obj, (tuple, list)):
                return sum(size(o, depth + 1) for o in obj)
            return 0

        return sum(size(v) for v in vars(self._nnd).values()) if self._nnd is not None else 0

    @property
    def raw(self):
        """The underlying ``pynndescent.NNDescent`` (rows are internal labels, not external ids; under ``ip`` its
        vectors carry the extra coordinate of the Euclidean reduction)."""
        return self._nnd
