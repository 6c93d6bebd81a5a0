"""Cosine against inner product through annrec's FAISS backend, and both against FAISS called directly.

    python bench/faiss_cosine_overhead.py --n 20000 \
        --json bench/results/faiss_cosine_overhead.json

Fashion-MNIST (Debian package dataset-fashion-mnist): the first ``--n`` training images, one FAISS index per
metric (``--factory``, default ``HNSW16`` at efSearch 16); ``--queries`` test images searched one at a time
(k = 10, one thread). Four loops, interleaved round by round so the machine's load hits all alike:

* ``raw ip``: ``faiss.Index.search`` on the ip index, query as given;
* ``raw cosine``: the query normalised with numpy (``q / ||q||``), then ``faiss.Index.search`` on the cosine
  index (what a user calling FAISS directly writes);
* ``annrec ip`` / ``annrec cosine``: ``Index.search(q, 10, threads=1)`` on the same two indexes.

Times are the calling thread's CPU time (``time.thread_time``); the figure is the median over rounds of
annrec's time per query divided by the raw library's, per metric.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _loop(fn, q: np.ndarray) -> float:
    c0 = time.thread_time()
    for i in range(len(q)):
        fn(q[i:i + 1])
    return time.thread_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--factory", default="HNSW16")
    ap.add_argument("--ef-search", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()

    import faiss

    from annrec.bench.datasets import fashion_mnist
    from annrec.index import build_index

    ds = fashion_mnist()
    x = np.ascontiguousarray(ds.train[:args.n], dtype=np.float32)
    q = np.ascontiguousarray(ds.test[:args.queries], dtype=np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    hnsw = {"efSearch": args.ef_search} if "HNSW" in args.factory else {}
    cos = build_index(x, np.arange(len(x)), "cosine", backend="faiss", factory=args.factory, **hnsw)
    ip = build_index(xn, np.arange(len(x)), "ip", backend="faiss", factory=args.factory, **hnsw)
    raw_cos, raw_ip = cos.raw, ip.raw
    qn = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
    faiss.omp_set_num_threads(1)

    def raw_cosine(v):
        return raw_cos.search(v / np.linalg.norm(v, axis=1, keepdims=True), 10)

    loops = {"raw ip": (lambda v: raw_ip.search(v, 10), qn), "raw cosine": (raw_cosine, q),
             "annrec ip": (lambda v: ip.search(v, 10, threads=1), qn),
             "annrec cosine": (lambda v: cos.search(v, 10, threads=1), q)}
    same = (cos.search(q[:200], 10, threads=1)[0] == ip.search(qn[:200], 10, threads=1)[0]).mean()
    for fn, v in loops.values():  # warm-up
        _loop(fn, v[:200])
    times: dict[str, list[float]] = {name: [] for name in loops}
    load0 = os.getloadavg()
    for r in range(args.rounds):
        names = list(loops)[r % 4:] + list(loops)[:r % 4]
        for name in names:
            fn, v = loops[name]
            times[name].append(_loop(fn, v) / len(v) * 1e6)
    med = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {m: float(np.median(np.array(times[f"annrec {m}"]) / np.array(times[f"raw {m}"])))
              for m in ("ip", "cosine")}
    out = {"n": len(x), "queries": len(q), "factory": args.factory, "efSearch": args.ef_search, "rounds": args.rounds,
           "us_per_query_cpu_median": med, "annrec_over_raw": ratios,
           "cosine_minus_ip_us": med["annrec cosine"] - med["annrec ip"],
           "cosine_ids_equal_ip_on_normalised": float(same), "load_average": [load0, os.getloadavg()]}
    for name, t in med.items():
        print(f"{name:14s} {t:8.2f} us/query (CPU, median of {args.rounds} rounds)")
    print(f"annrec / raw: ip {ratios['ip']:.3f}x, cosine {ratios['cosine']:.3f}x; annrec cosine - annrec ip: "
          f"{out['cosine_minus_ip_us']:+.2f} us; same ids as ip on normalised data: {same:.4f}")
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
