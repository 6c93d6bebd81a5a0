"""Algorithm adapters: one small interface over annrec's indexes and the libraries a user would pick instead.

The interface is ANN-Benchmarks' ``BaseANN`` (``ann_benchmarks/algorithms/base/module.py``): build
arguments in the constructor, ``fit(X)``, ``set_query_arguments(...)``, ``query(q, k)`` for one query
and ``batch_query(Q, k)`` for many. Every adapter returns *rows of the base set* (``-1`` for a
missing result), so recall is computed the same way for all of them.

=================  ============================================  ==============================  =============
adapter            what it runs                                  build args                      query args
=================  ============================================  ==============================  =============
bruteforce-blas    exact search, FAISS's brute-force knn (BLAS)  —                               —
annrec-faiss       annrec.index, FAISS backend                   factory, M, ef_construction,    nprobe, efSearch,
                                                                 train_size, mips_l2             k_factor
annrec-hnswlib     annrec.index, hnswlib backend                 M, ef_construction              ef
annrec-usearch     annrec.index, usearch backend                 M, ef_construction              ef
annrec-pynndescent annrec.index, pynndescent backend             n_neighbors, diversify_prob,    epsilon
                                                                 pruning_degree_multiplier,
                                                                 leaf_size
faiss              FAISS called directly (same parameters)      as annrec-faiss (no mips_l2)    as annrec-faiss
hnswlib            hnswlib called directly (same parameters)    M, ef_construction              ef
annoy              Spotify Annoy (optional)                      n_trees                         search_k
pynndescent        PyNNDescent (optional)                        n_neighbors, diversify_prob,    epsilon
                                                                 pruning_degree_multiplier
usearch            USearch HNSW (optional)                       connectivity, expansion_add     expansion_search
=================  ============================================  ==============================  =============
"""

from __future__ import annotations

import importlib.util
import re
from typing import ClassVar

import numpy as np

from annrec.bench.adapter_base import Algorithm, Param, _fill, _normalized, n_cores
from annrec.bench.adapters_optional import Annoy, PyNNDescent, USearch
from annrec.errors import InputError

__all__ = ["ADAPTERS", "Algorithm", "Param", "_fill", "_normalized", "available", "get_adapter", "n_cores",
           "register", "Annoy", "PyNNDescent", "USearch"]


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
    """annrec's FAISS backend (:class:`annrec.index.FaissIndex`) from a FAISS index factory string.

    ``M`` fills ``{M}`` in the factory (``"HNSW{M},SQ8"``); ``ef_construction`` is HNSW's efConstruction
    (default :data:`annrec.index.faiss_backend.DEFAULT_EF_CONSTRUCTION`); ``k_factor`` is the re-ranking factor
    of ``RFlat`` / ``Refine(...)`` factories (``k_factor·k`` candidates re-scored exactly; FAISS default 1).
    """

    name = "annrec-faiss"
    backend = "faiss"
    build_params = {"factory": Param(str, "Flat", "FAISS index factory string, e.g. 'IVF1024,Flat', 'HNSW32', "
                                     "'HNSW{M},SQ8,RFlat', 'IVF1024,PQ196x4fs,RFlat'"),
                    "M": Param(int, None, "HNSW graph degree, for {M} in the factory string"),
                    "ef_construction": Param(int, None, "HNSW efConstruction (candidate list size while building)"),
                    "train_size": Param(int, None, "training vectors for IVF/PQ (default 256 * max(nlist, 256))"),
                    "mips_l2": Param(bool, False, "metric ip through an L2 index (Bachrach et al. 2014)")}
    query_params = {"nprobe": Param(int, None, "IVF lists probed per query"),
                    "efSearch": Param(int, None, "HNSW candidate list size at query time"),
                    "k_factor": Param(int, None, "re-ranking: k_factor * k candidates re-scored exactly")}


class AnnrecHnswlib(_AnnrecIndex):
    """annrec's hnswlib backend (:class:`annrec.index.HnswIndex`)."""

    name = "annrec-hnswlib"
    backend = "hnswlib"
    build_params = {"M": Param(int, 16, "HNSW graph degree"),
                    "ef_construction": Param(int, 200, "efConstruction, candidate list size while building")}
    query_params = {"ef": Param(int, 50, "efSearch, candidate list size at query time")}


class AnnrecUsearch(_AnnrecIndex):
    """annrec's usearch backend (:class:`annrec.index.UsearchIndex`); its parameters are USearch's
    ``connectivity``, ``expansion_add`` and ``expansion_search`` under their HNSW names."""

    name = "annrec-usearch"
    backend = "usearch"
    package = "usearch"
    build_params = {"M": Param(int, 16, "HNSW graph degree (USearch connectivity)"),
                    "ef_construction": Param(int, 128, "efConstruction (USearch expansion_add)")}
    query_params = {"ef": Param(int, 64, "efSearch (USearch expansion_search)")}


class AnnrecPynndescent(_AnnrecIndex):
    """annrec's pynndescent backend (:class:`annrec.index.PynndescentIndex`), with PyNNDescent's own parameter
    names, defaults and seed (``random_state`` 0) as the raw ``pynndescent`` adapter, so equal parameters build
    the same graph and their QPS ratio is the cost of annrec's index layer. Build threads: numba's, set to the
    runner's thread count as the raw adapter does."""

    name = "annrec-pynndescent"
    backend = "pynndescent"
    package = "pynndescent"
    build_params = PyNNDescent.build_params
    query_params = PyNNDescent.query_params

    def set_threads(self, n):
        import numba

        super().set_threads(n)
        numba.set_num_threads(int(n))


# --------------------------------------------------------------------------- raw libraries
class RawFaiss(Algorithm):
    """FAISS called directly, with the parameters annrec's FAISS backend gets (factory string with ``{M}``,
    HNSW efConstruction, nprobe, efSearch, k_factor; training on at most ``256·max(nlist, 256)`` vectors like
    annrec). Query parameters go through FAISS's own ``ParameterSpace`` (``k_factor`` is its ``k_factor_rf``).
    Cosine = inner product on normalised vectors."""

    name = "faiss"
    build_params = {n: p for n, p in AnnrecFaiss.build_params.items() if n != "mips_l2"}
    query_params = AnnrecFaiss.query_params
    _PS_NAMES = {"nprobe": "nprobe", "efSearch": "efSearch", "k_factor": "k_factor_rf"}

    def fit(self, X):
        import faiss

        from annrec.index.faiss_backend import DEFAULT_EF_CONSTRUCTION

        fm = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        X = _normalized(X) if self.metric == "cosine" else np.ascontiguousarray(X, dtype=np.float32)
        factory = self.build_args.get("factory", "Flat").replace("{M}", str(self.build_args.get("M") or 32))
        try:
            index = faiss.index_factory(X.shape[1], factory, fm)
        except RuntimeError as e:
            raise InputError(f"FAISS cannot build {factory!r}: {str(e).strip().splitlines()[-1]}") from None
        node = faiss.downcast_index(index)
        while hasattr(node, "base_index") or isinstance(node, faiss.IndexPreTransform):  # refine / pre-transform
            node = faiss.downcast_index(node.base_index if hasattr(node, "base_index") else node.index)
        if isinstance(node, faiss.IndexHNSW):
            node.hnsw.efConstruction = int(self.build_args.get("ef_construction") or DEFAULT_EF_CONSTRUCTION)
        if hasattr(node, "do_polysemous_training"):
            node.do_polysemous_training = False  # as annrec: only Hamming-filtered search needs it
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
            ps.set_index_parameter(self.index, self._PS_NAMES.get(name, name), int(value))

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


#: every adapter by its YAML name
ADAPTERS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (
    BruteForceBLAS, AnnrecFaiss, AnnrecHnswlib, AnnrecUsearch, AnnrecPynndescent, RawFaiss, RawHnswlib, Annoy,
    PyNNDescent, USearch)}


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
