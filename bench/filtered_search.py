"""Filtered search through HNSW: a payload filter that keeps one Fashion-MNIST class (10 % of the items).

    python bench/filtered_search.py --json bench/results/filtered_search.json

60,000 × 784 training images with metadata ``{"label": class}``, 1,000 test queries, k = 10, hnswlib
M=16 ef_construction=100 at a few ``ef``; the filter is ``{"must": [{"key": "label", "match": {"value": 3}}]}``
through :meth:`annrec.recommend.Recommender.search` (the served path). Recall@10 against exact filtered
search; QPS single-threaded one query at a time, filtered and unfiltered side by side. By default the
filter's view (a cached sub-index, :mod:`annrec.index.filter_views`) is built first (its build time is
reported); ``--no-views`` measures the filtered graph search instead.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--label", type=int, default=3)
    ap.add_argument("--no-views", dest="views", action="store_false",
                    help="measure the filtered graph search alone (no cached filter views)")
    ap.add_argument("--dataset", choices=["fashion-mnist", "movielens"], default="fashion-mnist",
                    help="movielens: ALS item vectors of ml-latest-small (9,724 x 32, inner product), filtered on "
                         "the genre that holds closest to 10 %% of the movies; queries are the users' vectors")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.dataset == "movielens":
        return movielens(args)

    from annrec.bench.datasets import FASHION_MNIST_DIR, fashion_mnist, read_idx
    from annrec.index import build_index
    from annrec.recommend import Recommender

    ds = fashion_mnist()
    labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")
    x, q = ds.train, ds.test[:1000]
    ids = np.arange(len(x))
    index = build_index(x, ids, "l2", backend="hnswlib", M=16, ef_construction=100)
    index.items = {int(i): {"label": int(c)} for i, c in zip(ids, labels)}
    if not args.views:
        type(index).filter_views = False
    rec = Recommender(None, index)
    flt = {"must": [{"key": "label", "match": {"value": args.label}}]}
    keep = ids[labels == args.label]
    sub = x[keep]
    d = (q * q).sum(1)[:, None] - 2 * q @ sub.T + (sub * sub).sum(1)[None, :]
    gt = keep[np.argsort(d, axis=1)[:, :10]]
    out = {"n": len(x), "allowed": int(len(keep)), "queries": len(q), "load_average": os.getloadavg(),
           "filter_views": args.views, "rows": []}
    sweep(args, rec, q, flt, gt, lambda i: labels[i] == args.label, out, "")


def movielens(args) -> None:
    """The genre filter on ml-latest-small: ALS item vectors in hnswlib (ip), user vectors as queries."""
    from collections import Counter

    from annrec.data import load_movielens
    from annrec.index import build_index
    from annrec.recommend import Recommender
    from annrec.train.als import ImplicitALS

    emb = ImplicitALS(seed=0, num_threads=2).fit(load_movielens("ml-latest-small")).to_embeddings()
    counts = Counter(g for meta in emb.items.values() for g in (meta or {}).get("genres", []))
    genre = min(counts, key=lambda g: abs(counts[g] / len(emb.ids) - 0.10))
    index = build_index(emb.vectors, emb.ids, "ip", backend="hnswlib", M=16, ef_construction=100)
    index.items = dict(emb.items)
    if not args.views:
        type(index).filter_views = False
    rec = Recommender(None, index)
    flt = {"must": [{"key": "genres", "match": {"value": genre}}]}
    keep = np.asarray([i for i in emb.ids.tolist() if genre in (emb.items.get(i) or {}).get("genres", [])])
    rows = np.asarray([index._label[i] for i in keep.tolist()])
    q = np.ascontiguousarray(emb.queries, dtype=np.float32)
    gt = keep[np.argsort(-(q @ index._vectors[rows].T), axis=1)[:, :10]]
    out = {"dataset": "ml-latest-small ALS (32 factors) item vectors, ip", "n": len(emb.ids), "genre": genre,
           "allowed": int(len(keep)), "fraction": round(len(keep) / len(emb.ids), 3), "queries": len(q),
           "load_average": os.getloadavg(), "rows": []}
    sweep(args, rec, q, flt, gt, lambda i: genre in emb.items[i]["genres"], out,
          f"{genre} ({len(keep)} of {len(emb.ids)}) ")


def sweep(args, rec, q: np.ndarray, flt: dict, gt: np.ndarray, matches, out: dict, label: str) -> None:
    """For each ``--ef``: filtered and unfiltered single-query searches side by side (``q`` float32 (nq, dim),
    ``gt`` int (nq, 10) the exact filtered neighbours, ``matches(id)`` whether an item passes the filter); one
    row per ef into ``out["rows"]``, then the figures printed and written to ``--json``."""
    for ef in args.ef:
        params = {"ef": ef}
        for i in range(5):  # warm-up: a filter's allow-set is evaluated on its first use, its view built on its second
            rec.search(q[i], 10, filter=flt, params=params, threads=1, include_metadata=False)
            rec.search(q[i], 10, params=params, threads=1, include_metadata=False)
        if args.views:  # wait for the filter's view (annrec.index.filter_views) when one is being built
            t0 = time.perf_counter()
            rec.index.views.wait()
            out.setdefault("view_build_s", round(time.perf_counter() - t0, 2))
        times = {"filtered": 0.0, "unfiltered": 0.0}
        found = []
        for i in range(len(q)):
            t0 = time.perf_counter()
            hits = rec.search(q[i], 10, filter=flt, params=params, threads=1, include_metadata=False)[0]
            t1 = time.perf_counter()
            rec.search(q[i], 10, params=params, threads=1, include_metadata=False)
            t2 = time.perf_counter()
            times["filtered"] += t1 - t0
            times["unfiltered"] += t2 - t1
            found.append([h.item_id for h in hits])
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, gt.tolist())]))
        only = all(matches(i) for row in found for i in row)
        row = {"ef": ef, "recall@10": round(recall, 4), "only_matching": only,
               "filtered_qps": round(len(q) / times["filtered"]), "unfiltered_qps": round(len(q) / times["unfiltered"])}
        row["ratio"] = round(row["filtered_qps"] / row["unfiltered_qps"], 3)
        out["rows"].append(row)
        print(f"{label}ef={ef:4d} recall@10 {recall:.4f} (only matching: {only})  filtered {row['filtered_qps']:6d} "
              f"q/s  unfiltered {row['unfiltered_qps']:6d} q/s  ({row['ratio']:.2f}x)")
    out["load_average_after"] = os.getloadavg()
    if args.json:
        from annrec._io import write_json

        write_json(args.json, out)


if __name__ == "__main__":
    main()
