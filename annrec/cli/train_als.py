"""``annrec train als``: implicit-feedback ALS (``implicit``) with the top-N evaluation and a small search."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from annrec.cli.apps import console, json_option, train_app, write_json_report
from annrec.cli.data_options import (DataDirOpt, DatasetOpt, DeviceOpt, ItemColOpt, ItemsIdColOpt, ItemsOpt,
                                     NumThreadsOpt, RatingColOpt, RatingsOpt, TimestampColOpt, UserColOpt,
                                     deprecated_flag, hidden_option, load_training_data)
from annrec.errors import InputError

FIT_ON = ("all", "train")


def print_topn_table(table: dict[str, dict[str, Any]], k: int, title: str) -> None:
    """One row per metric, one column per model (fits an 80-column terminal)."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric", no_wrap=True)
    for name in table:
        t.add_column(name, justify="right", no_wrap=True)
    for c in (f"recall@{k}", f"ndcg@{k}", "mrr", f"map@{k}", f"precision@{k}", f"coverage@{k}", "users"):
        t.add_row(c, *[str(m.get(c, "")) if c == "users" else f"{m.get(c, float('nan')):.4f}"
                       for m in table.values()])
    console.print(t)


def run_train_als(inter, params: dict[str, Any], *, search: bool = False, search_max_fits: int = 40,
                  val_fraction: float = 0.2, evaluate: bool = True, test_fraction: float = 0.2, k: int = 10,
                  baselines: tuple[str, ...] = ("popularity", "item_knn"), fit_on: str = "all",
                  progress: bool = True):
    """The command's work, callable from Python: returns ``(embeddings, report)``.

    Steps: (1) when ``search`` or ``evaluate``, split ``inter`` with the top-N protocol
    (``temporal_user_split(inter, test_fraction)``); (2) ``search``: :func:`~annrec.train.search.search_als` on the
    TRAINING part only (its own validation split), which fixes the parameters; (3) ``evaluate``: fit on the
    training part, score ALS and the baselines on the test part; (4) fit the artifact's model on ``fit_on``
    (``"all"`` events, default, so that serving knows every user's latest history; or ``"train"``: the
    evaluated model itself) and export it.

    Raises:
        InputError: bad parameters, ``fit_on`` not in ``all``/``train``.
        DataError: unusable data (see :class:`~annrec.train.als.ImplicitALS`).
    """
    from annrec.data import temporal_user_split
    from annrec.eval.baselines import baseline_recommenders
    from annrec.eval.topn import evaluate_topn_table
    from annrec.train.als import ImplicitALS
    from annrec.train.search import search_als

    if fit_on not in FIT_ON:
        raise InputError(f"--fit-on must be one of {', '.join(FIT_ON)}; got {fit_on!r}")
    params = ImplicitALS(**params).get_params()  # validate before any work
    t0 = time.perf_counter()
    report: dict[str, Any] = {"dataset": inter.name, "n_events": inter.n_events, "n_users": inter.n_users,
                              "n_items": inter.n_items, "data_hash": inter.fingerprint()}
    figures: dict[str, Any] = {}
    train = test = evaluated = None
    if search or evaluate:
        train, test = temporal_user_split(inter, test_fraction)
        report["split"] = {"protocol": f"temporal_user_split({test_fraction})", "train_events": train.n_events,
                           "test_events": test.n_events}
    if search:
        result = search_als(train, base_params=params, max_fits=search_max_fits, val_fraction=val_fraction,
                                k=k, progress=progress)
        params = dict(result.best_params)
        figures["search"] = result.to_dict()
    if evaluate:
        evaluated = ImplicitALS(**{**params, "show_progress": progress}).fit(train)
        knn_threads = 0 if params["num_threads"] is None else params["num_threads"]
        recs = {"als": evaluated.recommend_fn(), **baseline_recommenders(train, baselines, num_threads=knn_threads)}
        table = evaluate_topn_table(recs, train, test, k)
        figures["topn"] = {"protocol": f"temporal_user_split({test_fraction}), items seen in training excluded",
                           "k": k, "table": table, "als_params": params,
                           "trained_on": "train part of the split"}
    if fit_on == "train" and evaluated is not None:
        final, final_data = evaluated, train
    else:
        final_data = inter if fit_on == "all" else (train if train is not None else
                                                     temporal_user_split(inter, test_fraction)[0])
        final = ImplicitALS(**{**params, "show_progress": progress}).fit(final_data)
    figures["fit_on"] = fit_on
    emb = final.to_embeddings(figures=figures)
    report.update(params=params, figures=figures, counts=final.stats_, seconds=round(time.perf_counter() - t0, 2))
    return emb, report


@train_app.command("als")
def train_als(
    dataset: DatasetOpt = "ml-latest-small",
    data_dir: DataDirOpt = None,
    ratings: RatingsOpt = None,
    user_col: UserColOpt = "user_id",
    item_col: ItemColOpt = "item_id",
    rating_col: RatingColOpt = None,
    timestamp_col: TimestampColOpt = None,
    items: ItemsOpt = None,
    items_id_col: ItemsIdColOpt = "item_id",
    factors: int = typer.Option(32, "--factors", help="Latent dimension."),
    regularization: float = typer.Option(0.01, "--regularization", help="L2 regularisation lambda."),
    iterations: int = typer.Option(15, "--iterations", help="ALS sweeps."),
    alpha: float = typer.Option(1.0, "--alpha", help="Confidence slope: c = 1 + alpha * r (Hu et al. 2008)."),
    weighting: str = typer.Option("none", "--weighting", help="none, bm25 or tfidf weighting of r."),
    binarize: bool = typer.Option(True, "--binarize/--no-binarize", help="r = 1 per observed pair (else the rating)."),
    min_rating: float | None = typer.Option(None, "--min-rating", help="Drop events rated below this first."),
    on_empty: str = typer.Option("drop", "--on-empty", help="Users/items emptied by --min-rating: drop (counted) "
                                 "or error."),
    seed: int = typer.Option(0, "--seed", help="Seed of the factor initialisation."),
    num_threads: NumThreadsOpt = None,
    device: DeviceOpt = None,
    threads: int | None = hidden_option("--threads"),
    gpu: bool | None = typer.Option(None, "--gpu/--no-gpu", hidden=True, help="Deprecated: use --device."),
    search: bool = typer.Option(False, "--search", help="Pick factors, regularization, alpha, iterations and "
                                "weighting on a validation split of the training part, then retrain."),
    search_max_fits: int = typer.Option(40, "--search-max-fits", help="At most this many fits in --search."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Per-user validation fraction for --search."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Top-N evaluation (temporal split) with the "
                                  "baselines."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Per-user test fraction of the split."),
    k: int = typer.Option(10, "--k", help="Cut-off of the top-N metrics."),
    baselines: str = typer.Option("popularity,item_knn", "--baselines", help="Comma-separated baselines to "
                                  "evaluate next to ALS (popularity, item_knn; empty for none)."),
    fit_on: str = typer.Option("all", "--fit-on", help="Data of the artifact's model: all events, or the train "
                               "part (the evaluated model)."),
    out: Path = typer.Option(..., "--out", help="Embeddings folder to write (replaced atomically)."),
    json_path: Path | None = json_option(),
) -> None:
    """Implicit-feedback ALS (implicit library): user and item vectors for maximum inner product search."""
    num_threads = deprecated_flag(threads, "--threads", "--num-threads", num_threads)
    device = deprecated_flag(None if gpu is None else ("cuda" if gpu else "cpu"), "--gpu/--no-gpu", "--device",
                             device)
    params = dict(factors=factors, regularization=regularization, iterations=iterations, alpha=alpha,
                  weighting=weighting, binarize=binarize, min_rating=min_rating, seed=seed, device=device,
                  num_threads=num_threads, on_empty=on_empty)
    from annrec.train.als import ImplicitALS

    ImplicitALS(**params)  # bad parameters fail before the data is loaded
    names = tuple(b.strip() for b in baselines.split(",") if b.strip())
    inter = load_training_data(dataset, data_dir, ratings, user_col, item_col, rating_col, timestamp_col,
                               items=items, items_id_col=items_id_col)
    console.print(f"[bold]ALS[/] on {inter!r}")
    emb, report = run_train_als(inter, params, search=search, search_max_fits=search_max_fits,
                                val_fraction=val_fraction, evaluate=evaluate, test_fraction=test_fraction, k=k,
                                baselines=names, fit_on=fit_on, progress=True)
    emb.save(out)
    report["out"] = str(out)
    figures = report["figures"]
    if "search" in figures:
        s = figures["search"]
        console.print(f"search: {s['n_fits']} fits in {s['seconds']:.1f} s on the training part's validation "
                      f"split; best validation {s['metric']} {s['best_score']:.4f} with {s['best_params']}")
    if "topn" in figures:
        print_topn_table(figures["topn"]["table"], k, f"top-N on {inter.name} (temporal split, k={k})")
    c = report["counts"]
    console.print(f"wrote {out}: {c['n_items_with_events']} item vectors, {c['n_users_with_events']} user vectors "
                  f"(dim {emb.dim}, metric ip); left out: {c['n_items_without_events']} items / "
                  f"{c['n_users_without_events']} users without events, {c['n_items_emptied_by_min_rating']} items / "
                  f"{c['n_users_emptied_by_min_rating']} users emptied by --min-rating")
    write_json_report(json_path, report)
