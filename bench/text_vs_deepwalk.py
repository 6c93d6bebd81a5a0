"""Genre classification of movies from text vectors vs DeepWalk vectors, in one table.

Protocol (DESIGN.md, "Graph embeddings"; :func:`annrec.eval.graph.multilabel_f1`): one-vs-rest
logistic regression on 50% of the labelled movies, each held-out movie gets as many genres as it has,
Micro-F1 / Macro-F1 averaged over 5 random splits (seeds 0..4). Every row is scored on the same movies
(the movies that have a vector in every compared artifact: DeepWalk only knows rated movies) so the
splits are identical; a second column pair gives each model on all of its own movies.

Rows:

* text, fields ``title`` / ``title,tags`` - fair: the text does not contain the labels;
* text, fields ``title,genres,tags`` - the default item text; it *contains* the genres, so its score is
  a leakage upper bound, not a comparison;
* DeepWalk on the item co-occurrence graph (consecutive items, unweighted), ``small`` preset (and
  ``paper`` with ``--paper``), trained here, or artifacts given with ``--deepwalk NAME=DIR``;
* text (title,tags) concatenated with DeepWalk small (each part unit-normalised) - complementarity.

Usage::

    python bench/text_vs_deepwalk.py [--paper] [--deepwalk NAME=DIR ...] [--threads 2] \
        [--json bench/results/text_vs_deepwalk.json]

Text vectors come from the text cache (``$ANNREC_CACHE_DIR/text``), so a second run only trains DeepWalk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paper", action="store_true", help="also train DeepWalk with the 'paper' preset")
    ap.add_argument("--deepwalk", action="append", default=[], metavar="NAME=DIR",
                    help="use this DeepWalk Embeddings artifact instead of training (repeatable)")
    ap.add_argument("--no-train-deepwalk", action="store_true", help="only the --deepwalk artifacts")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from annrec._io import write_json
    from annrec.data import load_movielens
    from annrec.embeddings import Embeddings
    from annrec.eval.graph import genre_labels, multilabel_f1
    from annrec.train.text import TextTrainer

    ml = load_movielens("ml-latest-small", download=False, progress=False)
    models: dict[str, Embeddings] = {}
    info: dict[str, dict] = {}

    for fields in ("title", "title,tags", "title,genres,tags"):
        t0 = time.perf_counter()
        emb = TextTrainer(args.model, fields=fields, batch_size=args.batch_size, show_progress=False).fit(ml).to_embeddings()
        name = f"text [{fields}]"
        models[name] = emb
        info[name] = {"kind": "text", "fields": fields, "labels_in_input": "genres" in fields,
                      "seconds": round(time.perf_counter() - t0, 1), **emb.manifest["figures"]}
        print(f"{name}: {len(emb)} vectors, {info[name]['seconds']} s "
              f"({emb.manifest['figures']['n_encoded']} encoded, {emb.manifest['figures']['n_cached']} cached)",
              flush=True)

    for spec in args.deepwalk:
        name, _, path = spec.partition("=")
        models[f"DeepWalk [{name}]"] = Embeddings.load(path)
        info[f"DeepWalk [{name}]"] = {"kind": "deepwalk", "artifact": path, "params": models[f"DeepWalk [{name}]"]
                                      .manifest.get("params")}
    if not args.no_train_deepwalk:
        from annrec.train.deepwalk import DeepWalk

        for preset in ("small", "paper") if args.paper else ("small",):
            t0 = time.perf_counter()
            dw = DeepWalk(preset, weighted=False, graph="cooccurrence", workers=args.threads, seed=args.seed)
            emb = dw.fit(ml).to_embeddings()
            name = f"DeepWalk [{preset}, co-occurrence, unweighted]"
            models[name] = emb
            info[name] = {"kind": "deepwalk", "preset": preset, "seconds": round(time.perf_counter() - t0, 1),
                          "params": dw.get_params()}
            print(f"{name}: {len(emb)} vectors, {info[name]['seconds']} s", flush=True)

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    text_ft = models.get("text [title,tags]")
    dw_small = next((m for n, m in models.items() if n.startswith("DeepWalk [small")), None)
    if text_ft is not None and dw_small is not None:
        text_ids = set(text_ft.ids.tolist())
        common = [i for i in dw_small.ids.tolist() if i in text_ids]
        a = unit(text_ft.vectors[[text_ft.row_of(i) for i in common]])
        b = unit(dw_small.vectors[[dw_small.row_of(i) for i in common]])
        name = "text [title,tags] + DeepWalk [small] (concatenated)"
        models[name] = Embeddings(np.hstack([a, b]), np.asarray(common), "cosine")
        info[name] = {"kind": "concat"}

    id_sets = [set(m.ids.tolist()) for m in models.values()]
    common = sorted(set.intersection(*id_sets))
    labels_common = genre_labels(ml.items, common)
    rows = []
    for name, emb in models.items():
        t0 = time.perf_counter()
        X = emb.vectors[[emb.row_of(i) for i in common]]
        same = multilabel_f1(X, labels_common, repeats=args.repeats, seed=args.seed)
        own = multilabel_f1(emb.vectors, genre_labels(ml.items, emb.ids), repeats=args.repeats, seed=args.seed)
        rows.append({"model": name, "dim": emb.dim, "micro_f1": same["micro_f1"], "macro_f1": same["macro_f1"],
                     "micro_f1_std": same["micro_f1_std"], "macro_f1_std": same["macro_f1_std"],
                     "nodes": same["nodes"], "own_micro_f1": own["micro_f1"], "own_macro_f1": own["macro_f1"],
                     "own_nodes": own["nodes"], **{k: v for k, v in info[name].items() if k in
                                                  ("labels_in_input", "preset", "fields")}})
        print(f"scored {name} ({time.perf_counter() - t0:.1f} s)", flush=True)

    lines = ["| vectors | dim | Micro-F1 | Macro-F1 | movies | Micro-F1 (own) | Macro-F1 (own) | movies (own) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        flag = " (genres in text: leak)" if r.get("labels_in_input") else ""
        lines.append(f"| {r['model']}{flag} | {r['dim']} | {r['micro_f1']:.3f} | {r['macro_f1']:.3f} | {r['nodes']} | "
                     f"{r['own_micro_f1']:.3f} | {r['own_macro_f1']:.3f} | {r['own_nodes']} |")
    table = "\n".join(lines)
    print(table)
    result = {"bench": "text_vs_deepwalk",
              "command": "python bench/text_vs_deepwalk.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "protocol": f"one-vs-rest logistic regression (liblinear, C=1), 50% train, top-k labels, "
                          f"{args.repeats} splits from seed {args.seed}",
              "rows": rows, "models": info, "table_markdown": table}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
