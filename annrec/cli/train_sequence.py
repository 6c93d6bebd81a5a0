"""``annrec train sequence`` (the sequence recommender: GRU, LSTM or transformer) and ``annrec recommend-next
ITEM_ID…``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from annrec.cli.apps import (app, console, deprecated_option, json_option, resolve_deprecated, train_app,
                             write_json_report)
from annrec.cli.data_options import (DataDirOpt, DatasetOpt, DeviceOpt, ItemColOpt, ItemsIdColOpt, ItemsOpt,
                                     NumThreadsOpt, RatingColOpt, RatingsOpt, TimestampColOpt, UserColOpt,
                                     deprecated_flag, hidden_option, load_training_data)
from annrec.errors import InputError
from annrec.train.sequence import SequenceConfig, SequenceTrainer


_D = SequenceConfig()  # the CLI defaults are the trainer's defaults


@train_app.command("sequence")
def train_sequence(
    dataset: DatasetOpt = "ml-latest-small",
    data_dir: DataDirOpt = None,
    ratings: RatingsOpt = None,
    user_col: UserColOpt = "user_id",
    item_col: ItemColOpt = "item_id",
    rating_col: RatingColOpt = None,
    timestamp_col: TimestampColOpt = None,
    items: ItemsOpt = None,
    items_id_col: ItemsIdColOpt = "item_id",
    encoder: str = typer.Option(_D.encoder, "--encoder", help="Sequence encoder: gru, lstm or transformer "
                                "(SASRec-style causal self-attention)."),
    cell: str | None = hidden_option("--cell"),
    n_layers: int = typer.Option(_D.n_layers, "--n-layers", help="Stacked RNN layers or transformer blocks."),
    layers: int | None = hidden_option("--layers"),
    factors: int = typer.Option(_D.factors, "--factors", help="Hidden units of the encoder (query/item vectors "
                                "have factors + 1 dimensions)."),
    units: int | None = hidden_option("--units"),
    item_dim: int = typer.Option(_D.item_dim, "--item-dim", help="Item embedding size."),
    dropout: float = typer.Option(_D.dropout, "--dropout", help="Dropout on embeddings, between layers, before the "
                                  "output layer."),
    attention: bool = typer.Option(_D.attention, "--attention/--no-attention", help="Causal self-attention over the "
                                   "RNN outputs (gru/lstm)."),
    n_heads: int = typer.Option(_D.n_heads, "--n-heads", help="Attention heads of the transformer and of "
                                "--attention (must divide --factors)."),
    heads: int | None = hidden_option("--heads"),
    recency: bool = typer.Option(_D.recency, "--recency/--no-recency", help="Recency-bucket embedding of each event."),
    n_buckets: int = typer.Option(_D.n_buckets, "--buckets", help="Recency buckets (days before the last event)."),
    bucket_scheme: str = typer.Option(_D.bucket_scheme, "--bucket-scheme", help="Recency bin edges: log or quantile."),
    max_len: int = typer.Option(_D.max_len, "--max-len", help="Events per training sequence and per query "
                                "(front-padded; the transformer's positional table)."),
    training: str = typer.Option(_D.training, "--training", help="all_positions (each history in chunks of "
                                 "--max-len, loss at every position) or windows (one window per cut point)."),
    max_chunks_per_user: int = typer.Option(_D.max_chunks_per_user, "--max-chunks-per-user", help="all_positions: "
                                            "keep each user's last N chunks (0 = all; 1 = the last --max-len events)."),
    horizon: int = typer.Option(_D.horizon, "--horizon", help="At least this many future items are each cut "
                                "point's targets (1 = the next item)."),
    horizon_fraction: float = typer.Option(_D.horizon_fraction, "--horizon-fraction", help="...and this share of "
                                           "the history so far (0.25 = the top-N protocol's 20% future; 0 = off)."),
    max_horizon: int = typer.Option(_D.max_horizon, "--max-horizon", help="At most this many targets per cut point "
                                    "(0 = no limit)."),
    mask_seen: bool = typer.Option(_D.mask_seen, "--mask-seen/--no-mask-seen", help="Leave the user's earlier items "
                                   "out of the softmax (full softmax only)."),
    stride: int = typer.Option(_D.stride, "--stride", help="windows: a training window ends every STRIDE events of "
                               "a history."),
    train_last: int = typer.Option(_D.train_last, "--train-last", help="windows: loss on the last N positions of "
                                   "each window (0 = all)."),
    max_windows_per_user: int = typer.Option(_D.max_windows_per_user, "--max-windows-per-user", help="windows: draw "
                                             "at most this many windows of each user per epoch (0 = all)."),
    loss: str = typer.Option(_D.loss, "--loss", help="full (softmax over all items), sampled (sampled softmax) or "
                             "in_batch (the batch's targets as negatives)."),
    negatives: int = typer.Option(_D.negatives, "--negatives", help="Negatives per batch for --loss sampled."),
    negative: int | None = hidden_option("--negative"),
    lr: float = typer.Option(_D.lr, "--lr", help="AdamW learning rate."),
    lr_decay: float = typer.Option(_D.lr_decay, "--lr-decay", help="Multiply the learning rate by this after every "
                                   "epoch (1 = constant)."),
    weight_decay: float = typer.Option(_D.weight_decay, "--weight-decay", help="AdamW weight decay."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", help="Sequences (chunks or windows) per batch."),
    epochs: int = typer.Option(_D.epochs, "--epochs", help="Maximum epochs (early stopping picks the best)."),
    patience: int = typer.Option(_D.patience, "--patience", help="Epochs without a better validation Recall@10 "
                                 "before stopping."),
    val_fraction: float = typer.Option(_D.val_fraction, "--val-fraction", help="Per-user share of the latest "
                                       "training events held out for early stopping (0 = no early stopping)."),
    val_split: str = typer.Option(_D.val_split, "--val-split", help="temporal (last val-fraction of each user) or "
                                  "last (each user's last event)."),
    refit: bool = typer.Option(_D.refit, "--refit/--no-refit", help="Retrain on all training events for the best "
                               "epoch count."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of initialisation and shuffling."),
    device: DeviceOpt = None,
    num_threads: NumThreadsOpt = None,
    threads: int | None = hidden_option("--threads"),
    evaluate: bool = typer.Option(False, "--eval/--no-eval", help="Train on the training half of the top-N "
                                  "protocol's per-user temporal split (80/20) and report Recall@10, NDCG@10, ... "
                                  "on the test half (the artifact is then the 80% model)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars and per-epoch lines."),
    out: Path = typer.Option(..., "--out", help="Embeddings folder to write (replaced atomically)."),
    json_path: Path | None = json_option(),
) -> None:
    """Train the sequence recommender (item + recency embeddings, GRU/LSTM/transformer encoder).

    The artifact (metric ip) holds the item vectors (output-layer row and bias of each item) and the encoder that
    turns a sequence into a query (final hidden state and a constant 1); index it with `annrec index build` and
    query it with `annrec recommend-next`.
    """
    from annrec.data import temporal_user_split

    factors = deprecated_flag(units, "--units", "--factors", factors)
    negatives = deprecated_flag(negative, "--negative", "--negatives", negatives)
    num_threads = deprecated_flag(threads, "--threads", "--num-threads", num_threads)
    encoder = deprecated_flag(cell, "--cell", "--encoder", encoder)
    n_layers = deprecated_flag(layers, "--layers", "--n-layers", n_layers)
    n_heads = deprecated_flag(heads, "--heads", "--n-heads", n_heads)
    trainer = SequenceTrainer(encoder=encoder, n_layers=n_layers, factors=factors, item_dim=item_dim, dropout=dropout,
                              attention=attention, n_heads=n_heads, recency=recency, n_buckets=n_buckets,
                              bucket_scheme=bucket_scheme, max_len=max_len, training=training,
                              max_chunks_per_user=max_chunks_per_user, horizon=horizon,
                              horizon_fraction=horizon_fraction, max_horizon=max_horizon, mask_seen=mask_seen,
                              stride=stride, train_last=train_last, max_windows_per_user=max_windows_per_user,
                              loss=loss, negatives=negatives, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                              batch_size=batch_size, epochs=epochs, patience=patience, val_fraction=val_fraction,
                              val_split=val_split, refit=refit, seed=seed, device=device,
                              num_threads=num_threads, show_progress=progress)
    data = load_training_data(dataset, data_dir, ratings, user_col, item_col, rating_col, timestamp_col,
                              items=items, items_id_col=items_id_col,
                              need_timestamp="the sequence recommender")
    test = None
    if evaluate:
        data, test = temporal_user_split(data, 0.2)
    t0 = time.perf_counter()
    emb = trainer.fit(data).to_embeddings()
    seconds = time.perf_counter() - t0
    figures: dict = {"train_seconds": round(seconds, 1), "best_epoch": trainer.result.best_epoch,
                     "best_val_recall@10": trainer.result.best_val_recall, "device": str(trainer.device)}
    if test is not None:
        from annrec.metrics import evaluate_topn

        figures["topn"] = evaluate_topn(trainer.recommend_fn(), data, test, 10)
    emb.manifest["figures"] = figures
    emb.save(out)
    console.print(f"[bold]sequence[/] ({trainer.config.encoder}, {trainer.config.training}) {len(emb)} items -> "
                  f"{out} (dim {emb.dim}, metric ip), trained in "
                  f"{seconds:.1f} s on {trainer.device} (best epoch {trainer.result.best_epoch})")
    if "topn" in figures:
        m = figures["topn"]
        console.print("temporal split (test 20%): " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "users"))
    write_json_report(json_path, {"command": "train sequence", "out": str(out), "dataset": dataset,
                                  "params": trainer.get_params(), **figures,
                                  "history": trainer.result.history})


def _parse_timestamps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--timestamps must be integers (Unix seconds) separated by commas; got {text!r}") from None


@app.command("recommend-next")
def recommend_next_cmd(
    item_ids: list[str] = typer.Argument(..., help="The sequence's item ids, oldest first."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help="Sequence Embeddings folder (annrec train "
                                           "sequence --out)."),
    index_dir: Path | None = typer.Option(None, "--index", help="Index folder built from it (default: exact search)."),
    timestamps: str | None = typer.Option(None, "--timestamps", help="Unix seconds of each item, comma-separated."),
    now: int | None = typer.Option(None, "--now", help="Reference time of the recency feature (default: the last "
                                   "timestamp)."),
    k: int = typer.Option(10, "-k", "--k", help="How many items."),
    include_input: bool = typer.Option(False, "--include-input", help="Allow the sequence's own items in the answer."),
    json_path: Path | None = json_option(),
    model: Path | None = deprecated_option("--model"),
) -> None:
    """Next-item recommendations after a sequence of items (maximum inner product search with its encoder's final
    state)."""
    model = resolve_deprecated(embeddings, model, "--embeddings", "--model", required=True)
    from annrec.embeddings import Embeddings
    from annrec.index import load_index
    from annrec.recommend import Recommender
    from annrec.train.sequence import query_encoder_from_embeddings

    emb = Embeddings.load(model)
    index = load_index(index_dir) if index_dir is not None else None
    rec = Recommender(emb, index, encoder=query_encoder_from_embeddings(emb))
    recs, warnings = rec.recommend_next(item_ids, k, timestamps=_parse_timestamps(timestamps), now=now,
                                        exclude_input=not include_input)
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    items = emb.items or {}
    for rank, r in enumerate(recs, 1):
        title = (r.metadata or items.get(r.item_id) or {}).get("title", "")
        console.print(f"{rank:3d}. {r.item_id}  {title}  [dim]{r.score:.3f}[/]", highlight=False)
    write_json_report(json_path, {"command": "recommend-next", "model": str(model),
                                  "index": str(index_dir) if index_dir else None, "input": item_ids,
                                  "warnings": warnings,
                                  "items": [{"item_id": r.item_id, "score": r.score,
                                             "title": (r.metadata or items.get(r.item_id) or {}).get("title")}
                                            for r in recs]})


__all__ = ["train_sequence", "recommend_next_cmd"]
