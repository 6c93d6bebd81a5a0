"""Small synthetic data sets and adapters for the bench tests."""

from __future__ import annotations

import numpy as np

from annrec.bench.algorithms import Algorithm, Param
from annrec.bench.datasets import Dataset


def synthetic(n: int = 600, nq: int = 40, dim: int = 16, metric: str = "l2", seed: int = 0) -> Dataset:
    """Gaussian clusters: ``n`` base and ``nq`` query float32 vectors."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, dim)) * 4
    x = (centers[rng.integers(0, 8, n)] + rng.standard_normal((n, dim))).astype(np.float32)
    q = (centers[rng.integers(0, 8, nq)] + rng.standard_normal((nq, dim))).astype(np.float32)
    return Dataset(f"synth-{metric}", x, q, metric, source="synthetic")


def naive_knn(train: np.ndarray, test: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Row-by-row float64 reference: (ids, distances) in ANN-Benchmarks' convention."""
    x = train.astype(np.float64)
    ids, dists = [], []
    for q in test.astype(np.float64):
        if metric == "l2":
            d = np.sqrt(((x - q) ** 2).sum(1))
        elif metric == "cosine":
            d = 1 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
        else:
            d = -(x @ q)
        order = np.lexsort((np.arange(len(d)), d))[:k]
        ids.append(order)
        dists.append(d[order])
    return np.array(ids), np.array(dists)


class ExactNumpy(Algorithm):
    """Minimal exact adapter with a hook to fail or be interrupted at the n-th query (tests only)."""

    name = "test-exact"
    build_params = {"fail_build": Param(bool, False, "raise in fit"),
                    "interrupt_at": Param(int, None, "raise KeyboardInterrupt at this query call")}
    query_params = {"shift": Param(int, 0, "drop this many true neighbours (lowers recall)", positive=False)}
    calls = 0

    def fit(self, X):
        if self.build_args.get("fail_build"):
            raise RuntimeError("simulated build failure")
        self.X = X.astype(np.float64)
        self.shift = 0

    def set_query_arguments(self, **qa):
        super().set_query_arguments(**qa)
        self.shift = int(qa.get("shift", 0))

    def query(self, q, k):
        type(self).calls += 1
        at = self.build_args.get("interrupt_at")
        if at is not None and type(self).calls >= at:
            raise KeyboardInterrupt
        d = ((self.X - q) ** 2).sum(1)
        return np.argsort(d, kind="stable")[self.shift:self.shift + k]

    def batch_query(self, Q, k):
        return np.stack([self.query(q, k) for q in Q])

    def memory_bytes(self):
        return int(self.X.nbytes)
