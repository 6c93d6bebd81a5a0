"""The cost of annrec's index layer over the raw library, measured on one shared index.

The sweep (:func:`annrec.bench.runner.run_benchmark`) runs ``annrec-hnswlib`` next to ``hnswlib``
and ``annrec-faiss`` next to ``faiss`` as separate builds; on a busy machine and with multi-threaded
(non-deterministic) graph construction, two builds differ a little. Here the raw adapter wraps the
*very index object* annrec built (``Index.raw``), so both paths search the same structure with the
same parameters, and their timed passes are interleaved (A B, B A, A B, ...) so that load changes on a
shared machine hit both alike. QPS is the best of ``rounds`` passes for each; the ratio is
``QPS(annrec) / QPS(raw)`` (1.0 = no overhead). The same ratio from CPU time (``ratio_cpu``: thread CPU
time of the single queries, process CPU time of a batch) is robust to the time slices other processes
take on a busy machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from annrec.bench.algorithms import AnnrecFaiss, AnnrecHnswlib, RawFaiss, RawHnswlib
from annrec.bench.datasets import Dataset
from annrec.bench.groundtruth import GroundTruth, knn_recall
from annrec.bench.runner import machine_info, measure
from annrec.errors import InputError

PAIRS = {"hnswlib": (AnnrecHnswlib, RawHnswlib), "faiss": (AnnrecFaiss, RawFaiss)}


def shared_pair(library: str, metric: str, build_args: dict[str, Any], X: np.ndarray):
    """Build annrec's index once and return ``(annrec adapter, raw adapter over the same index)``."""
    try:
        a_cls, r_cls = PAIRS[library]
    except KeyError:
        raise InputError(f"unknown library {library!r}: use {', '.join(PAIRS)}") from None
    a = a_cls(metric, **build_args)
    a.fit(X)
    r = r_cls(metric, **build_args)
    if library == "hnswlib":
        r.p = a.index.raw
        r.normalize_queries = metric == "cosine"  # annrec keeps cosine as "ip" over normalised vectors
    else:
        r.index = a.index.raw
    return a, r


def measure_overhead(ds: Dataset, gt: GroundTruth | None, library: str, build_args: dict[str, Any],
                     query_args: list[dict[str, Any]], *, k: int = 10, modes=("single", "batch"),
                     rounds: int = 5, warmup: int = 500, log: Callable[[str], None] = print) -> list[dict]:
    """Interleaved QPS of annrec's backend and the raw library on one shared index.

    Returns:
        One row per (query arguments, mode): ``qps_annrec``, ``qps_raw``, ``ratio`` (best/best),
        ``ratio_median`` (median of per-round ratios), recalls, times per round, machine description.
    """
    if rounds < 1:
        raise InputError(f"rounds must be >= 1; got {rounds}")
    log(f"{library} {build_args}: building the shared index ...")
    a, r = shared_pair(library, ds.metric, build_args, ds.train)
    Q = np.ascontiguousarray(ds.test, dtype=np.float32)
    rows = []
    machine = machine_info()
    try:
        for qa in query_args:
            a.set_query_arguments(**qa)
            r.set_query_arguments(**qa)
            for mode in modes:
                ta, tr, ca, cr, ids_a, ids_r = [], [], [], [], None, None
                for i in range(rounds):
                    order = [("a", a), ("r", r)] if i % 2 == 0 else [("r", r), ("a", a)]
                    for tag, algo in order:
                        m = measure(algo, Q, k, mode, runs=1, warmup=warmup if i == 0 else 0)
                        (ta if tag == "a" else tr).append(m["search_time_s"])
                        (ca if tag == "a" else cr).append(m["cpu_time_s"])
                        if tag == "a":
                            ids_a = m["ids"]
                        else:
                            ids_r = m["ids"]
                row = {"library": library, "mode": mode, "build_args": build_args, "query_args": qa,
                       "n_queries": len(Q), "k": k, "rounds": rounds,
                       "qps_annrec": len(Q) / min(ta), "qps_raw": len(Q) / min(tr),
                       "ratio": min(tr) / min(ta), "ratio_median": float(np.median(np.asarray(tr) / np.asarray(ta))),
                       "ratio_cpu": min(cr) / min(ca), "qps_cpu_annrec": len(Q) / min(ca),
                       "qps_cpu_raw": len(Q) / min(cr), "times_annrec_s": ta, "times_raw_s": tr,
                       "cpu_annrec_s": ca, "cpu_raw_s": cr, "same_results": bool((ids_a == ids_r).all()),
                       "dataset": ds.name, "machine": machine}
                if gt is not None:
                    row["recall_annrec"] = float(knn_recall(ids_a, gt.neighbors, k).mean())
                    row["recall_raw"] = float(knn_recall(ids_r, gt.neighbors, k).mean())
                rows.append(row)
                log(f"{library} {build_args} {qa} [{mode}]: annrec {row['qps_annrec']:,.0f} QPS, raw "
                    f"{row['qps_raw']:,.0f} QPS, ratio {row['ratio']:.3f} (median of rounds {row['ratio_median']:.3f}; "
                    f"CPU time {row['ratio_cpu']:.3f})")
    finally:
        a.done()
        r.done()
    return rows


def overhead_table(rows: list[dict]) -> str:
    """Markdown table of :func:`measure_overhead` rows."""
    lines = ["| library | mode | parameters | annrec QPS | raw QPS | ratio (best/best) | ratio (median) | "
             "ratio (CPU time) | same ids |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        params = ", ".join(f"{a}={b}" for a, b in {**r["build_args"], **r["query_args"]}.items())
        lines.append(f"| {r['library']} | {r['mode']} | {params} | {r['qps_annrec']:,.0f} | {r['qps_raw']:,.0f} | "
                     f"{r['ratio']:.3f} | {r['ratio_median']:.3f} | {r['ratio_cpu']:.3f} | "
                     f"{'yes' if r['same_results'] else 'no'} |")
    return "\n".join(lines)
