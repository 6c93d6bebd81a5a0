"""``annrec train sequence`` (the sequence recommender: GRU, LSTM or transformer) and ``annrec recommend-next
ITEM_ID…``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from annrec.cli.apps import (app, console, deprecated_option, json_option, resolve_deprecated, train_app,
                             write_json_report)
from annrec.cli.data_options import (DataDirOpt, DatasetOpt, DeviceOpt, ItemColOpt, ItemsIdColOpt, ItemsOpt,
                                     NumThreadsOpt, RatingColOpt, RatingsOpt, TimestampColOpt, UserColOpt,
                                     deprecated_flag, hidden_option, load_training_data)
from annrec.errors import InputError
from annrec.train.sequence import SequenceConfig, SequenceTrainer


_D = SequenceConfig()  # the CLI defaults are the trainer's defaults


# the options of `train sequence` (Typer's Annotated aliases, as in annrec.cli.data_options)
_EncoderOpt = Annotated[str, typer.Option(
    "--encoder", help="Sequence encoder: gru, lstm or transformer (SASRec-style causal self-attention).")]
_NLayersOpt = Annotated[int, typer.Option(
    "--n-layers", help="Stacked RNN layers or transformer blocks.")]
_FactorsOpt = Annotated[int, typer.Option(
    "--factors", help="Hidden units of the encoder (query/item vectors have factors + 1 dimensions).")]
_ItemDimOpt = Annotated[int, typer.Option(
    "--item-dim", help="Item embedding size.")]
_DropoutOpt = Annotated[float, typer.Option(
    "--dropout", help="Dropout on embeddings, between layers, before the output layer.")]
_AttentionOpt = Annotated[bool, typer.Option(
    "--attention/--no-attention", help="Causal self-attention over the RNN outputs (gru/lstm).")]
_NHeadsOpt = Annotated[int, typer.Option(
    "--n-heads", help="Attention heads of the transformer and of --attention (must divide --factors).")]
_RecencyOpt = Annotated[bool, typer.Option(
    "--recency/--no-recency", help="Recency-bucket embedding of each event.")]
_TimeFeatureOpt = Annotated[str, typer.Option(
    "--time-feature", help="What the time buckets measure: recency (days before the sequence's last event) or gap "
    "(days since the previous event: the same at every position; TiSASRec-style).")]
_NBucketsOpt = Annotated[int, typer.Option(
    "--buckets", help="Recency buckets (days before the last event).")]
_BucketSchemeOpt = Annotated[str, typer.Option(
    "--bucket-scheme", help="Recency bin edges: log or quantile.")]
_MaxLenOpt = Annotated[int, typer.Option(
    "--max-len", help="Events per training sequence and per query (front-padded; the transformer's positional table)."
    "Events per training sequence and per query (front-padded; the transformer's positional table).")]
_TrainingOpt = Annotated[str, typer.Option(
    "--training", help="all_positions (each history in chunks of --max-len, loss at every position) or windows (one "
    "window per cut point).")]
_MaxChunksPerUserOpt = Annotated[int, typer.Option(
    "--max-chunks-per-user", help="all_positions: keep each user's last N chunks (0 = all; 1 = the last --max-len "
    "events).")]
_HorizonOpt = Annotated[int, typer.Option(
    "--horizon", help="At least this many future items are each cut point's targets (1 = the next item).")]
_HorizonFractionOpt = Annotated[float, typer.Option(
    "--horizon-fraction", help="...and this share of the history so far (0.25 = the top-N protocol's 20% future; 0 = "
    "off).")]
_MaxHorizonOpt = Annotated[int, typer.Option(
    "--max-horizon", help="At most this many targets per cut point (0 = no limit).")]
_MaskSeenOpt = Annotated[bool, typer.Option(
    "--mask-seen/--no-mask-seen", help="Leave the user's earlier items out of the softmax (full softmax only).")]
_StrideOpt = Annotated[int, typer.Option(
    "--stride", help="windows: a training window ends every STRIDE events of a history.")]
_TrainLastOpt = Annotated[int, typer.Option(
    "--train-last", help="windows: loss on the last N positions of each window (0 = all).")]
_MaxWindowsPerUserOpt = Annotated[int, typer.Option(
    "--max-windows-per-user", help="windows: draw at most this many windows of each user per epoch (0 = all).")]
_LossOpt = Annotated[str, typer.Option(
    "--loss", help="full (softmax over all items), sampled (sampled softmax) or in_batch (the batch's targets as "
    "negatives).")]
_NegativesOpt = Annotated[int, typer.Option(
    "--negatives", help="Negatives per batch for --loss sampled.")]
_LrOpt = Annotated[float, typer.Option(
    "--lr", help="AdamW learning rate.")]
_LrDecayOpt = Annotated[float, typer.Option(
    "--lr-decay", help="Multiply the learning rate by this after every epoch (1 = constant).")]
_WeightDecayOpt = Annotated[float, typer.Option(
    "--weight-decay", help="AdamW weight decay.")]
_BatchSizeOpt = Annotated[int, typer.Option(
    "--batch-size", help="Sequences (chunks or windows) per batch.")]
_EpochsOpt = Annotated[int, typer.Option(
    "--epochs", help="Maximum epochs (early stopping picks the best).")]
_PatienceOpt = Annotated[int, typer.Option(
    "--patience", help="Epochs without a better validation Recall@10 before stopping.")]
_ValFractionOpt = Annotated[float, typer.Option(
    "--val-fraction", help="Per-user share of the latest training events held out for early stopping (0 = no early "
    "stopping).")]
_ValSplitOpt = Annotated[str, typer.Option(
    "--val-split", help="temporal (last val-fraction of each user) or last (each user's last event).")]
_RefitOpt = Annotated[bool, typer.Option(
    "--refit/--no-refit", help="Retrain on all training events for the best epoch count.")]
_SeedOpt = Annotated[int, typer.Option(
    "--seed", help="Seed of initialisation and shuffling.")]
_EvaluateOpt = Annotated[bool, typer.Option(
    "--eval/--no-eval", help="Train on the training half of the top-N protocol's per-user temporal split (80/20) and "
    "report Recall@10, NDCG@10, ... on the test half (the artifact is then the 80% model).")]
_ProgressOpt = Annotated[bool, typer.Option(
    "--progress/--no-progress", help="Progress bars and per-epoch lines.")]
_OutOpt = Annotated[Path, typer.Option(
    "--out", help="Embeddings folder to write (replaced atomically).")]


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
    encoder: _EncoderOpt = _D.encoder,
    cell: str | None = hidden_option("--cell"),
    n_layers: _NLayersOpt = _D.n_layers,
    layers: int | None = hidden_option("--layers"),
    factors: _FactorsOpt = _D.factors,
    units: int | None = hidden_option("--units"),
    item_dim: _ItemDimOpt = _D.item_dim,
    dropout: _DropoutOpt = _D.dropout,
    attention: _AttentionOpt = _D.attention,
    n_heads: _NHeadsOpt = _D.n_heads,
    heads: int | None = hidden_option("--heads"),
    recency: _RecencyOpt = _D.recency,
    time_feature: _TimeFeatureOpt = _D.time_feature,
    n_buckets: _NBucketsOpt = _D.n_buckets,
    bucket_scheme: _BucketSchemeOpt = _D.bucket_scheme,
    max_len: _MaxLenOpt = _D.max_len,
    training: _TrainingOpt = _D.training,
    max_chunks_per_user: _MaxChunksPerUserOpt = _D.max_chunks_per_user,
    horizon: _HorizonOpt = _D.horizon,
    horizon_fraction: _HorizonFractionOpt = _D.horizon_fraction,
    max_horizon: _MaxHorizonOpt = _D.max_horizon,
    mask_seen: _MaskSeenOpt = _D.mask_seen,
    stride: _StrideOpt = _D.stride,
    train_last: _TrainLastOpt = _D.train_last,
    max_windows_per_user: _MaxWindowsPerUserOpt = _D.max_windows_per_user,
    loss: _LossOpt = _D.loss,
    negatives: _NegativesOpt = _D.negatives,
    negative: int | None = hidden_option("--negative"),
    lr: _LrOpt = _D.lr,
    lr_decay: _LrDecayOpt = _D.lr_decay,
    weight_decay: _WeightDecayOpt = _D.weight_decay,
    batch_size: _BatchSizeOpt = _D.batch_size,
    epochs: _EpochsOpt = _D.epochs,
    patience: _PatienceOpt = _D.patience,
    val_fraction: _ValFractionOpt = _D.val_fraction,
    val_split: _ValSplitOpt = _D.val_split,
    refit: _RefitOpt = _D.refit,
    seed: _SeedOpt = _D.seed,
    device: DeviceOpt = None,
    num_threads: NumThreadsOpt = None,
    threads: int | None = hidden_option("--threads"),
    evaluate: _EvaluateOpt = False,
    progress: _ProgressOpt = True,
    out: _OutOpt = ...,
    json_path: Path | None = json_option(),
) -> None:
    """Train the sequence recommender (item + recency embeddings, GRU/LSTM/transformer encoder).

    The artifact (metric ip) holds the item vectors (output-layer row and bias of each item) and the encoder that
    turns a sequence into a query (final hidden state and a constant 1); index it with `annrec index build` and
    query it with `annrec recommend-next`.
    """
    old = {"--units": units, "--negative": negative, "--threads": threads, "--cell": cell, "--layers": layers,
           "--heads": heads}
    params = {k: v for k, v in locals().items() if k in SequenceConfig.__dataclass_fields__}
    trainer = _trainer(params, old, progress)
    data = load_training_data(dataset, data_dir, ratings, user_col, item_col, rating_col, timestamp_col,
                              items=items, items_id_col=items_id_col,
                              need_timestamp="the sequence recommender")
    _fit_and_write(trainer, data, evaluate, out, json_path, dataset)


#: deprecated flag -> (its new flag, the SequenceConfig field)
_OLD_FLAGS = {"--units": ("--factors", "factors"), "--negative": ("--negatives", "negatives"),
              "--threads": ("--num-threads", "num_threads"), "--cell": ("--encoder", "encoder"),
              "--layers": ("--n-layers", "n_layers"), "--heads": ("--n-heads", "n_heads")}


def _trainer(params: dict, old: dict, progress: bool) -> SequenceTrainer:
    """The trainer of the command's options (deprecated flags, when given, win with a warning on stderr)."""
    for flag, value in old.items():
        new, name = _OLD_FLAGS[flag]
        params[name] = deprecated_flag(value, flag, new, params[name])
    return SequenceTrainer(**params, show_progress=progress)


def _fit_and_write(trainer: SequenceTrainer, data, evaluate: bool, out: Path, json_path: Path | None,
                   dataset: str) -> None:
    """Fit (on the 80% training half with ``evaluate``, then score the 20%), save the artifact, print, report."""
    from annrec.data import temporal_user_split

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
