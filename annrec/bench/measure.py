"""Timing of one adapter on one query set (ANN-Benchmarks' protocol) and scoring of its answers.

See :mod:`annrec.bench.runner` for the protocol: single mode times every query on one thread, batch mode one
call on all cores; the CPU time of the queries is recorded beside the wall time.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from annrec.bench.adapter_base import Algorithm, n_cores
from annrec.bench.datasets import Dataset
from annrec.bench.definitions import MODES
from annrec.bench.groundtruth import GroundTruth, knn_recall, pair_distances, threshold_recall
from annrec.errors import InputError


def _thread_limits(n: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


def _set_global_threads(n: int) -> None:
    try:
        import faiss

        faiss.omp_set_num_threads(int(n))
    except ImportError:  # pragma: no cover
        pass


def measure(algo: Algorithm, Q: np.ndarray, k: int, mode: str, *, runs: int = 3, warmup: int = 500,
            threads: int | None = None, long_run_s: float = 60.0) -> dict[str, Any]:
    """Time ``algo`` on queries ``Q`` in ``mode`` (see the module docstring).

    Besides wall-clock time, the CPU time of the queries is recorded (``time.thread_time`` around each
    query in single mode; ``time.process_time``, all threads, around the batch call): on a machine
    shared with other work, CPU time is far less disturbed than wall time, which makes it the better
    basis for comparing two implementations of the same search (the overhead ratios).

    Returns:
        ``{"ids": int64 (nq, k), "search_time_s", "run_times_s", "cpu_time_s" (minimum over passes),
        "latencies_s" (single mode), "threads"}``.
    """
    threads = 1 if mode == "single" else (threads or n_cores())
    nq = len(Q)
    algo.set_threads(threads)
    _set_global_threads(threads)
    best_total, best_ids, best_lat, times, best_cpu = np.inf, None, None, [], np.inf
    with _thread_limits(threads):
        if mode == "single":
            for i in range(min(warmup, nq)):
                algo.query(Q[i], k)
            perf, cpu = time.perf_counter, time.thread_time
            for _ in range(runs):
                ids = np.full((nq, k), -1, dtype=np.int64)
                lat = np.empty(nq, dtype=np.float64)
                cpus = np.empty(nq, dtype=np.float64)
                gc.collect(1)  # young generations: cheap, clears the last pass's garbage
                for i in range(nq):
                    q = Q[i]
                    c0 = cpu()
                    t0 = perf()
                    r = algo.query(q, k)
                    t1 = perf()
                    cpus[i] = cpu() - c0
                    lat[i] = t1 - t0
                    r = np.asarray(r).ravel()[:k]
                    ids[i, :len(r)] = r
                total = float(lat.sum())
                best_cpu = min(best_cpu, float(cpus.sum()))
                times.append(total)
                if total < best_total:
                    best_total, best_ids, best_lat = total, ids, lat
                if total > long_run_s:
                    break
        elif mode == "batch":
            if warmup:
                algo.batch_query(Q[:min(warmup, nq)], k)
            for _ in range(runs):
                gc.collect(1)
                c0 = time.process_time()
                t0 = time.perf_counter()
                res = algo.batch_query(Q, k)
                total = time.perf_counter() - t0
                best_cpu = min(best_cpu, time.process_time() - c0)
                res = np.asarray(res)
                ids = np.full((nq, k), -1, dtype=np.int64)
                ids[:, :min(k, res.shape[1])] = res[:, :k]
                times.append(total)
                if total < best_total:
                    best_total, best_ids = total, ids
                if total > long_run_s:
                    break
        else:
            raise InputError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    return {"ids": best_ids, "search_time_s": best_total, "run_times_s": times, "latencies_s": best_lat,
            "cpu_time_s": best_cpu, "threads": threads}


def score(ds: Dataset, gt: GroundTruth, ids: np.ndarray, k: int) -> dict[str, float]:
    """Mean recall@k (ids) and distance-threshold recall of returned rows ``ids`` ``(nq, k)``."""
    rec = knn_recall(ids, gt.neighbors, k)
    dist = pair_distances(ds.train, ds.test, ids, ds.metric)
    thr = threshold_recall(dist, gt.distances, k)
    return {"recall": float(rec.mean()), "recall_threshold": float(thr.mean())}


def merge(best: dict[str, Any] | None, m: dict[str, Any]) -> dict[str, Any]:
    """Combine two :func:`measure` results of the same configuration (interleaved passes): the faster pass's
    ids and latencies, every pass time, the smaller CPU time."""
    if best is None:
        return dict(m, run_times_s=list(m["run_times_s"]))
    out = dict(m if m["search_time_s"] < best["search_time_s"] else best)
    out["run_times_s"] = best["run_times_s"] + list(m["run_times_s"])
    out["cpu_time_s"] = min(best["cpu_time_s"], m["cpu_time_s"])
    return out
