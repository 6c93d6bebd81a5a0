"""Where does annrec's index layer spend its time per query? (single-query mode, CPU time)

1. The fixed cost per call: ``Index.search`` against the raw library call on the very same, tiny
   index (200 vectors of dim 784), so that the search itself is short and the difference is the
   layer's own Python work; passes interleaved, 15 rounds, thread CPU time.
2. On a Fashion-MNIST slice (annrec hnswlib and FAISS IVF indexes): raw call, ``Index.search`` and the
   steps ``Index.search`` adds (input validation, k check, backend wrapper, label -> id mapping).

The QPS ratio at a given operating point follows as ``t / (t + overhead)`` for a raw query time ``t``.
Prints tables and writes JSON.

    python bench/ann_overhead_profile.py --n-train 20000 --n-queries 1000 --json bench/results/ann_overhead_profile.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def per_call_us(fn, queries, reps: int) -> float:
    """Minimum over ``reps`` passes of the mean thread CPU time of ``fn(q)`` per query, in microseconds."""
    best = np.inf
    for _ in range(reps):
        c0 = time.thread_time()
        for q in queries:
            fn(q)
        best = min(best, (time.thread_time() - c0) / len(queries))
    return 1e6 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--ef", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import faiss

    from annrec._validate import as_matrix, check_k
    from annrec.bench.datasets import fashion_mnist
    from annrec.index import build_index

    faiss.omp_set_num_threads(1)
    fixed = {}
    rng = np.random.default_rng(0)
    tx, tq = rng.standard_normal((200, 784)).astype(np.float32), rng.standard_normal((2000, 784)).astype(np.float32)
    for backend, params in (("hnswlib", {"M": 8, "ef_construction": 20, "ef": 10}),
                            ("faiss", {"factory": "IVF4,Flat", "nprobe": 1})):
        tiny = build_index(tx, np.arange(len(tx)), metric="l2", backend=backend, **params)
        traw = tiny.raw
        if backend == "hnswlib":
            def rawf(q, traw=traw):
                return traw.knn_query(q[None, :], k=10, num_threads=1)
        else:
            def rawf(q, traw=traw):
                return traw.search(q[None, :], 10)
        a, r = [], []
        for _ in range(15):
            a.append(per_call_us(lambda q, t=tiny: t.search(q, 10, threads=1), tq, 1))
            r.append(per_call_us(rawf, tq, 1))
        a, r = np.array(a), np.array(r)
        fixed[backend] = {"annrec_us": float(a.min()), "raw_us": float(r.min()),
                          "overhead_us": float(a.min() - r.min()), "overhead_median_us": float(np.median(a - r))}
        print(f"fixed cost per call, {backend} (tiny index): Index.search {a.min():.2f} µs, raw {r.min():.2f} µs "
              f"-> overhead {a.min() - r.min():.2f} µs (median of paired rounds {np.median(a - r):.2f})")

    fm = fashion_mnist()
    X, Q = fm.train[:args.n_train], fm.test[:args.n_queries]
    ids = np.arange(len(X))
    rows = []
    for backend, params, qp in (("hnswlib", {"M": 16, "ef_construction": 100}, {"ef": args.ef}),
                                ("faiss", {"factory": "IVF128,Flat"}, {"nprobe": args.nprobe})):
        idx = build_index(X, ids, metric="l2", backend=backend, **params)
        idx.set_query_params(**qp)
        raw = idx.raw
        if backend == "hnswlib":
            def raw_call(q):
                return raw.knn_query(q[None, :], k=10, num_threads=1)
        else:
            def raw_call(q):
                return raw.search(q[None, :], 10)
        labels = np.zeros((1, 10), dtype=np.int64)
        steps = {
            "raw library call": raw_call,
            "Index.search": lambda q: idx.search(q, 10, threads=1),
            "  as_matrix (validation)": lambda q: as_matrix(q[None, :], dim=idx.dim, name="queries"),
            "  check_k": lambda q: check_k(10, limit=len(idx)),
            "  _backend_search": lambda q: idx._backend_search(q[None, :], 10, None, None, 1),
            "  label -> id mapping": lambda q: idx._ext_padded[labels],
        }
        res = {name: per_call_us(fn, Q, args.reps) for name, fn in steps.items()}
        # interleave the two headline numbers once more so that load changes hit both alike
        a = min(per_call_us(steps["Index.search"], Q, 1) for _ in range(args.reps))
        r = min(per_call_us(steps["raw library call"], Q, 1) for _ in range(args.reps))
        res["Index.search"], res["raw library call"] = min(a, res["Index.search"]), min(r, res["raw library call"])
        row = {"backend": backend, "params": {**params, **qp}, "us_per_query": res,
               "overhead_us": res["Index.search"] - res["raw library call"],
               "qps_ratio_cpu": res["raw library call"] / res["Index.search"]}
        rows.append(row)
        print(f"\n{backend} {row['params']}  (CPU µs per query, 1 thread, {len(Q)} queries, best of {args.reps})")
        for name, v in res.items():
            print(f"  {name:28s} {v:8.2f}")
        print(f"  overhead {row['overhead_us']:.2f} µs -> QPS ratio {row['qps_ratio_cpu']:.3f}")
    if args.json:
        from annrec._io import write_json

        write_json(args.json, {"fixed_overhead": fixed, "rows": rows, "n_train": len(X), "n_queries": len(Q),
                               "clock": "time.thread_time (CPU time of the calling thread)"})


if __name__ == "__main__":
    main()
