"""Evaluation of the RNN sequence recommender against popularity, item-kNN and ALS on ml-latest-small.

Protocols (DESIGN.md):

* ``temporal``: per-user temporal split (each user's last 20% of events by timestamp are the truth, the rest
  is the input/training data); Recall@10, NDCG@10, MRR, MAP@10, precision@10, coverage@10; items seen in
  training are excluded from the ranking.
* ``llo``: leave-last-one-out; HitRate@10 and NDCG@10 of the single held-out next item, ranked against the
  full catalogue (no sampled negatives), training items excluded. With one relevant item Recall@10 is
  HitRate@10.

Every model sees exactly the same training half. The sequence model's hyper-parameters were chosen on a
validation split carved from the training half (``bench/sequence_tune.py``); early stopping uses that split
too, then the model is refit on the whole training half for the best epoch count.

Ablation: ``items`` (item embeddings only), ``items+recency``, ``items+recency+attention``.

    python bench/sequence_eval.py --json bench/results/sequence_eval.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from annrec._io import write_json
from annrec.data import leave_last_one, load_movielens, temporal_user_split
from annrec.metrics import dot_recommender, evaluate_topn, popularity_recommender

VARIANTS = {
    "items": dict(recency=False, attention=False),
    "items+recency": dict(recency=True, attention=False),
    "items+recency+attention": dict(recency=True, attention=True),
    # pure next-item objective (no multi-target horizon), for leave-last-one
    "items+recency next-item": dict(recency=True, attention=False, horizon_fraction=0.0),
}


def baselines(train, num_threads: int = 1) -> dict:
    """popularity, item-kNN (cosine, implicit's CosineRecommender) and ALS (implicit, factors=32,
    regularization=0.01, iterations=15), from annrec.train.als when present, else implicit directly."""
    out = {"popularity": popularity_recommender(train)}
    try:
        from annrec.train.als import ImplicitALS, ItemKNN

        out["item_knn"] = ItemKNN(num_threads=num_threads).fit(train).recommend_fn()
        out["als"] = ImplicitALS(factors=32, regularization=0.01, iterations=15, seed=0,
                                 num_threads=num_threads).fit(train).recommend_fn()
        out["_source"] = "annrec.train.als (ImplicitALS, ItemKNN K=20)"
    except ImportError:  # fallback: the implicit library directly
        from implicit.als import AlternatingLeastSquares

        from annrec.metrics import top_k_excluding

        m = AlternatingLeastSquares(factors=32, regularization=0.01, iterations=15, random_state=0,
                                    num_threads=num_threads)
        m.fit(train.to_csr(binary=True), show_progress=False)
        U, V = np.asarray(m.user_factors), np.asarray(m.item_factors)
        out["als"] = lambda u, k, s: top_k_excluding(U[u] @ V.T, k, s)
        out["_source"] = "implicit directly (annrec.train.als missing)"
    return out


def rounded(m: dict) -> dict:
    return {k: (int(v) if k == "users" else round(float(v), 4)) for k, v in m.items()}


def run_protocol(name: str, train, test, variants: list[str], params: dict, k: int = 10) -> dict:
    """Baselines and sequence variants fitted on ``train`` and scored on ``test`` (same split for all)."""
    from annrec.train.sequence import SequenceTrainer

    rows: dict = {}
    base = baselines(train)
    source = base.pop("_source")
    for bname, fn in base.items():
        t0 = time.perf_counter()
        rows[bname] = rounded(evaluate_topn(fn, train, test, k))
        rows[bname]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {bname}: {rows[bname]}", flush=True)
    for v in variants:
        p = {**params, **VARIANTS[v]}
        t0 = time.perf_counter()
        trainer = SequenceTrainer(**p)
        emb = trainer.fit(train)
        secs = time.perf_counter() - t0
        rows[f"sequence:{v}"] = {**rounded(evaluate_topn(dot_recommender(emb.queries, emb.vectors), train, test, k)),
                                 "seconds": round(secs, 1), "best_epoch": trainer.result.best_epoch,
                                 "best_val_recall@10": trainer.result.best_val_recall}
        print(f"[{name}] sequence:{v}: {rows[f'sequence:{v}']}", flush=True)
    return {"rows": rows, "baseline_source": source}


def print_table(title: str, rows: dict, cols: list[str]) -> None:
    print(f"\n{title}")
    print("| model | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[c]:.4f}" if isinstance(m.get(c), float) else str(m.get(c, ""))
                                       for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--protocols", default="temporal,llo")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="ablation variants for the temporal protocol")
    ap.add_argument("--llo-variants", default="items+recency,items+recency next-item",
                    help="variants for leave-last-one (early stopping on each user's last training event)")
    ap.add_argument("--params", default="{}", help="JSON SequenceConfig overrides (default: the tuned defaults)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    params = {"progress": False, **json.loads(args.params)}
    ml = load_movielens(args.dataset)
    report: dict = {"dataset": args.dataset, "params": params}
    protocols = args.protocols.split(",")
    if "temporal" in protocols:
        train, test = temporal_user_split(ml, 0.2)
        report["temporal"] = run_protocol("temporal", train, test, [v for v in args.variants.split(",") if v], params)
        rows = report["temporal"]["rows"]
        seq = {n: v for n, v in rows.items() if n.startswith("sequence:")}
        if seq:  # the variant chosen on the validation split (never on the test figures)
            chosen = max(seq, key=lambda n: seq[n]["best_val_recall@10"] or 0)
            report["temporal"]["chosen_on_validation"] = chosen
            report["temporal"]["recall_ratio_vs_als"] = round(seq[chosen]["recall@10"] / rows["als"]["recall@10"], 3)
        print_table("temporal split (last 20% per user), k=10", report["temporal"]["rows"],
                    ["recall@10", "ndcg@10", "mrr", "map@10", "precision@10", "coverage@10", "seconds"])
        print(f"chosen on validation: {report['temporal'].get('chosen_on_validation')}; its Recall@10 / ALS "
              f"Recall@10 = {report['temporal'].get('recall_ratio_vs_als')}")
    if "llo" in protocols:
        train, test = leave_last_one(ml)
        report["llo"] = run_protocol("llo", train, test, [v for v in args.llo_variants.split(",") if v],
                                     {**params, "val_split": "last"})
        seq = {n: v for n, v in report["llo"]["rows"].items() if n.startswith("sequence:")}
        if seq:  # the variant chosen on the validation split (never on the test figures)
            report["llo"]["chosen_on_validation"] = max(seq, key=lambda n: seq[n]["best_val_recall@10"] or 0)
        for m in report["llo"]["rows"].values():
            m["hitrate@10"] = m["recall@10"]
        print_table("leave-last-one, full ranking, k=10", report["llo"]["rows"],
                    ["hitrate@10", "ndcg@10", "mrr", "best_val_recall@10", "seconds"])
        print(f"chosen on validation: {report['llo'].get('chosen_on_validation')}")
    if args.json:
        write_json(args.json, report)
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
