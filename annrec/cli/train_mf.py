"""``annrec train mf``: biased matrix factorisation of explicit ratings, evaluated, written as Embeddings.

What the artifact is trained on (decided here, documented in ``docs/cli.md``): by default the model is
fitted on the TRAINING part of the explicit-ratings protocol (``random_split(data, 0.1, seed=0)``), its
RMSE on the held-out 10% goes into the manifest, and that very model is written — so the figures in
the manifest describe the vectors in the folder. ``--full`` then retrains on every rating (same
hyper-parameters, the epoch count found by early stopping on the split) and writes that model instead,
still with the split's figures (marked ``"artifact": "retrained on all ratings"``). Either way the
artifact's ``seen`` matrix holds every rating of the data set, so recommendations never propose an
item the user has rated.
"""

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
from annrec.eval.rating import rating_protocol
from annrec.eval.topn import topn_protocol


def load_ratings(dataset: str, data_dir: Path | None, ratings: Path | None, user_col: str, item_col: str,
                 rating_col: str | None, timestamp_col: str | None, items: Path | None = None,
                 items_id_col: str = "item_id"):
    """The ratings to train on: a MovieLens set, or a CSV/TSV/Parquet file with named columns.

    Raises:
        InputError: a ratings file without ``--rating-col``, or ratings that are all equal (implicit feedback).
        DataNotFoundError / DataError: from the loaders.
    """
    inter = load_training_data(dataset, data_dir, ratings, user_col, item_col, rating_col, timestamp_col,
                               need_rating="matrix factorisation", items=items, items_id_col=items_id_col)
    if inter.n_events and float(inter.rating.min()) == float(inter.rating.max()):
        raise InputError(f"every rating of {inter.name or 'the data'} is {float(inter.rating.min())}: matrix "
                         f"factorisation needs explicit ratings that vary (for implicit feedback use "
                         f"`annrec train als`)")
    return inter


def parse_y_range(text: str | None) -> tuple[float, float] | str | None:
    """``"auto"`` -> ``"auto"``, ``"none"`` -> ``None``, ``"0,5.5"`` -> ``(0.0, 5.5)``.

    Raises:
        InputError: anything else.
    """
    if text is None or text.strip().lower() == "auto":
        return "auto"
    if text.strip().lower() in ("none", "off", ""):
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"--y-range must be auto, none or 'low,high' such as 0,5.5; got {text!r}") from None
    return (lo, hi)


def print_rating_figures(fig: dict[str, Any]) -> None:
    console.print(f"RMSE {fig['rmse']:.4f} on {fig['test_events']:,} held-out ratings ({fig['protocol']})",
                  highlight=False, markup=False)
    if "bias_baseline_rmse" in fig:
        console.print(f"  bias-only baseline RMSE {fig['bias_baseline_rmse']:.4f}", highlight=False, markup=False)
    console.print(f"  best epoch {fig['best_epoch']} of {fig['epochs_run']} run (validation RMSE "
                  f"{fig['val_rmse']}), fit {fig['fit_seconds']} s", highlight=False, markup=False)


def print_topn_figures(fig: dict[str, Any], title: str = "top-N (temporal split)") -> None:
    from rich.table import Table

    k = fig["k"]
    t = Table(title=title)
    t.add_column("model")
    for c in (f"recall@{k}", f"ndcg@{k}", "mrr", f"map@{k}", f"coverage@{k}"):
        t.add_column(c, justify="right")
    for name, m in fig["table"].items():
        t.add_row(name, *[f"{m[c]:.4f}" for c in (f"recall@{k}", f"ndcg@{k}", "mrr", f"map@{k}", f"coverage@{k}")])
    console.print(t)


@train_app.command("mf")
def train_mf(
    dataset: DatasetOpt = "ml-latest-small",
    data_dir: DataDirOpt = None,
    ratings: RatingsOpt = None,
    user_col: UserColOpt = "user_id",
    item_col: ItemColOpt = "item_id",
    rating_col: RatingColOpt = None,
    timestamp_col: TimestampColOpt = None,
    items: ItemsOpt = None,
    items_id_col: ItemsIdColOpt = "item_id",
    factors: int = typer.Option(64, "--factors", help="Latent factors (the vectors get one more: the item bias)."),
    dim: int | None = hidden_option("--dim"),
    epochs: int = typer.Option(20, "--epochs", help="Maximum epochs (early stopping may end sooner)."),
    lr: float = typer.Option(0.02, "--lr", help="Peak learning rate of the one-cycle schedule."),
    reg: float = typer.Option(0.12, "--reg", help="Per-rating L2 penalty on the factors of a batch."),
    bias_reg: float = typer.Option(0.01, "--bias-reg", help="Per-rating L2 penalty on the biases."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Decoupled (AdamW) weight decay on all "
                                       "parameters."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd (momentum 0.9)."),
    schedule: str = typer.Option("onecycle", "--schedule", help="onecycle or constant learning rate."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Ratings per step."),
    y_range: str = typer.Option("auto", "--y-range", help="Sigmoid range scaling: auto (min-0.5, max+0.5), "
                                "none, or 'low,high' such as 0,5.5."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Share of the training ratings held out for "
                                       "early stopping (0: none)."),
    patience: int = typer.Option(3, "--patience", help="Epochs without a better validation RMSE before stopping."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="After early stopping, retrain on all training "
                               "ratings for the best epoch count."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialisation, validation carve-out and batch order."),
    device: DeviceOpt = None,
    num_threads: NumThreadsOpt = None,
    threads: int | None = hidden_option("--threads"),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Test share of the random split (RMSE)."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the random split (the protocol uses 0)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also report the bias-only baseline RMSE."),
    topn: bool = typer.Option(False, "--topn", help="Also train on the per-user temporal split and report "
                              "Recall@10 / NDCG@10 (one more fit)."),
    full: bool = typer.Option(False, "--full", help="Write a model retrained on ALL ratings (figures still come "
                              "from the split)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the per-epoch progress bar."),
    out: Path = typer.Option(..., "--out", help="Embeddings folder to write (replaced atomically)."),
    json_path: Path | None = json_option(),
) -> None:
    """Train biased matrix factorisation on explicit ratings; write item (q_i, b_i) and user (p_u, 1) vectors (MIPS)."""
    from annrec.train.mf import MatrixFactorization

    t0 = time.perf_counter()
    factors = deprecated_flag(dim, "--dim", "--factors", factors)
    num_threads = deprecated_flag(threads, "--threads", "--num-threads", num_threads)
    params = dict(factors=factors, epochs=epochs, lr=lr, reg=reg, bias_reg=bias_reg, weight_decay=weight_decay,
                  optimizer=optimizer, schedule=schedule, batch_size=batch_size, y_range=parse_y_range(y_range),
                  val_fraction=val_fraction, patience=patience, refit=refit, seed=seed, device=device,
                  num_threads=num_threads)
    params = MatrixFactorization(**params).get_params()  # validate before loading anything
    params["y_range"] = tuple(params["y_range"]) if isinstance(params["y_range"], list) else params["y_range"]
    inter = load_ratings(dataset, data_dir, ratings, user_col, item_col, rating_col, timestamp_col, items, items_id_col)
    console.print(f"mf on {inter.name}: {inter.n_events:,} ratings, {inter.n_users:,} users, "
                  f"{inter.n_items:,} items", highlight=False, markup=False)
    mf, train, rating_fig = rating_protocol(inter, params, test_fraction=test_fraction, split_seed=split_seed,
                                            baseline=baseline, progress=progress)
    print_rating_figures(rating_fig)
    figures: dict[str, Any] = {"rating": rating_fig}
    if topn:
        _, _, _, topn_fig = topn_protocol(inter, params, progress=progress)
        figures["topn"] = topn_fig
        print_topn_figures(topn_fig)
    if full:
        final = MatrixFactorization(**{**params, "epochs": mf.best_epoch_, "val_fraction": 0.0,
                                       "show_progress": progress}).fit(inter)
        figures["artifact"] = f"retrained on all {inter.n_events} ratings for {mf.best_epoch_} epochs"
    else:
        final = mf
        figures["artifact"] = "the model evaluated above (trained on the training part of the random split)"
    emb = final.to_embeddings(seen=inter, figures=figures)
    emb.save(out)
    seconds = round(time.perf_counter() - t0, 2)
    console.print(f"wrote {out}: {len(emb):,} item vectors and {len(emb.queries):,} user vectors of dim {emb.dim} "
                  f"(metric ip), {figures['artifact']}; {seconds} s", highlight=False, markup=False)
    write_json_report(json_path, {"command": "train mf", "out": str(out), "dataset": inter.name,
                                  "data_hash": inter.fingerprint(), "params": emb.manifest["params"],
                                  "figures": figures, "counts": emb.manifest["counts"], "seconds": seconds})


# rating_protocol / topn_protocol live in annrec.eval.rating / annrec.eval.topn; imported here for old callers
__all__ = ["train_mf", "load_ratings", "parse_y_range", "rating_protocol", "topn_protocol"]
