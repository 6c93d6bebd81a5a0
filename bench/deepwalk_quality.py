"""Quality of DeepWalk vectors on ml-latest-small: genre classification (Micro/Macro-F1) and item-to-item top-N.

Graph: item co-occurrence from each user's time-ordered history (consecutive items, unweighted) - the
setting of the quality target (``small``: Micro-F1 >= 0.453, Macro-F1 >= 0.239; ``paper``: >= 0.483 /
>= 0.281). Protocol: :func:`annrec.eval.graph.multilabel_f1` (one-vs-rest logistic regression on 50% of
the movies, top-k labels, averaged over ``--repeats`` random splits). Baselines in the same run: random
Gaussian vectors of the same shape, and with ``--reference`` the same gensim training on walks from a
Python ``random.choice`` loop (what the reference figures were measured with).

``--topn`` also trains on the training part of the per-user temporal split (DESIGN.md top-N protocol) and
scores item-to-item recommendation (mean cosine to the user's history) against the popularity baseline,
plus a popularity-blended score whose weight is picked on a validation split carved from the training part.

    ANNREC_DATA_DIR=/path/to/datasets python bench/deepwalk_quality.py --preset small --reference --topn \
        --json bench/results/deepwalk_quality_small.json
    ANNREC_DATA_DIR=/path/to/datasets nice python bench/deepwalk_quality.py --preset paper \
        --json bench/results/deepwalk_quality_paper.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BARS = {"small": (0.453, 0.239), "paper": (0.483, 0.281)}
REFERENCE = {"small": (0.463, 0.249), "paper": (0.493, 0.291)}
BETAS = (0.0, 0.03, 0.1, 0.3, 1.0)  # popularity blend weights tried on the validation split


def reference_embeddings(model, graph):
    """The reference: Python ``random.choice`` walks (bench/deepwalk_walks.py) + the same gensim."""
    from gensim.models import Word2Vec

    from annrec.train.base import resolve_num_threads

    sys.path.insert(0, str(Path(__file__).parent))
    from deepwalk_walks import python_walks

    indptr, indices = graph.adj.indptr, graph.adj.indices
    adj = [indices[indptr[i]:indptr[i + 1]].tolist() for i in range(graph.n_nodes)]
    walks = python_walks(adj, model.walks_per_node, model.walk_length, seed=model.seed)
    tok = [str(v) for v in graph.node_ids.tolist()]
    sentences = [[tok[i] for i in w] for w in walks]
    w2v = Word2Vec(sentences, vector_size=model.factors, window=model.window, min_count=1, sg=1, hs=0,
                   negative=model.negatives, alpha=model.alpha, min_alpha=model.min_alpha, sample=model.sample,
                   workers=resolve_num_threads(model.num_threads), seed=model.seed, epochs=model.epochs)
    return np.stack([w2v.wv[t] for t in tok])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(BARS), default="small")
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--weighted", action="store_true", help="walk on co-occurrence counts (bar: unweighted)")
    ap.add_argument("--p", type=float, default=1.0)
    ap.add_argument("--q", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="random 50/50 splits of the F1 protocol")
    ap.add_argument("--reference", action="store_true", help="also train on Python random.choice walks")
    ap.add_argument("--topn", action="store_true", help="item-to-item top-N on the temporal split")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from annrec.data import load_movielens, temporal_user_split
    from annrec.eval.graph import evaluate_item_to_item, genre_labels, multilabel_f1
    from annrec.train.deepwalk import DeepWalk
    from annrec.data.graph import cooccurrence_graph

    inter = load_movielens(args.dataset)
    graph = cooccurrence_graph(inter, weighted=args.weighted)
    kw = dict(p=args.p, q=args.q, weighted=args.weighted, seed=args.seed, num_threads=args.workers, show_progress=False)
    if args.epochs:
        kw["epochs"] = args.epochs
    model = DeepWalk(args.preset, **kw)
    t0 = time.perf_counter()
    emb = model.fit(graph).to_embeddings()
    fit_s = time.perf_counter() - t0
    labels = genre_labels(inter.items, emb.ids)
    f1 = multilabel_f1(emb.vectors, labels, repeats=args.repeats, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    f1_random = multilabel_f1(rng.standard_normal(emb.vectors.shape), labels, repeats=args.repeats,
                              seed=args.seed)
    bar_micro, bar_macro = BARS[args.preset]
    result = {
        "benchmark": "DeepWalk genre classification", "dataset": args.dataset, "preset": args.preset,
        "graph": graph.summary(), "params": model.get_params(), "fit_s": fit_s, "timings": model.timings_,
        "corpus": model.corpus_, "genre_f1": f1, "random_vectors_f1": f1_random,
        "bar": {"micro_f1": bar_micro, "macro_f1": bar_macro},
        "reference_quoted": dict(zip(("micro_f1", "macro_f1"), REFERENCE[args.preset])),
        "passes_bar": bool(f1["micro_f1"] >= bar_micro and f1["macro_f1"] >= bar_macro),
    }
    print(f"{args.preset}: fit {fit_s:.1f} s (walks {model.timings_['walks_s']:.2f} s); Micro-F1 "
          f"{f1['micro_f1']:.4f} +- {f1['micro_f1_std']:.4f}, Macro-F1 {f1['macro_f1']:.4f} +- "
          f"{f1['macro_f1_std']:.4f} (bar {bar_micro} / {bar_macro}); random vectors "
          f"{f1_random['micro_f1']:.4f} / {f1_random['macro_f1']:.4f}", flush=True)
    if args.reference:
        t0 = time.perf_counter()
        ref = reference_embeddings(model, graph)
        ref_f1 = multilabel_f1(ref, genre_labels(inter.items, graph.node_ids), repeats=args.repeats,
                               seed=args.seed)
        result["python_walks_reference_f1"] = {**ref_f1, "fit_s": time.perf_counter() - t0}
        print(f"reference (Python walks + same gensim): Micro-F1 {ref_f1['micro_f1']:.4f}, Macro-F1 "
              f"{ref_f1['macro_f1']:.4f}", flush=True)
    if args.topn:
        # test: train on the temporal split's training part only. beta (popularity blend) is chosen on a
        # validation split carved from that training part (its users' last 20%), never on the test part.
        train, test = temporal_user_split(inter, 0.2)
        fit_tr, val = temporal_user_split(train, 0.2)
        e_val = DeepWalk(args.preset, **kw).fit(cooccurrence_graph(fit_tr, weighted=args.weighted)).to_embeddings()
        val_scores = {b: evaluate_item_to_item(e_val, fit_tr, val, k=10, popularity_weight=b,
                                               baseline=False)["ndcg@10"] for b in BETAS}
        beta = max(BETAS, key=lambda b: (val_scores[b], -b))
        e2 = DeepWalk(args.preset, **kw).fit(cooccurrence_graph(train, weighted=args.weighted)).to_embeddings()
        tn = evaluate_item_to_item(e2, train, test, k=10)
        tn_last = evaluate_item_to_item(e2, train, test, k=10, last_n=10, baseline=False)
        tn_beta = evaluate_item_to_item(e2, train, test, k=10, popularity_weight=beta, baseline=False)
        result["topn_item_to_item"] = {"similarity_all_history": tn, "similarity_last_10": tn_last,
                                       "popularity_blend": {**tn_beta, "validation_ndcg@10": val_scores}}
        print(f"item-to-item top-N (train part only): similarity Recall@10 {tn['recall@10']:.4f} NDCG@10 "
              f"{tn['ndcg@10']:.4f} coverage {tn['coverage@10']:.3f}; last-10 history Recall@10 "
              f"{tn_last['recall@10']:.4f}; blend beta={beta} (validation NDCG@10 {val_scores}) Recall@10 "
              f"{tn_beta['recall@10']:.4f} NDCG@10 {tn_beta['ndcg@10']:.4f} MRR {tn_beta['mrr']:.4f} coverage "
              f"{tn_beta['coverage@10']:.3f}; popularity Recall@10 {tn['popularity']['recall@10']:.4f} NDCG@10 "
              f"{tn['popularity']['ndcg@10']:.4f}", flush=True)
    if args.json:
        from annrec._io import write_json

        write_json(args.json, result)
        print(f"written {args.json}")
    return result


if __name__ == "__main__":
    main()
