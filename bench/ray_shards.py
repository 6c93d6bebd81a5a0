"""Sharded hnswlib indexes on Fashion-MNIST: recall at the same ef, and batched QPS through Ray actors.

    python bench/ray_shards.py --n 60000 --json bench/results/ray_shards.json

Fashion-MNIST (Debian package dataset-fashion-mnist, 60,000 × 784, Euclidean), 1,000 test queries, k = 10,
hnswlib M=16 ef_construction=100 shards, ``hash`` partition. Rows: one in-process index; 2 and 4 shards in
this process; 2 shards in Ray actors (local Ray, 2 CPUs). QPS in batches of ``--batch`` queries (each shard
gets one call per batch) and one query at a time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _recall(found: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / gt.shape[1] for a, b in zip(found.tolist(), gt.tolist())]))


def _qps(index, q: np.ndarray, k: int, ef: int, batch: int) -> tuple[float, float, np.ndarray]:
    found = []
    t0 = time.perf_counter()
    for s in range(0, len(q), batch):
        found.append(index.search(q[s:s + batch], k, params={"ef": ef})[0])
    batched = len(q) / (time.perf_counter() - t0)
    n = min(200, len(q))
    t0 = time.perf_counter()
    for i in range(n):
        index.search(q[i:i + 1], k, params={"ef": ef})
    single = n / (time.perf_counter() - t0)
    return batched, single, np.vstack(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--ef", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--json")
    args = ap.parse_args()

    from annrec.bench.datasets import fashion_mnist
    from annrec.index import build_index, load_index
    from annrec.index.ray_shards import init_ray
    from annrec.index.sharded import build_sharded

    ds = fashion_mnist()
    x, q = ds.train[:args.n], ds.test[:1000]
    ids = np.arange(len(x))
    gt = build_index(x, ids, "l2", backend="faiss", factory="Flat").search(q, 10)[0]
    params = dict(M=16, ef_construction=100)
    out = {"n": len(x), "queries": len(q), "batch": args.batch, "load_average": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {"1 index (in process)": build_index(x, ids, "l2", backend="hnswlib", **params)}
        for s in (2, 4):
            configs[f"{s} shards (in process)"] = load_index(build_sharded(x, ids, "l2", f"{tmp}/s{s}", shards=s,
                                                                           backend="hnswlib", **params))
        init_ray(num_cpus=2, temp_dir=f"{tmp}/ray")
        configs["2 shards (Ray actors)"] = load_index(f"{tmp}/s2", backend="ray")
        for name, index in configs.items():
            for ef in args.ef:
                _qps(index, q[:100], 10, ef, args.batch)  # warm-up
                batched, single, found = _qps(index, q, 10, ef, args.batch)
                row = {"config": name, "ef": ef, "recall@10": round(_recall(found, gt), 4),
                       "batched_qps": round(batched), "single_qps": round(single)}
                out["rows"].append(row)
                print(f"{name:24s} ef={ef:3d} recall@10 {row['recall@10']:.4f}  batches of {args.batch}: "
                      f"{batched:7.0f} q/s  one at a time: {single:6.0f} q/s")
        import ray

        ray.shutdown()
    out["load_average_after"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
