"""The adapter interface of the benchmark (ANN-Benchmarks' ``BaseANN``) and the functions every adapter shares.

:class:`Algorithm` is ANN-Benchmarks' ``ann_benchmarks/algorithms/base/module.py``: build arguments in the
constructor, ``fit(X)``, ``set_query_arguments(...)``, ``query(q, k)`` and ``batch_query(Q, k)``. The adapters
themselves are in :mod:`annrec.bench.algorithms` (annrec and the raw libraries) and
:mod:`annrec.bench.adapters_optional` (Annoy, PyNNDescent, USearch).
"""

from __future__ import annotations

import os
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
