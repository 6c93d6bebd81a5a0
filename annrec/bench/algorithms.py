"""Algorithm adapters: one small interface over annrec's indexes and the libraries a user would pick instead.

The interface is ANN-Benchmarks' ``BaseANN`` (``ann_benchmarks/algorithms/base/module.py``): build
arguments in the constructor, ``fit(X)``, ``set_query_arguments(...)``, ``query(q, k)`` for one query
and ``batch_query(Q, k)`` for many. Every adapter returns *rows of the base set* (``-1`` for a
missing result), so recall is computed the same way for all of them.

=================  ============================================  ==============================  =============
adapter            what it runs                                  build args                      query args
=================  ============================================  ==============================  =============
bruteforce-blas    exact search, FAISS's brute-force knn (BLAS)  —                               —
annrec-faiss       annrec.index, FAISS backend                   factory, mips_l2                nprobe, efSearch
annrec-hnswlib     annrec.index, hnswlib backend                 M, ef_construction              ef
faiss              FAISS called directly (same parameters)      factory                         nprobe, efSearch
hnswlib            hnswlib called directly (same parameters)    M, ef_construction              ef
annoy              Spotify Annoy (optional)                      n_trees                         search_k
pynndescent        PyNNDescent (optional)                        n_neighbors, diversify_prob,    epsilon
                                                                 pruning_degree_multiplier
usearch            USearch HNSW (optional)                       connectivity, expansion_add     expansion_search
=================  ============================================  ==============================  =============
"""

from __future__ import annotations

import importlib.util
import os
import re
from abc import ABC, abstractmethod
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from annrec.errors import InputError


def n_cores() -> int:
    """CPU cores this process may use (``sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Param:
    """A build or query parameter: accepted Python types, default and a one-line description."""

    def __init__(self, types: type | tuple[type, ...], default: Any, doc: str, positive: bool = True) -> None:
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.doc = doc
        self.positive = positive

    def check(self, adapter: str, name: str, value: Any) -> Any:
        ok = isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)
        if ok and self.positive and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = value > 0
        if not ok:
            kinds = " or ".join(t.__name__ for t in self.types)
            raise InputError(f"{adapter}: parameter {name} must be a {'positive ' if self.positive else ''}{kinds}; "
                             f"got {value!r}")
        return value


class Algorithm(ABC):
    """An ANN algorithm under benchmark (ANN-Benchmarks' ``BaseANN``).

    Class attributes: ``name`` (the adapter name used in YAML), ``package`` (import name of an optional
    library; the adapter is skipped with a message when it is missing), ``build_params`` and
    ``query_params`` (:class:`Param` by name).
    """

    name: ClassVar[str]
    package: ClassVar[str | None] = None
    build_params: ClassVar[dict[str, Param]] = {}
    query_params: ClassVar[dict[str, Param]] = {}

    def __init__(self, metric: str, **build_args: Any) -> None:
        self.metric = metric
        self.build_args = build_args
        self.query_args: dict[str, Any] = {}
        self.threads = n_cores()

    def warm(self, X: np.ndarray) -> None:  # noqa: B027 - optional
        """One-time, untimed preparation before :meth:`fit` (e.g. JIT compilation); default: nothing."""

    @abstractmethod
    def fit(self, X: np.ndarray) -> None:
        """Build the index over float32 ``(n, dim)`` base vectors; row ``i`` gets id ``i``."""

    def set_query_arguments(self, **query_args: Any) -> None:
        """Set query-time parameters (ANN-Benchmarks' ``set_query_arguments``)."""
        self.query_args = query_args

    def set_threads(self, n: int) -> None:
        """Threads for the following queries: 1 in single-query mode, all cores in batch mode."""
        self.threads = int(n)

    @abstractmethod
    def query(self, q: np.ndarray, k: int) -> np.ndarray:
        """Rows of the ``k`` nearest base vectors of one float32 ``(dim,)`` query (``-1`` = missing)."""

    def batch_query(self, Q: np.ndarray, k: int) -> np.ndarray:
        """int64 ``(nq, k)`` rows for float32 ``(nq, dim)`` queries; default: a thread pool over :meth:`query`."""
        out = np.full((len(Q), k), -1, dtype=np.int64)

        def one(i: int) -> None:
            r = self.query(Q[i], k)
            out[i, :len(r)] = r[:k]

        with ThreadPool(self.threads) as pool:
            pool.map(one, range(len(Q)))
        return out

    def memory_bytes(self) -> int | None:
        """Approximate in-memory size of the index in bytes (``None``: unknown, the runner uses RSS growth)."""
        return None

    def save(self, folder: Path) -> None:  # noqa: B027 - optional
        """Write the index into ``folder`` (to measure its size on disk); no-op when it cannot be saved."""

    def done(self) -> None:
        """Free the index."""

    def describe(self) -> str:
        args = {**self.build_args, **self.query_args}
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


def _fill(rows: np.ndarray, k: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if len(rows) < k:
        rows = np.concatenate([rows, np.full(k - len(rows), -1, dtype=np.int64)])
    return rows


def _normalized(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-30)).astype(np.float32)


# --------------------------------------------------------------------------- exact
class BruteForceBLAS(Algorithm):
    """Exact search through FAISS's exhaustive search (:func:`annrec.bench.groundtruth.brute_force_knn`).

    As ANN-Benchmarks' ``bruteforce-blas``: Euclidean via ``|x|² - 2<q, x>``, cosine and inner product
    via ``<q, x>`` (on normalised vectors for cosine), one BLAS matrix product for a batch of queries.
    """

    name = "bruteforce-blas"

    def fit(self, X):
        self.X = _normalized(X) if self.metric == "cosine" else np.ascontiguousarray(X, dtype=np.float32)

    def _topk(self, Q, k):
        from annrec.bench.groundtruth import brute_force_knn

        if self.metric == "cosine":
            Q = _normalized(Q)
        return brute_force_knn(self.X, Q, min(k, len(self.X)), self.metric)[0]

    # BLAS / OpenMP threads are set by the runner (threadpoolctl, faiss.omp_set_num_threads) around each measurement
    def query(self, q, k):
        return self._topk(q[None, :], k)[0]

    def batch_query(self, Q, k):
        out = np.empty((len(Q), min(k, len(self.X))), dtype=np.int64)
        for s in range(0, len(Q), 1024):
            out[s:s + 1024] = self._topk(Q[s:s + 1024], k)
        return out

    def memory_bytes(self):
        return int(self.X.nbytes)

    def save(self, folder):
        np.save(folder / "vectors.npy", self.X)

    def done(self):
        self.X = None


# --------------------------------------------------------------------------- annrec's index layer
class _AnnrecIndex(Algorithm):
    backend: ClassVar[str]

    def fit(self, X):
        from annrec.index import build_index

        self.index = build_index(X, np.arange(len(X), dtype=np.int64), metric=self.metric, backend=self.backend,
                                 **self.build_args)

    def set_query_arguments(self, **query_args):
        super().set_query_arguments(**query_args)
        if query_args:
            self.index.set_query_params(**query_args)

    def query(self, q, k):
        ids, _ = self.index.search(q[None, :], k, threads=1)
        return ids[0]

    def batch_query(self, Q, k):
        ids, _ = self.index.search(Q, k, threads=self.threads)
        return ids

    def memory_bytes(self):
        return int(self.index.memory_bytes())

    def save(self, folder):
        self.index.save(folder / "index")

    def done(self):
        self.index = None


class AnnrecFaiss(_AnnrecIndex):
    """annrec's FAISS backend (:class:`annrec.index.FaissIndex`) from a FAISS index factory string."""

    name = "annrec-faiss"
    backend = "faiss"
    build_params = {"factory": Param(str, "Flat", "FAISS index factory string, e.g. 'IVF1024,Flat', 'HNSW32'"),
                    "train_size": Param(int, None, "training vectors for IVF/PQ (default 256 * max(nlist, 256))"),
                    "mips_l2": Param(bool, False, "metric ip through an L2 index (Bachrach et al. 2014)")}
    query_params = {"nprobe": Param(int, None, "IVF lists probed per query"),
                    "efSearch": Param(int, None, "HNSW candidate list size at query time")}


class AnnrecHnswlib(_AnnrecIndex):
    """annrec's hnswlib backend (:class:`annrec.index.HnswIndex`)."""

    name = "annrec-hnswlib"
    backend = "hnswlib"
    build_params = {"M": Param(int, 16, "HNSW graph degree"),
                    "ef_construction": Param(int, 200, "efConstruction, candidate list size while building")}
    query_params = {"ef": Param(int, 50, "efSearch, candidate list size at query time")}


# --------------------------------------------------------------------------- raw libraries
class RawFaiss(Algorithm):
    """FAISS called directly, with the parameters annrec's FAISS backend gets (factory string, nprobe,
    efSearch; training on at most ``256·max(nlist, 256)`` vectors like annrec). Cosine = inner product
    on normalised vectors."""

    name = "faiss"
    build_params = AnnrecFaiss.build_params
    query_params = AnnrecFaiss.query_params

    def fit(self, X):
        import faiss

        fm = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        X = _normalized(X) if self.metric == "cosine" else np.ascontiguousarray(X, dtype=np.float32)
        factory = self.build_args.get("factory", "Flat")
        try:
            index = faiss.index_factory(X.shape[1], factory, fm)
        except RuntimeError as e:
            raise InputError(f"FAISS cannot build {factory!r}: {str(e).strip().splitlines()[-1]}") from None
        if not index.is_trained:
            m = re.search(r"IVF(\d+)", factory)
            nlist = int(m.group(1)) if m else 1
            train_size = int(self.build_args.get("train_size") or 256 * max(nlist, 256))
            xt = X
            if len(X) > train_size:
                xt = X[np.sort(np.random.default_rng(0).choice(len(X), train_size, replace=False))]
            index.train(xt)
        index.add(X)
        self.index = index

    def set_query_arguments(self, **query_args):
        import faiss

        super().set_query_arguments(**query_args)
        ps = faiss.ParameterSpace()
        for name, value in query_args.items():
            ps.set_index_parameter(self.index, name, int(value))

    def set_threads(self, n):
        import faiss

        super().set_threads(n)
        faiss.omp_set_num_threads(int(n))

    def query(self, q, k):
        if self.metric == "cosine":
            q = _normalized(q)
        _, labels = self.index.search(q[None, :], k)
        return labels[0]

    def batch_query(self, Q, k):
        if self.metric == "cosine":
            Q = _normalized(Q)
        _, labels = self.index.search(Q, k)
        return labels

    def memory_bytes(self):
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def save(self, folder):
        import faiss

        faiss.write_index(self.index, str(folder / "index.faiss"))

    def done(self):
        self.index = None


class RawHnswlib(Algorithm):
    """hnswlib called directly, with the parameters annrec's hnswlib backend gets (``random_seed`` 100)."""

    name = "hnswlib"
    build_params = AnnrecHnswlib.build_params
    query_params = AnnrecHnswlib.query_params
    #: normalise queries in Python (set when wrapping an index built in hnswlib's "ip" space for cosine)
    normalize_queries = False

    def fit(self, X):
        import hnswlib

        space = {"l2": "l2", "ip": "ip", "cosine": "cosine"}[self.metric]
        p = hnswlib.Index(space=space, dim=X.shape[1])
        p.init_index(max_elements=len(X), M=int(self.build_args.get("M", 16)),
                     ef_construction=int(self.build_args.get("ef_construction", 200)), random_seed=100)
        p.set_num_threads(self.threads)
        p.add_items(X, np.arange(len(X)))
        self.p = p

    def set_query_arguments(self, **query_args):
        super().set_query_arguments(**query_args)
        if "ef" in query_args:
            self.p.set_ef(int(query_args["ef"]))

    def set_threads(self, n):
        super().set_threads(n)
        if getattr(self, "p", None) is not None:
            self.p.set_num_threads(int(n))

    def query(self, q, k):
        if self.normalize_queries:
            q = _normalized(q)
        labels, _ = self.p.knn_query(q[None, :], k=k, num_threads=1)
        return labels[0]

    def batch_query(self, Q, k):
        if self.normalize_queries:
            Q = _normalized(Q)
        labels, _ = self.p.knn_query(Q, k=k, num_threads=self.threads)
        return labels

    def memory_bytes(self):
        return int(self.p.index_file_size())

    def save(self, folder):
        self.p.save_index(str(folder / "index.hnsw"))

    def done(self):
        self.p = None


# --------------------------------------------------------------------------- optional libraries
class Annoy(Algorithm):
    """Spotify Annoy (random projection forests); ``search_k`` -1 = Annoy's default ``n_trees·k``."""

    name = "annoy"
    package = "annoy"
    build_params = {"n_trees": Param(int, 100, "number of random projection trees")}
    query_params = {"search_k": Param(int, -1, "nodes inspected per query (-1: n_trees * k)", positive=False)}

    def fit(self, X):
        import annoy

        metric = {"l2": "euclidean", "cosine": "angular", "ip": "dot"}[self.metric]
        a = annoy.AnnoyIndex(X.shape[1], metric)
        for i, x in enumerate(X):
            a.add_item(i, x)
        a.build(int(self.build_args.get("n_trees", 100)), n_jobs=-1)
        self.a = a
        self.search_k = -1

    def set_query_arguments(self, **query_args):
        super().set_query_arguments(**query_args)
        self.search_k = int(query_args.get("search_k", -1))

    def query(self, q, k):
        return _fill(self.a.get_nns_by_vector(q.tolist(), k, self.search_k), k)

    def memory_bytes(self):
        return None

    def save(self, folder):
        self.a.save(str(folder / "index.annoy"))

    def done(self):
        self.a = None


class PyNNDescent(Algorithm):
    """PyNNDescent (nearest-neighbour descent graph, Dong et al. 2011; McInnes' library) — as ANN-Benchmarks
    configures it: ``prepare()`` at build time, query ``epsilon`` controls the search breadth."""

    name = "pynndescent"
    package = "pynndescent"
    build_params = {"n_neighbors": Param(int, 30, "graph degree (k of the k-NN graph)"),
                    "diversify_prob": Param((float, int), 1.0, "edge pruning probability", positive=False),
                    "pruning_degree_multiplier": Param((float, int), 1.5, "max degree after pruning / n_neighbors"),
                    "leaf_size": Param(int, 24, "RP-tree leaf size for initialisation")}
    query_params = {"epsilon": Param((float, int), 0.1, "search breadth: 0 is greedy, larger is more exact",
                                     positive=False)}

    def warm(self, X):
        """Compile PyNNDescent's numba kernels on a small sample, so build time measures the build, not the JIT."""
        import pynndescent

        metric = {"l2": "euclidean", "cosine": "cosine", "ip": "dot"}[self.metric]
        sample = np.ascontiguousarray(X[: min(len(X), 2000)])
        idx = pynndescent.NNDescent(sample, metric=metric, random_state=0, n_jobs=self.threads,
                                    **{k: v for k, v in self.build_args.items()})
        idx.prepare()
        idx.query(sample[:2], k=min(10, len(sample) - 1), epsilon=0.1)

    def fit(self, X):
        import pynndescent

        metric = {"l2": "euclidean", "cosine": "cosine", "ip": "dot"}[self.metric]
        self.index = pynndescent.NNDescent(X, metric=metric, random_state=0, n_jobs=self.threads,
                                           **{k: v for k, v in self.build_args.items()})
        self.index.prepare()
        self.epsilon = 0.1

    def set_query_arguments(self, **query_args):
        super().set_query_arguments(**query_args)
        self.epsilon = float(query_args.get("epsilon", 0.1))

    def set_threads(self, n):
        import numba

        super().set_threads(n)
        numba.set_num_threads(int(n))

    def query(self, q, k):
        ind, _ = self.index.query(q[None, :], k=k, epsilon=self.epsilon)
        return ind[0]

    def batch_query(self, Q, k):
        ind, _ = self.index.query(Q, k=k, epsilon=self.epsilon)
        return ind

    def save(self, folder):
        import pickle

        with open(folder / "index.pkl", "wb") as fh:
            pickle.dump(self.index, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def done(self):
        self.index = None


class USearch(Algorithm):
    """USearch (Unum's HNSW implementation)."""

    name = "usearch"
    package = "usearch"
    build_params = {"connectivity": Param(int, 16, "HNSW graph degree (M)"),
                    "expansion_add": Param(int, 128, "efConstruction")}
    query_params = {"expansion_search": Param(int, 64, "efSearch")}

    def fit(self, X):
        from usearch.index import Index

        metric = {"l2": "l2sq", "cosine": "cos", "ip": "ip"}[self.metric]
        self.index = Index(ndim=X.shape[1], metric=metric, dtype="f32",
                           connectivity=int(self.build_args.get("connectivity", 16)),
                           expansion_add=int(self.build_args.get("expansion_add", 128)))
        self.index.add(np.arange(len(X), dtype=np.uint64), X, threads=self.threads)

    def set_query_arguments(self, **query_args):
        super().set_query_arguments(**query_args)
        if "expansion_search" in query_args:
            self.index.expansion_search = int(query_args["expansion_search"])

    def query(self, q, k):
        m = self.index.search(q, k, threads=1)
        return _fill(m.keys, k)

    def batch_query(self, Q, k):
        m = self.index.search(Q, k, threads=self.threads)
        keys = np.asarray(m.keys, dtype=np.int64)
        counts = np.asarray(m.counts)
        keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = -1
        return keys

    def memory_bytes(self):
        return int(self.index.memory_usage)

    def save(self, folder):
        self.index.save(str(folder / "index.usearch"))

    def done(self):
        self.index = None


#: every adapter by its YAML name
ADAPTERS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (
    BruteForceBLAS, AnnrecFaiss, AnnrecHnswlib, RawFaiss, RawHnswlib, Annoy, PyNNDescent, USearch)}


def get_adapter(name: str) -> type[Algorithm]:
    """The adapter class of a YAML algorithm name.

    Raises:
        InputError: unknown name (the message lists the valid ones).
    """
    try:
        return ADAPTERS[name]
    except KeyError:
        raise InputError(f"unknown algorithm {name!r}: use one of {', '.join(ADAPTERS)}") from None


def available(cls: type[Algorithm]) -> bool:
    """True when the adapter's optional package is importable."""
    return cls.package is None or importlib.util.find_spec(cls.package) is not None


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Add an adapter (a subclass of :class:`Algorithm`) under ``cls.name``; usable as a decorator."""
    ADAPTERS[cls.name] = cls
    return cls
