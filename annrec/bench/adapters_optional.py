"""Adapters of optional libraries (``pip install annrec[bench]``): Spotify Annoy, PyNNDescent, USearch.

Each is skipped with a message when its package is missing (:func:`annrec.bench.algorithms.available`).
"""

from __future__ import annotations

import numpy as np

from annrec.bench.adapter_base import Algorithm, Param, _fill


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
