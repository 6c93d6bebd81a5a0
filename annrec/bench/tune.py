"""``annrec index tune``: the fastest index specification that reaches a target recall@k.

On a held-out sample of queries (users of an Embeddings artifact, held-out items, or a data set's
test queries) with exact ground truth, each candidate index is built once and its query parameter is
raised step by step (``ef`` for hnswlib and usearch, ``nprobe`` for IVF, ``efSearch`` for FAISS HNSW,
``epsilon`` for pynndescent) until
recall@k reaches the target; the QPS at that point (best of ``runs`` passes, single-query mode by
default) is the candidate's score. Exact search (FAISS ``Flat``) is always a candidate, so there is
always an answer. The winner is written as an index specification — the YAML of ``index/*.yaml``
(``backend``, ``metric``, ``params``) — ready for ``annrec index build --spec``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annrec.bench.algorithms import (AnnrecFaiss, AnnrecHnswlib, AnnrecPynndescent, AnnrecUsearch, Algorithm,
                                     available)
from annrec.bench.datasets import Dataset
from annrec.bench.groundtruth import GroundTruth, knn_recall
from annrec.bench.runner import measure
from annrec.errors import InputError

EF_STEPS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
EFSEARCH_STEPS = EF_STEPS
BACKENDS = ("hnswlib", "usearch", "pynndescent", "faiss-ivf", "faiss-hnsw", "faiss-hnsw-sq8", "faiss-flat")
#: the pynndescent candidates' graph degrees (one NN-descent build each) and their query epsilon steps (0 is
#: a greedy search; PyNNDescent's default is 0.1 and it suggests at most 0.3-0.5)
PYNNDESCENT_NEIGHBORS = (16, 30)
EPSILON_STEPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
#: re-ranking factor of the HNSW-SQ8 candidate (``HNSW{M},SQ8,RFlat``: 2·k candidates re-scored exactly)
SQ8_K_FACTOR = 2


@dataclass
class Candidate:
    """One tuned configuration: annrec backend, build params, the query param that reached the target."""

    backend: str
    build: dict[str, Any]
    query: dict[str, Any]
    recall: float
    qps: float | None
    build_time_s: float
    reached: bool
    trace: list[dict[str, Any]] = field(default_factory=list)

    def spec(self, metric: str) -> dict[str, Any]:
        """The index specification (``backend``, ``metric``, ``params``)."""
        return {"backend": self.backend, "metric": metric, "params": {**self.build, **self.query}}

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "build": self.build, "query": self.query, "recall": self.recall,
                "qps": self.qps, "build_time_s": self.build_time_s, "reached": self.reached, "trace": self.trace}


def _recall(algo: Algorithm, Q, gt: GroundTruth, k: int, mode: str) -> float:
    m = measure(algo, Q, k, mode, runs=1, warmup=0)
    return float(knn_recall(m["ids"], gt.neighbors, k).mean())


def _sweep(algo: Algorithm, name: str, steps, Q, gt, k, target, mode, runs, log) -> tuple[dict, float, bool, list]:
    def value(v):  # integer steps (ef, nprobe) stay integers, pynndescent's epsilon stays a float
        return int(v) if isinstance(v, (int, np.integer)) else float(v)

    trace = []
    for v in steps:
        algo.set_query_arguments(**{name: value(v)})
        r = _recall(algo, Q, gt, k, mode)
        trace.append({name: value(v), "recall": r})
        if r >= target:
            return {name: value(v)}, r, True, trace
    return {name: value(steps[-1])}, trace[-1]["recall"] if trace else 0.0, False, trace


def tune_index(ds: Dataset, gt: GroundTruth, target_recall: float, *, k: int = 10,
               backends: tuple[str, ...] = BACKENDS, M_values: tuple[int, ...] = (8, 16, 32),
               ef_construction: int = 200, hnsw_faiss_M: int = 32, mode: str = "single", runs: int = 3,
               log: Callable[[str], None] = print) -> tuple[Candidate, list[Candidate]]:
    """Find the fastest annrec index configuration with recall@k >= ``target_recall`` on ``ds``'s queries.

    Args:
        ds: base vectors (indexed) and the held-out sample of queries; gt: their exact neighbours.
        backends: candidates among ``hnswlib`` and ``usearch`` (one build per ``M`` in ``M_values``; usearch
            where it is installed), ``pynndescent`` (where installed: one NN-descent build per ``n_neighbors``
            in :data:`PYNNDESCENT_NEIGHBORS`, ``epsilon`` swept over :data:`EPSILON_STEPS`; the builds take
            5 s and 9 s on Fashion-MNIST's 60,000 x 784 on 2 cores, after a one-time numba compile of about a
            minute per process), ``faiss-ivf`` (``IVF{nlist},Flat``,
            nlist = annrec's ``suggest_nlist``),
            ``faiss-hnsw`` (``HNSW{hnsw_faiss_M}``), ``faiss-hnsw-sq8`` (``HNSW16,SQ8,RFlat``, 8-bit scalar
            quantisation re-ranked exactly with ``k_factor`` :data:`SQ8_K_FACTOR`), ``faiss-flat`` (exact;
            always added).
        mode: ``single`` (1 thread, one query at a time) or ``batch``.

    Returns:
        ``(winner, all candidates)``.

    Raises:
        InputError: a target outside (0, 1], an unknown backend or mode.
    """

    if not 0 < target_recall <= 1:
        raise InputError(f"target recall must be in (0, 1]; got {target_recall}")
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise InputError(f"unknown tuning candidate(s) {bad}: use {', '.join(BACKENDS)}")
    if mode not in ("single", "batch"):
        raise InputError(f"mode must be single or batch; got {mode!r}")
    Q = np.ascontiguousarray(ds.test, dtype=np.float32)
    plans = _plans(ds, backends, M_values, ef_construction, hnsw_faiss_M, log)
    cands: list[Candidate] = []
    for backend, cls, build, qname, steps, fixed in plans:
        algo = cls(ds.metric, **build)
        try:
            t0 = time.perf_counter()
            algo.fit(ds.train)
            bt = time.perf_counter() - t0
            if fixed:
                algo.set_query_arguments(**fixed)
            if qname is None:
                query, rec, ok, trace = {}, _recall(algo, Q, gt, k, mode), True, []
            else:
                query, rec, ok, trace = _sweep(algo, qname, steps, Q, gt, k, target_recall, mode, runs, log)
            query = {**fixed, **query}
            qps = None
            if ok:
                if query:
                    algo.set_query_arguments(**query)
                m = measure(algo, Q, k, mode, runs=runs, warmup=min(200, len(Q)))
                qps = len(Q) / m["search_time_s"]
            c = Candidate(backend, build, query, rec, qps, bt, ok, trace)
            cands.append(c)
            log(f"{backend} {build} {query}: recall@{k} {rec:.4f}"
                + (f", {qps:,.0f} QPS" if qps else f" (target {target_recall} not reached)"))
        except Exception as e:  # noqa: BLE001 - one failing candidate must not stop the tuning
            log(f"{backend} {build}: FAILED ({type(e).__name__}: {e}); skipped")
        finally:
            algo.done()
    reached = [c for c in cands if c.reached and c.qps]
    if not reached:
        raise InputError(f"no candidate reached recall@{k} >= {target_recall}, not even exact search: check the data")
    winner = max(reached, key=lambda c: c.qps)
    return winner, cands


def _plans(ds: Dataset, backends, M_values, ef_construction: int, hnsw_faiss_M: int, log
           ) -> list[tuple[str, type[Algorithm], dict, str | None, tuple, dict]]:
    """``(backend, adapter, build params, swept query parameter, its steps, fixed query params)`` per candidate."""
    from annrec.index import suggest_nlist

    plans: list[tuple[str, type[Algorithm], dict, str | None, tuple, dict]] = []
    for name, cls in (("hnswlib", AnnrecHnswlib), ("usearch", AnnrecUsearch)):
        if name not in backends:
            continue
        if not available(cls):
            log(f"{name}: not installed (pip install {cls.package}); skipped")
            continue
        for M in M_values:
            plans.append((name, cls, {"M": int(M), "ef_construction": int(ef_construction)}, "ef", EF_STEPS, {}))
    if "pynndescent" in backends:
        if not available(AnnrecPynndescent):
            log(f"pynndescent: not installed (pip install {AnnrecPynndescent.package}); skipped")
        else:
            for n in PYNNDESCENT_NEIGHBORS:
                plans.append(("pynndescent", AnnrecPynndescent, {"n_neighbors": int(n)}, "epsilon", EPSILON_STEPS,
                              {}))
    if "faiss-ivf" in backends:
        nlist = suggest_nlist(len(ds.train))
        steps = tuple(p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048) if p < nlist) + (nlist,)
        plans.append(("faiss", AnnrecFaiss, {"factory": f"IVF{nlist},Flat"}, "nprobe", steps, {}))
    if "faiss-hnsw" in backends:
        plans.append(("faiss", AnnrecFaiss, {"factory": f"HNSW{hnsw_faiss_M}"}, "efSearch", EFSEARCH_STEPS, {}))
    if "faiss-hnsw-sq8" in backends:
        plans.append(("faiss", AnnrecFaiss, {"factory": "HNSW16,SQ8,RFlat"}, "efSearch", EFSEARCH_STEPS,
                      {"k_factor": SQ8_K_FACTOR}))
    plans.append(("faiss", AnnrecFaiss, {"factory": "Flat"}, None, (), {}))
    return plans


def write_spec(path: str | Path, winner: Candidate, metric: str, *, target: float, k: int, n_queries: int,
               source: str, mode: str) -> Path:
    """Write the winner as an index specification YAML (the format of ``index/*.yaml``), atomically."""
    import yaml

    from annrec._io import atomic_write_text

    from annrec.index.spec import IndexSpec

    spec = IndexSpec.model_validate(winner.spec(metric)).model_dump(exclude_none=True)  # the presets' format
    head = (f"# Written by `annrec index tune --target-recall {target}` on {source}\n"
            f"# ({n_queries} held-out queries, k={k}, {mode}-query mode): recall@{k} {winner.recall:.4f}, "
            f"{winner.qps:,.0f} QPS, build {winner.build_time_s:.1f} s.\n"
            f"# Build it with: annrec index build --spec {Path(path).name} ...\n")
    text = head + yaml.safe_dump(spec, sort_keys=False)
    atomic_write_text(path, text)
    return Path(path)
