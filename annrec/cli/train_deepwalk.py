"""``annrec train deepwalk``: DeepWalk / node2vec item vectors from a graph (co-occurrence, bipartite, edge list)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from annrec.cli.apps import console, json_option, train_app, write_json_report
from annrec.cli.data_options import NumThreadsOpt, deprecated_flag, hidden_option
from annrec.errors import InputError

GRAPHS = ("cooccurrence", "bipartite", "edgelist")


def run_train_deepwalk(*, graph: str = "cooccurrence", dataset: str = "ml-latest-small", data_dir=None,
                       edges=None, directed: bool = False, items_file=None, cooc_window: int = 1,
                       weighted: bool = False, evaluate: bool = True, eval_repeats: int = 5, topn: bool = False,
                       k: int = 10, test_fraction: float = 0.2, **params: Any):
    """The command's work, callable from Python: returns ``(embeddings, report)``.

    Steps: (1) build the graph (``graph``: ``cooccurrence`` / ``bipartite`` from a MovieLens data set, or
    ``edgelist`` from ``edges``); (2) fit :class:`~annrec.train.deepwalk.DeepWalk` (``params`` go to its
    constructor) on the whole graph; (3) ``evaluate``: genre classification of the item vectors
    (:func:`annrec.eval.graph.multilabel_f1`, when the items have genres); (4) ``topn`` (MovieLens graphs):
    fit a second model on the training part of the per-user temporal split only and score item-to-item
    recommendation on the test part with the top-N protocol (plus the popularity baseline). The figures go
    into ``manifest["figures"]``.

    Raises:
        InputError: unknown graph kind, missing ``edges``, ``topn`` with an edge list, bad parameters.
        DataError / DataNotFoundError: unreadable data or a graph with no edges.
    """
    from annrec.eval.graph import evaluate_embeddings_genres, evaluate_item_to_item
    from annrec.train.deepwalk import DeepWalk
    from annrec.data.graph import load_graph

    if graph not in GRAPHS:
        raise InputError(f"unknown --graph {graph!r}: use one of {', '.join(GRAPHS)}")
    inter = None
    items = None
    if graph == "edgelist":
        if edges is None:
            raise InputError("--graph edgelist needs --edges FILE (CSV/TSV: source,target[,weight])")
        if topn:
            raise InputError("--topn needs interactions (a MovieLens graph); an edge list has no users to "
                             "evaluate: drop --topn")
        g = load_graph("edgelist", edges=edges, weighted=weighted, directed=directed)
        if items_file is not None:
            from annrec.cli.train_text import read_items_file

            items = read_items_file(Path(items_file))
            g.items = items
        name = Path(edges).name
    else:
        from annrec.data import load_movielens

        inter = load_movielens(dataset, data_dir=os.fspath(data_dir) if data_dir else None)
        g = load_graph(graph, inter, window=cooc_window, weighted=weighted)
        items = inter.items
        name = dataset
    model = DeepWalk(graph="bipartite" if graph == "bipartite" else "cooccurrence", weighted=weighted,
                     cooccurrence_window=cooc_window, **params)
    emb = model.fit(g).to_embeddings()
    figures: dict[str, Any] = {"graph": g.summary(), "timings": dict(emb.manifest["timings"]),
                               "corpus": dict(emb.manifest["corpus"]), "items": len(emb)}
    if emb.queries is not None:
        figures["users"] = len(emb.queries)
    if evaluate and items is not None and "genres" in getattr(items, "columns", []):
        figures["genre_classification"] = evaluate_embeddings_genres(emb, items, seed=model.seed,
                                                                     repeats=eval_repeats)
    if topn:
        from annrec.data import temporal_user_split

        train, test = temporal_user_split(inter, test_fraction)
        m2 = DeepWalk(graph="bipartite" if graph == "bipartite" else "cooccurrence", weighted=weighted,
                      cooccurrence_window=cooc_window, **params)
        e2 = m2.fit(train).to_embeddings()
        figures["topn_item_to_item"] = {**evaluate_item_to_item(e2, train, test, k=k),
                                        "split": f"temporal_user_split(test_fraction={test_fraction})",
                                        "trained_on": "train part only"}
    emb.manifest["figures"] = figures
    emb.manifest["dataset"] = emb.manifest.get("dataset") or name
    report = {"command": "train deepwalk", "dataset": name, "graph": graph, "params": model.get_params(),
              **figures}
    return emb, report


@train_app.command("deepwalk")
def train_deepwalk(
    graph: str = typer.Option("cooccurrence", "--graph", help="cooccurrence (items consecutive in a user's "
                              "history), bipartite (user-item) or edgelist (--edges FILE)."),
    edges: Path | None = typer.Option(None, "--edges", help="Edge list CSV/TSV: source,target[,weight] "
                                      "(header optional) for --graph edgelist."),
    directed: bool = typer.Option(False, "--directed/--undirected", help="Read the edge list as directed."),
    items_file: Path | None = typer.Option(None, "--items", help="Item metadata CSV/TSV/Parquet (id, title, "
                                           "genres) for an edge list's nodes: titles in the artifact, genre F1."),
    dataset: str = typer.Option("ml-latest-small", "--dataset", help="MovieLens data set for the "
                                "cooccurrence / bipartite graphs."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder holding <dataset>/ (else "
                                         "$ANNREC_DATA_DIR)."),
    cooc_window: int = typer.Option(1, "--cooc-window", min=1, help="Link items up to this many positions "
                                    "apart in a user's history (1: consecutive items)."),
    weighted: bool = typer.Option(False, "--weighted/--unweighted", help="Edge weights (co-occurrence "
                                  "counts, ratings, the weight column) steer the walks; --unweighted: every "
                                  "edge weighs 1 (the setting of the quality bar)."),
    preset: str = typer.Option("small", "--preset", help="small (10 walks/node, length 5, window 4, 10 "
                               "negatives, lr 0.03, 20 epochs, dim 100) or paper (80 walks/node, length 40, "
                               "window 10, dim 128, gensim defaults)."),
    p: float = typer.Option(1.0, "--p", help="node2vec return parameter (> 0; 1 with q=1: DeepWalk)."),
    q: float = typer.Option(1.0, "--q", help="node2vec in-out parameter (> 0)."),
    factors: int | None = typer.Option(None, "--factors", min=1, help="Vector dimension (default: the preset's)."),
    dim: int | None = hidden_option("--dim"),
    walks_per_node: int | None = typer.Option(None, "--walks-per-node", min=1, help="Walks from each node."),
    walk_length: int | None = typer.Option(None, "--walk-length", min=1, help="Nodes per walk."),
    window: int | None = typer.Option(None, "--window", min=1, help="Skip-gram context window."),
    negatives: int | None = typer.Option(None, "--negatives", min=1, help="Negative samples per pair."),
    negative: int | None = hidden_option("--negative"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Training epochs over the walks."),
    alpha: float | None = typer.Option(None, "--alpha", help="Initial learning rate."),
    min_alpha: float | None = typer.Option(None, "--min-alpha", help="Final learning rate."),
    num_threads: NumThreadsOpt = None,
    workers: int | None = hidden_option("--workers"),
    seed: int = typer.Option(0, "--seed", help="Seed of the walks, gensim and the evaluation splits."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Genre classification (Micro/Macro-F1) "
                                  "when the items have genres."),
    eval_repeats: int = typer.Option(5, "--eval-repeats", min=1, help="Random 50/50 splits to average F1 over."),
    topn: bool = typer.Option(False, "--topn/--no-topn", help="Also train on the temporal split's training "
                              "part and report item-to-item top-N metrics (Recall@10, NDCG@10, ...)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    out: Path = typer.Option(..., "--out", help="Embeddings folder to write (replaced atomically)."),
    json_path: Path | None = json_option(),
) -> None:
    """Train DeepWalk / node2vec vectors (skip-gram with negative sampling on random walks, gensim)."""
    factors = deprecated_flag(dim, "--dim", "--factors", factors)
    negatives = deprecated_flag(negative, "--negative", "--negatives", negatives)
    num_threads = deprecated_flag(workers, "--workers", "--num-threads", num_threads)
    params = dict(preset=preset, p=p, q=q, factors=factors, walks_per_node=walks_per_node, walk_length=walk_length,
                  window=window, negatives=negatives, epochs=epochs, alpha=alpha, min_alpha=min_alpha,
                  num_threads=num_threads, seed=seed, show_progress=progress)
    emb, report = run_train_deepwalk(graph=graph, dataset=dataset, data_dir=data_dir, edges=edges,
                                     directed=directed, items_file=items_file, cooc_window=cooc_window,
                                     weighted=weighted, evaluate=evaluate, eval_repeats=eval_repeats, topn=topn,
                                     **params)
    emb.save(out)
    g = report["graph"]
    console.print(f"[bold]deepwalk[/] {g['kind']} graph: {g['nodes']} nodes, {g['edges']} edges -> {out} "
                  f"({len(emb)} items, dim {emb.dim}, metric cosine)")
    t = report["timings"]
    console.print(f"walks {t['walks_s']:.2f} s ({report['corpus']['walks']} walks), skip-gram {t['train_s']:.1f} s")
    gc = report.get("genre_classification")
    if gc:
        console.print(f"genre classification: Micro-F1 {gc['micro_f1']:.3f}, Macro-F1 {gc['macro_f1']:.3f} "
                      f"({gc['repeats']} splits, {gc['nodes']} movies)")
    tn = report.get("topn_item_to_item")
    if tn:
        pop = tn.get("popularity", {})
        console.print(f"item-to-item top-N: Recall@10 {tn['recall@10']:.4f}, NDCG@10 {tn['ndcg@10']:.4f} "
                      f"(popularity: {pop.get('recall@10', float('nan')):.4f}, {pop.get('ndcg@10', float('nan')):.4f})")
    write_json_report(json_path, {**report, "out": str(out)})


__all__ = ["train_deepwalk", "run_train_deepwalk"]
