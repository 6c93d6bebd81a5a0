"""FAISS HNSW: what efConstruction buys (recall@10 at a few efSearch values) and costs (build seconds).

    OMP_NUM_THREADS=2 python bench/faiss_hnsw_build.py --n 20000 --json bench/results/faiss_hnsw_build.json

Fashion-MNIST (Debian package dataset-fashion-mnist): the first ``--n`` training images as the base, 1,000
test images as queries, exact neighbours by brute force; single-query search on one thread.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--factory", default="HNSW{M}")
    ap.add_argument("--M", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, nargs="+", default=[40, 100, 200])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[10, 16, 32, 64])
    ap.add_argument("--json")
    args = ap.parse_args()

    from annrec.bench.datasets import fashion_mnist
    from annrec.index import build_index

    ds = fashion_mnist()
    x, q = ds.train[:args.n], ds.test[:1000]
    gt = build_index(x, np.arange(len(x)), "l2", backend="faiss", factory="Flat").search(q, 10)[0]
    out = {"n": len(x), "queries": len(q), "M": args.M, "load_average": os.getloadavg(), "rows": []}
    for efc in args.ef_construction:
        t0 = time.perf_counter()
        index = build_index(x, np.arange(len(x)), "l2", backend="faiss", factory=args.factory, M=args.M,
                            ef_construction=efc)
        build = time.perf_counter() - t0
        for efs in args.ef_search:
            t0 = time.perf_counter()
            found = np.vstack([index.search(q[i:i + 1], 10, params={"ef": efs}, threads=1)[0] for i in range(len(q))])
            qps = len(q) / (time.perf_counter() - t0)
            rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), gt.tolist())]))
            out["rows"].append({"ef_construction": efc, "efSearch": efs, "build_s": round(build, 2),
                                "recall@10": round(rec, 4), "qps": round(qps)})
            print(f"efConstruction {efc:4d}  build {build:6.1f} s  efSearch {efs:3d}  recall@10 {rec:.4f}  "
                  f"{qps:7.0f} QPS")
    out["load_average_after"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
