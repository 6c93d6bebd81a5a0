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

(one process; docs/sequence.md gives the split into parallel runs, one per core, joined with ``--merge``,
that produced ``bench/results/sequence_eval.json``).
"""

from __future__ import annotations

import argparse
import json
import time

from annrec._io import write_json
from annrec.data import leave_last_one, load_movielens, temporal_user_split
from annrec.metrics import dot_recommender
from annrec.eval.baselines import baseline_recommenders
from annrec.eval.topn import evaluate_topn_table
from annrec.train.als import ImplicitALS
from annrec.train.search import search_als

VARIANTS = {
    "items": dict(recency=False, attention=False),
    "items+recency": dict(recency=True, attention=False),
    "items+recency+attention": dict(recency=True, attention=True),
    # pure next-item objective (no multi-target horizon), for leave-last-one
    "items+recency next-item": dict(recency=True, attention=False, horizon_fraction=0.0),
}


def baselines(train, num_threads: int = 1, als_search: bool = True) -> dict:
    """popularity, item-kNN (cosine, implicit's CosineRecommender), ALS (implicit, factors=32,
    regularization=0.01, iterations=15: the ALS defaults) and, with ``als_search``, ALS with the
    hyper-parameters that ``annrec.train.search.search_als`` picks on the same validation split the sequence
    model is tuned on (the fair comparison: both models tuned the same way)."""
    out = baseline_recommenders(train, ("popularity", "item_knn"), num_threads=num_threads)
    out["als"] = ImplicitALS(factors=32, regularization=0.01, iterations=15, seed=0,
                             num_threads=num_threads).fit(train).recommend_fn()
    out["_source"] = "annrec.train.als (ImplicitALS, ItemKNN K=20)"
    if als_search:
        found = search_als(train, {"seed": 0, "num_threads": num_threads})
        out["als_searched"] = ImplicitALS(**found.best_params).fit(train).recommend_fn()
        out["_als_searched_params"] = {k: found.best_params[k] for k in
                                       ("factors", "regularization", "iterations", "alpha", "weighting")}
    return out


def run_protocol(name: str, train, test, variants: list[str], params: dict, k: int = 10,
                 variant_params: dict | None = None, baselines_too: bool = True, als_search: bool = True) -> dict:
    """Baselines and sequence variants fitted on ``train`` and scored on ``test`` (same split for all)."""
    from annrec.train.sequence import SequenceTrainer

    rows: dict = {}
    base = baselines(train, als_search=als_search) if baselines_too else {"_source": None}
    source = base.pop("_source")
    als_params = base.pop("_als_searched_params", None)
    for bname, fn in base.items():
        t0 = time.perf_counter()
        rows[bname] = evaluate_topn_table({bname: fn}, train, test, k)[bname]
        rows[bname]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {bname}: {rows[bname]}", flush=True)
    for v in variants:
        p = {**params, **VARIANTS[v], **(variant_params or {}).get(v, {})}
        t0 = time.perf_counter()
        trainer = SequenceTrainer(**p)
        emb = trainer.fit(train).to_embeddings()
        secs = time.perf_counter() - t0
        scored = evaluate_topn_table({v: dot_recommender(emb.queries, emb.vectors)}, train, test, k)[v]
        rows[f"sequence:{v}"] = {**scored,
                                 "seconds": round(secs, 1), "best_epoch": trainer.result.best_epoch,
                                 "best_val_recall@10": trainer.result.best_val_recall,
                                 "params": {key: p[key] for key in sorted(p) if key != "show_progress"}}
        print(f"[{name}] sequence:{v}: {rows[f'sequence:{v}']}", flush=True)
    out = {"rows": rows, "baseline_source": source}
    if als_params:
        out["als_searched_params"] = als_params
    return out


def print_table(title: str, rows: dict, cols: list[str]) -> None:
    print(f"\n{title}")
    print("| model | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[c]:.4f}" if isinstance(m.get(c), float) else str(m.get(c, ""))
                                       for c in cols) + " |")


def merge_rows(report: dict, protocol: str, paths: list[str]) -> None:
    """Add the rows of ``protocol`` from earlier ``--json`` reports (same data set and split) to ``report``."""
    for path in paths:
        with open(path) as f:
            other = json.load(f)
        if other.get("dataset") != report["dataset"]:
            raise SystemExit(f"{path}: data set {other.get('dataset')!r} is not {report['dataset']!r}")
        for name, row in other.get(protocol, {}).get("rows", {}).items():
            report[protocol]["rows"].setdefault(name, row)
        for key, value in other.get(protocol, {}).items():
            if key != "rows":
                report[protocol].setdefault(key, value)
        report.setdefault("merged_from", []).append(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--protocols", default="temporal,llo")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="ablation variants for the temporal protocol")
    ap.add_argument("--llo-variants", default="items+recency,items+recency next-item",
                    help="variants for leave-last-one (early stopping on each user's last training event)")
    ap.add_argument("--params", default="{}", help="JSON SequenceConfig overrides (default: the tuned defaults)")
    ap.add_argument("--variant-params", default="{}", help="JSON {variant: overrides}, e.g. the epoch counts "
                    "chosen on the validation split by bench/sequence_tune.py")
    ap.add_argument("--no-baselines", action="store_true", help="only the sequence variants")
    ap.add_argument("--no-als-search", action="store_true", help="skip the searched-ALS baseline (~1.5 min)")
    ap.add_argument("--merge", nargs="*", default=[], help="earlier --json reports whose rows join this one's "
                    "(variants trained in separate processes, e.g. one per core)")
    ap.add_argument("--main", default=None, help="the variant whose Recall@10 is compared with ALS (chosen on the "
                    "validation split; default: the best validation figure of this run)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    params = {"show_progress": False, **json.loads(args.params)}
    ml = load_movielens(args.dataset)
    report: dict = {"dataset": args.dataset, "params": params}
    protocols = args.protocols.split(",")
    if "temporal" in protocols:
        train, test = temporal_user_split(ml, 0.2)
        report["temporal"] = run_protocol("temporal", train, test, [v for v in args.variants.split(",") if v], params,
                                          variant_params=json.loads(args.variant_params),
                                          baselines_too=not args.no_baselines, als_search=not args.no_als_search)
        merge_rows(report, "temporal", args.merge)
        rows = report["temporal"]["rows"]
        seq = {n: v for n, v in rows.items() if n.startswith("sequence:")}
        if seq:  # the main variant: --main (chosen on the validation split), else the best validation figure
            chosen = f"sequence:{args.main}" if args.main else max(seq, key=lambda n: seq[n]["best_val_recall@10"] or 0)
            report["temporal"]["chosen_on_validation"] = chosen
            for base, key in (("als", "recall_ratio_vs_als"), ("als_searched", "recall_ratio_vs_als_searched")):
                if base in rows:
                    report["temporal"][key] = round(seq[chosen]["recall@10"] / rows[base]["recall@10"], 3)
        print_table("temporal split (last 20% per user), k=10", report["temporal"]["rows"],
                    ["recall@10", "ndcg@10", "mrr", "map@10", "precision@10", "coverage@10", "seconds"])
        print(f"chosen on validation: {report['temporal'].get('chosen_on_validation')}; its Recall@10 / ALS "
              f"Recall@10 = {report['temporal'].get('recall_ratio_vs_als')} (default ALS), "
              f"{report['temporal'].get('recall_ratio_vs_als_searched')} (searched ALS)")
    if "llo" in protocols:
        train, test = leave_last_one(ml)
        report["llo"] = run_protocol("llo", train, test, [v for v in args.llo_variants.split(",") if v],
                                     {**params, "val_split": "last"}, baselines_too=not args.no_baselines,
                                     als_search=False)
        merge_rows(report, "llo", args.merge)
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
