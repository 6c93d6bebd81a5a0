"""Top-N quality of implicit ALS vs. the popularity and item-kNN baselines on ml-latest-small.

Protocol (DESIGN.md): per-user temporal split (each user's last 20% of ratings are the test set), Recall@10,
NDCG@10, MRR, MAP@10, precision@10, catalogue coverage; items seen in training are excluded. ALS is fitted
with several seeds (factor initialisation) and the spread is reported, next to a bare
``implicit.als.AlternatingLeastSquares`` with implicit's default usage (binary matrix, implicit alpha=1) on
the same seeds, scored by annrec's per-user-averaged recall@10 and by implicit's own
``ranking_metrics_at_k`` (whose "precision" is recall with a min(k, |relevant|) denominator summed over users).

``--search`` runs :func:`annrec.train.als.search_als` on the TRAINING part (its own temporal validation
split), then refits the chosen setting on the whole training part with the same seeds and scores the test part.

    ANNREC_DATA_DIR=/path/to/datasets python bench/als_quality.py --seeds 5 --search \\
        --json bench/results/als_quality.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from annrec._io import write_json
from annrec.data import load_movielens, temporal_user_split
from annrec.metrics import dot_recommender, evaluate_topn, popularity_recommender
from annrec.eval.baselines import ItemKNN
from annrec.train.als import ImplicitALS
from annrec.train.base import blas_single_thread
from annrec.train.search import search_als

KEYS = ("recall@10", "ndcg@10", "mrr", "map@10", "precision@10", "coverage@10")


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in KEYS:
        vals = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"mean": round(vals.mean(), 4), "min": round(vals.min(), 4), "max": round(vals.max(), 4),
                    "seed0": round(vals[0], 4)}
    return out


def implicit_micro_recall(model, train, test) -> float:
    from implicit.evaluation import ranking_metrics_at_k

    return float(ranking_metrics_at_k(model, train.to_csr(binary=True), test.to_csr(binary=True), K=10,
                                      show_progress=False)["precision"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--seeds", type=int, default=5, help="ALS seeds 0..N-1")
    ap.add_argument("--search", action="store_true", help="also run the hyper-parameter search")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import implicit.cpu.als

    ml = load_movielens(args.dataset)
    train, test = temporal_user_split(ml, 0.2)
    report: dict = {"dataset": args.dataset, "protocol": "temporal_user_split(0.2), k=10, seen items excluded",
                    "train_events": train.n_events, "test_events": test.n_events, "seeds": args.seeds}
    rows: dict[str, dict] = {}

    def ev(fn) -> dict:
        return {k: float(v) for k, v in evaluate_topn(fn, train, test, 10).items() if k in KEYS}

    rows["popularity"] = {k: round(v, 4) for k, v in ev(popularity_recommender(train)).items()}
    t0 = time.perf_counter()
    rows["item_knn (cosine, K=20)"] = {k: round(v, 4) for k, v in
                                       ev(ItemKNN(num_threads=args.threads).fit(train).recommend_fn()).items()}
    report["item_knn_seconds"] = round(time.perf_counter() - t0, 2)

    seeds = range(args.seeds)
    default_runs, default_secs, bare_runs, bare_micro, bare_secs = [], [], [], [], []
    X = train.to_csr(binary=True)
    for s in seeds:
        m = ImplicitALS(seed=s, num_threads=args.threads).fit(train)
        default_runs.append(ev(m.recommend_fn()))
        default_secs.append(m.stats_["fit_seconds"])
        t0 = time.perf_counter()
        with blas_single_thread():
            bare = implicit.cpu.als.AlternatingLeastSquares(factors=32, regularization=0.01, iterations=15,
                                                            random_state=s, num_threads=args.threads)
            bare.fit(X, show_progress=False)
        bare_secs.append(time.perf_counter() - t0)
        bare_runs.append(ev(dot_recommender(bare.user_factors, bare.item_factors)))
        bare_micro.append(implicit_micro_recall(bare, train, test))
    rows["als default (32 f, reg 0.01, 15 it, alpha 1)"] = summarise(default_runs)
    rows["implicit bare (its defaults: binary, alpha 1)"] = summarise(bare_runs)
    report["implicit_bare_recall@10_implicit_metric"] = {"mean": round(float(np.mean(bare_micro)), 4),
                                                         "min": round(float(np.min(bare_micro)), 4),
                                                         "max": round(float(np.max(bare_micro)), 4),
                                                         "seed0": round(bare_micro[0], 4)}
    report["fit_seconds"] = {"als_default_mean": round(float(np.mean(default_secs)), 2),
                             "implicit_bare_mean": round(float(np.mean(bare_secs)), 2)}

    if args.search:
        result = search_als(train, base_params={"num_threads": args.threads}, progress=True)
        report["search"] = result.to_dict()
        runs = []
        for s in seeds:
            m = ImplicitALS(**{**result.best_params, "seed": s}).fit(train)
            runs.append(ev(m.recommend_fn()))
        p = result.best_params
        rows[f"als searched ({p['factors']} f, reg {p['regularization']:g}, {p['iterations']} it, "
             f"alpha {p['alpha']:g}, {p['weighting']})"] = summarise(runs)

    report["table"] = rows
    print(f"\n{args.dataset}: {report['protocol']}; ALS rows: mean [min..max] over seeds 0..{args.seeds - 1}")
    print(f"{'model':62s} " + " ".join(f"{k:>22s}" for k in KEYS[:3]) + " " + " ".join(f"{k:>8s}" for k in KEYS[3:]))
    for name, row in rows.items():
        cells = []
        for i, k in enumerate(KEYS):
            v = row[k]
            if isinstance(v, dict):
                cells.append(f"{v['mean']:.4f} [{v['min']:.4f}..{v['max']:.4f}]" if i < 3 else f"{v['mean']:8.4f}")
            else:
                cells.append(f"{v:22.4f}" if i < 3 else f"{v:8.4f}")
        print(f"{name:62s} " + " ".join(f"{c:>22s}" if i < 3 else c for i, c in enumerate(cells)))
    mic = report["implicit_bare_recall@10_implicit_metric"]
    print(f"implicit bare, implicit's own ranking_metrics_at_k recall (micro): mean {mic['mean']:.4f} "
          f"[{mic['min']:.4f}..{mic['max']:.4f}]")
    if "search" in report:
        s = report["search"]
        print(f"search: {s['n_fits']} fits, {s['seconds']:.0f} s, best validation recall@10 {s['best_score']:.4f}")
    if args.json:
        write_json(args.json, report)
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
