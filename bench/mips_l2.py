"""Does the MIPS -> L2 reduction (Bachrach et al. 2014; ``mips_l2=True`` of the FAISS backend) help
approximate maximum inner product search on annrec's own embeddings? Side by side, same index type, same
queries: recall@10 against exact inner-product search, and single-query QPS (one thread).

Each artifact's user (query) vectors are the queries; the ground truth is the exact top-10 by inner product
over all items (no seen-item filtering: this measures the index, not the recommender).

    python bench/mips_l2.py bench/cache/als-ml-small artifacts/quickstart/mf models/seq-quick \
        --json bench/results/mips_l2.json

The artifacts of bench/results/mips_l2.json: ALS 64 factors as cached by ``annrec bench rec`` (fitted on the
temporal training split), the MF of ``annrec quickstart`` and a short sequence run (``annrec train sequence
--max-windows-per-user 20 --epochs 3 --val-fraction 0 --out models/seq-quick``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from annrec._io import write_json
from annrec.embeddings import Embeddings
from annrec.index import build_index


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def qps(index, q: np.ndarray, k: int, params: dict, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for row in q:
            index.search(row[None, :], k, params=params, threads=1)
        best = min(best, time.perf_counter() - t0)
    return len(q) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", help="Embeddings folders with metric ip and user vectors")
    ap.add_argument("--ivf", default="IVF{nlist},Flat")
    ap.add_argument("--nprobe", default="1,2,4,8,16,32")
    ap.add_argument("--hnsw", default="HNSW32")
    ap.add_argument("--ef", default="16,32,64,128")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report = {"k": args.k, "rows": []}
    for path in args.artifacts:
        emb = Embeddings.load(path)
        if emb.metric != "ip" or emb.queries is None:
            raise SystemExit(f"{path}: needs an ip artifact with query (user) vectors")
        x, q = emb.vectors, np.ascontiguousarray(emb.queries, dtype=np.float32)
        exact = build_index(x, np.arange(len(x)), "ip", backend="faiss", factory="Flat")
        truth = exact.search(q, args.k)[0]
        norms = np.linalg.norm(x, axis=1)
        print(f"{path}: {len(x)} items x {x.shape[1]}, {len(q)} queries, item norm min/median/max "
              f"{norms.min():.3g}/{np.median(norms):.3g}/{norms.max():.3g}", flush=True)
        for factory, pname, values in ((args.ivf, "nprobe", args.nprobe), (args.hnsw, "efSearch", args.ef)):
            built = {}
            for mips in (False, True):
                t0 = time.perf_counter()
                built[mips] = build_index(x, np.arange(len(x)), "ip", backend="faiss", factory=factory,
                                          mips_l2=mips)
                built[mips].build_s = time.perf_counter() - t0
            for v in [int(s) for s in values.split(",") if s]:
                for mips in (False, True):  # interleaved: the two variants see the same machine state
                    idx = built[mips]
                    p = {pname: v}
                    found = idx.search(q, args.k, params=p)[0]
                    row = {"artifact": path, "factory": idx.params.get("factory_resolved", factory),
                           "mips_l2": mips, pname: v, "recall@10": round(recall_at(found, truth), 4),
                           "qps": round(qps(idx, q, args.k, p, args.repeats), 0),
                           "build_s": round(idx.build_s, 2)}
                    report["rows"].append(row)
                    print(row, flush=True)
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
