"""FAISS HNSW: what efConstruction buys (recall@10 against QPS) and costs (build seconds).

    OMP_WAIT_POLICY=PASSIVE python bench/faiss_hnsw_build.py --n 60000 \
        --factory 'HNSW{M}' 'HNSW{M},SQ8' --M 16 --json bench/results/faiss_hnsw_build.json

Fashion-MNIST (Debian package dataset-fashion-mnist): the first ``--n`` training images as the base, ``--queries``
test images as queries, exact neighbours by brute force; single-query search on one thread through annrec's FAISS
backend. Every efConstruction variant is built first, then the timed passes are interleaved (for each efSearch and
repetition, one pass per variant), so the load of a shared machine hits all variants alike; QPS is reported from
wall time and from the thread's CPU time (``time.thread_time``), best of ``--reps``. Recall at a fixed efSearch is
not the comparison: an efConstruction below the level-0 degree ``2·M`` skips FAISS's neighbour pruning, which gives
denser, slower graphs with a higher recall per efSearch. The summary is the best CPU-time QPS at each recall level.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _recall(found: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), gt.tolist())]))


def _pass(index, q: np.ndarray, efs: int) -> tuple[np.ndarray, float, float]:
    """One single-query pass: (ids (nq, 10), wall seconds, thread CPU seconds)."""
    out = np.empty((len(q), 10), dtype=np.int64)
    params = {"ef": efs}
    c0, t0 = time.thread_time(), time.perf_counter()
    for i in range(len(q)):
        out[i] = index.search(q[i:i + 1], 10, params=params, threads=1)[0][0]
    return out, time.perf_counter() - t0, time.thread_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--factory", nargs="+", default=["HNSW{M}"])
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, nargs="+", default=[40, 100, 200])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[10, 16, 24, 32, 64])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.9, 0.95, 0.98, 0.99])
    ap.add_argument("--json")
    args = ap.parse_args()

    from annrec.bench.datasets import fashion_mnist
    from annrec.index import build_index

    ds = fashion_mnist()
    x, q = ds.train[:args.n], np.ascontiguousarray(ds.test[:args.queries])
    gt = build_index(x, np.arange(len(x)), "l2", backend="faiss", factory="Flat").search(q, 10)[0]
    out = {"n": len(x), "queries": len(q), "M": args.M, "reps": args.reps, "load_average": os.getloadavg(),
           "rows": [], "best_qps_cpu": {}}
    built = {}
    for factory in args.factory:
        for efc in args.ef_construction:
            t0 = time.perf_counter()
            built[factory, efc] = (build_index(x, np.arange(len(x)), "l2", backend="faiss", factory=factory,
                                               M=args.M, ef_construction=efc), time.perf_counter() - t0)
            print(f"{factory} M={args.M} efConstruction {efc}: built in {built[factory, efc][1]:.1f} s", flush=True)
    for efs in args.ef_search:
        best: dict = {}
        for _ in range(args.reps):
            for key, (index, _b) in built.items():
                found, wall, cpu = _pass(index, q, efs)
                w, c = best.get(key, (np.inf, np.inf, None))[:2]
                best[key] = (min(w, wall), min(c, cpu), found)
        for (factory, efc), (wall, cpu, found) in best.items():
            row = {"factory": factory, "ef_construction": efc, "efSearch": efs,
                   "build_s": round(built[factory, efc][1], 2), "recall@10": round(_recall(found, gt), 4),
                   "qps": round(len(q) / wall), "qps_cpu": round(len(q) / cpu)}
            out["rows"].append(row)
            print(f"{factory:12s} efC {efc:4d}  build {row['build_s']:6.1f} s  efSearch {efs:3d}  recall@10 "
                  f"{row['recall@10']:.4f}  {row['qps']:7d} QPS wall  {row['qps_cpu']:7d} QPS CPU", flush=True)
    for factory in args.factory:
        for efc in args.ef_construction:
            rows = [r for r in out["rows"] if r["factory"] == factory and r["ef_construction"] == efc]
            out["best_qps_cpu"][f"{factory} efC {efc}"] = {
                str(lv): max((r["qps_cpu"] for r in rows if r["recall@10"] >= lv), default=None) for lv in args.levels}
            print(f"{factory} efC {efc}: best CPU QPS at recall >= {args.levels}: "
                  f"{list(out['best_qps_cpu'][f'{factory} efC {efc}'].values())}")
    out["load_average_after"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
