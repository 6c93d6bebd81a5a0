"""What excluding a user's seen items costs a served recommendation, side by side with the plain search.

For each index (FAISS IVF, FAISS Flat, hnswlib) and each test user, one query at a time on one thread
(ANN-Benchmarks' single-query mode); the three calls run back to back on each user (order rotated), so
load changes hit all methods alike:

* ``search``      ``index.search(user_vector, k)`` — unfiltered, the floor;
* ``search+deny`` ``index.search(user_vector, k, denied_ids=seen)`` — the exclusion inside the index;
* ``search+deny_list`` the same with the deny-list resolved beforehand (``index.deny_list(seen)``, as the
  Recommender keeps it per user while the index does not change);
* ``recommend``   ``Recommender(emb, index).recommend(user, k)`` — the whole served path (user lookup,
  seen items, exclusion, k check, hits with metadata);
* ``recommend_all`` the same with ``exclude_seen=False``: the served path without the exclusion, so
  ``recommend / recommend_all`` is what the exclusion costs a served recommendation.

Users are those with between ``--min-seen`` and ``--max-seen`` seen items (default 130–200, around
the 165 of the median ml-latest-small user of the MF artifact). Best of ``--runs`` passes, microseconds
per query. The resolved deny-list is skipped where ``Index.deny_list`` does not exist, so the script also
measures older checkouts (``PYTHONPATH=<old checkout> python bench/seen_exclusion.py ...``).

    annrec train mf --out artifacts/mf
    OMP_NUM_THREADS=1 python bench/seen_exclusion.py --embeddings artifacts/mf --json bench/results/seen_exclusion.json
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", required=True, help="an Embeddings folder with user vectors and seen items")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--min-seen", type=int, default=130)
    ap.add_argument("--max-seen", type=int, default=200)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import faiss

    import annrec
    from annrec.embeddings import Embeddings
    from annrec.index import build_index
    from annrec.recommend import Recommender

    faiss.omp_set_num_threads(1)
    emb = Embeddings.load(args.embeddings)
    counts = np.diff(emb.seen.indptr)
    users = [emb.query_ids[r].item() for r in np.flatnonzero((counts >= args.min_seen) & (counts <= args.max_seen))]
    seen = {u: emb.seen_ids(u) for u in users}
    queries = {u: np.ascontiguousarray(emb.queries[emb.query_row_of(u)][None, :]) for u in users}
    configs = {
        "faiss IVF64,Flat nprobe=8": dict(backend="faiss", factory="IVF64,Flat", nprobe=8),
        "faiss Flat": dict(backend="faiss", factory="Flat"),
        "hnswlib M=16 ef=50": dict(backend="hnswlib", M=16, ef_construction=200, ef=50),
    }
    out = {"annrec": getattr(annrec, "__version__", "?"), "embeddings": os.path.basename(args.embeddings.rstrip("/")),
           "n_items": len(emb), "dim": emb.dim, "users": len(users),
           "mean_seen": float(np.mean([len(s) for s in seen.values()])), "k": args.k,
           "load_average": os.getloadavg(), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "results": {}}
    k = args.k
    for name, cfg in configs.items():
        index = build_index(emb.vectors, emb.ids, emb.metric, **cfg)
        rec = Recommender(emb, index)
        methods = {
            "search": lambda u: index.search(queries[u], k, threads=1),
            "search+deny": lambda u: index.search(queries[u], k, denied_ids=seen[u], threads=1),
            "recommend": lambda u: rec.recommend(u, k),
            "recommend_all": lambda u: rec.recommend(u, k, exclude_seen=False),
        }
        if hasattr(index, "deny_list"):
            resolved = {u: index.deny_list(seen[u]) for u in users}
            methods["search+deny_list"] = lambda u: index.search(queries[u], k, denied_ids=resolved[u], threads=1)
        for u in users[:20]:  # warm-up
            for fn in methods.values():
                fn(u)
        best = {m: np.inf for m in methods}
        names = list(methods)
        perf = time.perf_counter
        gc.collect()
        gc.disable()
        try:
            for _ in range(args.runs):
                total = dict.fromkeys(names, 0.0)
                for j, u in enumerate(users):  # every method on the same user back to back, order rotated
                    for m in names[j % len(names):] + names[:j % len(names)]:
                        fn = methods[m]
                        t0 = perf()
                        fn(u)
                        total[m] += perf() - t0
                for m in names:
                    best[m] = min(best[m], total[m])
        finally:
            gc.enable()
        us = {m: best[m] / len(users) * 1e6 for m in methods}
        ratios = {"deny_ratio": us["search+deny"] / us["search"],
                  "recommend_ratio": us["recommend"] / us["search"],
                  "exclusion_ratio": us["recommend"] / us["recommend_all"]}
        if "search+deny_list" in us:
            ratios["deny_list_ratio"] = us["search+deny_list"] / us["search"]
        out["results"][name] = {**{f"{m}_us": round(v, 1) for m, v in us.items()},
                                **{r: round(v, 3) for r, v in ratios.items()}}
        print(f"{name:26s} " + "  ".join(f"{m} {v:.1f} us" for m, v in us.items()) + "\n" + " " * 27
              + "  ".join(f"{r} {v:.2f}x" for r, v in ratios.items()))
    out["load_average_after"] = os.getloadavg()
    print(f"{len(users)} users, mean {out['mean_seen']:.0f} seen items, k={k}, load average "
          f"{out['load_average'][0]:.2f} -> {out['load_average_after'][0]:.2f}")
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
