"""Evaluation of the sequence recommender (GRU, transformer) against popularity, item-kNN and ALS (default and
searched) on ml-latest-small, on both protocols, in one table.

Protocols (docs/design.md, docs/sequence.md):

* ``temporal``: per-user temporal split (each user's last 20% of events by timestamp are the truth, the rest
  is the input/training data); Recall@10, NDCG@10, MRR@10, MAP@10, precision@10, coverage@10; items seen in
  training are excluded from the ranking.
* ``llo``: leave-last-one; each user's last event is the truth, ranked against the full catalogue (no sampled
  negatives), items of the user's training history excluded; HitRate@10 (= Recall@10 with one relevant
  item) and NDCG@10. The sequence models stop early on each user's last *training* event (the validation
  item), then are refit on every training event, so the validation item is part of the test-time input.

Every model sees exactly the same training half of a protocol. The sequence models' hyper-parameters were
chosen on a validation split carved from the training half (``bench/sequence_tune.py``); early stopping uses
that split too. ALS is shown with its defaults and after ``annrec.train.search.search_als`` on the same kind of
validation split (per protocol). The main models run once per seed (``--seeds``); their rows give the mean
and standard deviation over seeds and every seed's figures.

    python bench/sequence_eval.py --seeds 0,1,2 --json bench/results/sequence_eval.json

``--models`` picks the sequence models (:data:`MODELS`: ``gru``, ``transformer`` and ablation variants),
``--params`` overrides every model's settings, ``--model-params`` one model's; ``--merge`` joins the rows of
earlier ``--json`` reports (runs split over processes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from annrec._io import write_json
from annrec.data import leave_last_one, load_movielens, temporal_user_split
from annrec.eval.baselines import baseline_recommenders
from annrec.eval.topn import evaluate_topn_table
from annrec.metrics import dot_recommender
from annrec.train.als import ImplicitALS
from annrec.train.search import search_als

#: the sequence models (SequenceConfig overrides of the defaults); the first two are the main models
MODELS = {
    "gru": dict(encoder="gru"),
    "transformer": dict(encoder="transformer"),
    "gru items only": dict(encoder="gru", recency=False),
    "gru recency (chunk's last event)": dict(encoder="gru", time_feature="recency"),
    "gru windows": dict(encoder="gru", training="windows", time_feature="recency"),
}
METRICS = ("recall@10", "ndcg@10", "mrr", "map@10", "precision@10", "coverage@10")


def baselines(train, num_threads: int = 1, als_search: bool = True) -> tuple[dict, dict | None]:
    """popularity, item-kNN (cosine, K = 20), ALS (factors=32, regularization=0.01, iterations=15: the ALS
    defaults) and, with ``als_search``, ALS with the hyper-parameters ``search_als`` picks on a validation split
    carved from ``train`` (the sequence models are tuned the same way). Returns (recommenders, searched params)."""
    out = baseline_recommenders(train, ("popularity", "item_knn"), num_threads=num_threads)
    out["als"] = ImplicitALS(factors=32, regularization=0.01, iterations=15, seed=0,
                             num_threads=num_threads).fit(train).recommend_fn()
    found = None
    if als_search:
        best = search_als(train, {"seed": 0, "num_threads": num_threads}).best_params
        out["als_searched"] = ImplicitALS(**best).fit(train).recommend_fn()
        found = {k: best[k] for k in ("factors", "regularization", "iterations", "alpha", "weighting")}
    return out, found


def fit_sequence(train, test, params: dict, k: int = 10) -> dict:
    """Fit one sequence model on ``train`` and score it on ``test``; the row holds the metrics, seconds (total,
    per epoch) and the validation figure."""
    from annrec.train.sequence import SequenceTrainer

    t0 = time.perf_counter()
    trainer = SequenceTrainer(**params)
    emb = trainer.fit(train).to_embeddings()
    secs = time.perf_counter() - t0
    row = evaluate_topn_table({"m": dot_recommender(emb.queries, emb.vectors)}, train, test, k)["m"]
    epochs = [h["seconds"] for h in trainer.result.history]
    return {**row, "seconds": round(secs, 1), "epochs_run": len(epochs),
            "seconds_per_epoch": round(statistics.median(epochs), 1) if epochs else None,
            "best_epoch": trainer.result.best_epoch, "best_val_recall@10": trainer.result.best_val_recall}


def summarise(runs: list[dict]) -> dict:
    """Mean, standard deviation and per-seed values of each metric over a model's runs (one per seed)."""
    out: dict = {"seeds": len(runs)}
    for key in (*METRICS, "seconds", "seconds_per_epoch", "best_val_recall@10"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[key] = round(statistics.fmean(vals), 4)
            out[f"{key}_std"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
            out[f"{key}_per_seed"] = vals
    return out


def run_protocol(name: str, train, test, models: list[str], seeds: list[int], params: dict, model_params: dict,
                 baselines_too: bool = True, als_search: bool = True) -> dict:
    """Baselines and sequence models fitted on ``train`` and scored on ``test`` (the same split for all)."""
    rows: dict = {}
    out: dict = {}
    if baselines_too:
        recs, found = baselines(train, als_search=als_search)
        if found:
            out["als_searched_params"] = found
        for bname, fn in recs.items():
            t0 = time.perf_counter()
            rows[bname] = evaluate_topn_table({bname: fn}, train, test)[bname]
            rows[bname]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"[{name}] {bname}: {rows[bname]}", flush=True)
    for m in models:
        p = {**params, **MODELS[m], **model_params.get(m, {})}
        runs = []
        for seed in seeds:
            runs.append(fit_sequence(train, test, {**p, "seed": seed}))
            print(f"[{name}] {m} seed {seed}: {runs[-1]}", flush=True)
        rows[m] = {**summarise(runs), "runs": runs,
                   "params": {key: p[key] for key in sorted(p) if key != "show_progress"}}
    return {"rows": rows, **out}


def merge_rows(report: dict, protocol: str, paths: list[str]) -> None:
    """Add the rows of ``protocol`` from earlier ``--json`` reports (same data set and split) to ``report``."""
    for path in paths:
        with open(path) as f:
            other = json.load(f)
        if other.get("dataset") != report["dataset"]:
            raise SystemExit(f"{path}: data set {other.get('dataset')!r} is not {report['dataset']!r}")
        theirs = other.get(protocol, {})
        report.setdefault(protocol, {"rows": {}})
        for name, row in theirs.get("rows", {}).items():
            report[protocol]["rows"].setdefault(name, row)
        for key, value in theirs.items():
            if key != "rows":
                report[protocol].setdefault(key, value)
        report.setdefault("merged_from", []).append(path)


def compare(report: dict, main_models: list[str]) -> dict:
    """The main model (best mean validation Recall@10 on the temporal protocol) against searched ALS:
    Recall@10 temporal and NDCG@10 leave-last-one ratios, and the transformer against the GRU."""
    t, ll = report.get("temporal", {}).get("rows", {}), report.get("llo", {}).get("rows", {})
    cands = [m for m in main_models if m in t]
    out: dict = {}
    if cands:
        best = max(cands, key=lambda m: t[m].get("best_val_recall@10") or 0)
        out["best_on_validation"] = best
        if "als_searched" in t:
            out["recall@10_temporal_vs_als_searched"] = round(t[best]["recall@10"] / t["als_searched"]["recall@10"], 3)
        if best in ll and "als_searched" in ll:
            out["ndcg@10_llo_vs_als_searched"] = round(ll[best]["ndcg@10"] / ll["als_searched"]["ndcg@10"], 3)
    for proto, rows in (("temporal", t), ("llo", ll)):
        if "gru" in rows and "transformer" in rows:
            out[f"transformer_vs_gru_{proto}"] = {k: round(rows["transformer"][k] / rows["gru"][k], 3)
                                                  for k in ("recall@10", "ndcg@10")}
    return out


def print_table(report: dict) -> None:
    """One markdown table: every model's figures on both protocols (mean ± std over seeds for the main models)."""
    t, ll = report.get("temporal", {}).get("rows", {}), report.get("llo", {}).get("rows", {})

    def cell(row: dict | None, key: str) -> str:
        if not row or key not in row:
            return "—"
        std = row.get(f"{key}_std")
        return f"{row[key]:.4f}" + (f" ± {std:.4f}" if std else "")

    print("\n| model | temporal Recall@10 | temporal NDCG@10 | LLO HitRate@10 | LLO NDCG@10 | s/epoch | training s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in dict.fromkeys([*t, *ll]):
        a, b = t.get(name), ll.get(name)
        spe = (a or b or {}).get("seconds_per_epoch")
        secs = (a or b or {}).get("seconds")
        print(f"| {name} | {cell(a, 'recall@10')} | {cell(a, 'ndcg@10')} | {cell(b, 'recall@10')} | "
              f"{cell(b, 'ndcg@10')} | {spe if spe is not None else '—'} | {secs if secs is not None else '—'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--protocols", default="temporal,llo")
    ap.add_argument("--models", default="gru,transformer", help=f"sequence models, of {', '.join(MODELS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--llo-seeds", default=None, help="seeds of the leave-last-one runs (default: --seeds)")
    ap.add_argument("--params", default="{}", help="JSON SequenceConfig overrides of every model")
    ap.add_argument("--model-params", default="{}", help="JSON {model: overrides}")
    ap.add_argument("--no-baselines", action="store_true", help="only the sequence models")
    ap.add_argument("--no-als-search", action="store_true", help="skip the searched-ALS baseline")
    ap.add_argument("--merge", nargs="*", default=[], help="earlier --json reports whose rows join this one's")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    params = {"show_progress": False, **json.loads(args.params)}
    model_params = json.loads(args.model_params)
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    llo_seeds = seeds if args.llo_seeds is None else [int(s) for s in args.llo_seeds.split(",") if s]
    ml = load_movielens(args.dataset)
    report: dict = {"dataset": args.dataset, "params": params, "model_params": model_params, "seeds": seeds,
                    "llo_seeds": llo_seeds, "load_average_start": os.getloadavg()}
    for proto in [p for p in args.protocols.split(",") if p]:
        train, test = temporal_user_split(ml, 0.2) if proto == "temporal" else leave_last_one(ml)
        extra = {"val_split": "last"} if proto == "llo" else {}
        report[proto] = run_protocol(proto, train, test, models, llo_seeds if proto == "llo" else seeds,
                                     {**params, **extra}, model_params,
                                     baselines_too=not args.no_baselines, als_search=not args.no_als_search)
    if args.merge:
        for proto in ("temporal", "llo"):
            merge_rows(report, proto, args.merge)
    report["comparison"] = compare(report, ["gru", "transformer"])
    report["load_average_end"] = os.getloadavg()
    print_table(report)
    print(json.dumps(report["comparison"], indent=1))
    if args.json:
        write_json(args.json, report)
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
