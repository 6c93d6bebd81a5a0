"""Hyper-parameters of the sequence recommender (:class:`SequenceConfig`) and the artifact's constants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from annrec.errors import InputError

__all__ = ["SequenceConfig", "DAY_SECONDS", "EXTRA_PREFIX", "PAD", "FUTURE_TOLERANCE_S", "RENAMED",
           "config_from_stored"]

DAY_SECONDS = 86_400
EXTRA_PREFIX = "sequence/"
PAD = 0  # index 0 of the item and recency-bucket embeddings is padding; items are item_idx + 1
FUTURE_TOLERANCE_S = 300  # timestamps up to 5 minutes past "now" are accepted (clock skew)


# ---------------------------------------------------------------------------------------------- config
@dataclass
class SequenceConfig:
    """Hyper-parameters of :class:`SequenceTrainer` (defaults chosen on the validation split of ml-latest-small).

    Model: ``cell`` ``"gru"``/``"lstm"``, ``layers`` stacked RNN layers of ``units`` hidden units,
    ``item_dim`` item-embedding size, ``recency`` on/off with ``recency_dim`` and ``n_buckets`` (100, as in
    the retailer's design) recency bins spaced by ``bucket_scheme`` (``"log"``: 1 hour .. the longest history,
    log-spaced; ``"quantile"``: quantiles of the training events' recency), ``dropout`` (on embeddings, between
    RNN layers and before the output layer), ``attention`` (one causal multi-head self-attention block with
    ``heads`` heads and a residual connection + layer norm over the RNN outputs).

    Data: ``max_len`` events per window (front-padded; 20 = the 80th percentile of sequence length in that
    design), windows cut every ``stride`` events of each history, loss on the last ``train_last`` positions
    of each window (``0``: all positions, the classic "target = input shifted by one"), ``horizon`` future
    items per position as targets — at least ``horizon``, and ``horizon_fraction`` of the events so far (0.25
    mimics the top-N protocol, whose truth is the next 20% = a quarter of the 80% input), at most ``max_horizon``;
    ``max_windows_per_user`` (> 0) draws at most that many windows of each user per epoch; ``mask_seen``
    leaves the items already in the user's history out of the softmax (as the top-N protocol leaves them out
    of the ranking; full softmax only).

    Optimisation: ``loss`` ``"full"`` (softmax over the whole catalogue) or ``"sampled"`` (``n_negatives``
    shared negatives drawn from the unigram^0.75 distribution, log-Q corrected), AdamW (``lr`` multiplied by
    ``lr_decay`` after every epoch, ``weight_decay``), ``batch_size`` windows, at most ``epochs`` epochs, early stopping after ``patience``
    epochs without a better validation Recall@10 on a split of the training events: ``val_split``
    ``"temporal"`` holds out the last ``val_fraction`` of each user's events (the top-N protocol), ``"last"``
    each user's last event (leave-last-one); ``val_fraction`` 0 turns early stopping off. ``refit`` then
    retrains on all training events for the best epoch count.
    ``seed`` fixes initialisation and shuffling; ``device`` ``None`` picks CUDA when present; ``num_threads``
    (``None``: the machine's cores) is passed to ``torch.set_num_threads`` during fit; ``show_progress`` shows
    progress bars and per-epoch lines. Spellings of earlier releases: ``units`` (now ``factors``, the hidden
    units), ``n_negatives`` (``negatives``), ``threads`` (``num_threads``), ``progress`` (``show_progress``).
    """

    cell: str = "gru"
    layers: int = 1
    factors: int = 256
    item_dim: int = 64
    recency: bool = True
    recency_dim: int = 16
    n_buckets: int = 100
    bucket_scheme: str = "log"
    dropout: float = 0.4
    attention: bool = False
    heads: int = 2
    max_len: int = 20
    stride: int = 1
    train_last: int = 1
    horizon: int = 1
    horizon_fraction: float = 0.25
    max_horizon: int = 200
    max_windows_per_user: int = 0
    mask_seen: bool = True
    loss: str = "full"
    negatives: int = 1024
    lr: float = 2e-3
    lr_decay: float = 1.0
    weight_decay: float = 1e-2
    batch_size: int = 256
    epochs: int = 20
    patience: int = 2
    val_fraction: float = 0.2
    val_split: str = "temporal"
    refit: bool = True
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None
    show_progress: bool = True

    def validate(self) -> SequenceConfig:
        """Check every field; returns ``self``. Raises :class:`InputError` naming the bad field and its range."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise InputError(msg)

        need(self.cell in ("gru", "lstm"), f"cell must be 'gru' or 'lstm'; got {self.cell!r}")
        for name in ("layers", "factors", "item_dim", "recency_dim", "heads", "stride", "horizon", "batch_size",
                     "epochs", "negatives"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1,
                 f"{name} must be an integer >= 1; got {v!r}")
        need(self.num_threads is None or (isinstance(self.num_threads, (int, np.integer))
                                          and not isinstance(self.num_threads, bool) and self.num_threads >= 1),
             f"num_threads must be None (all cores) or an integer >= 1; got {self.num_threads!r}")
        need(self.device is None or isinstance(self.device, str), f"device must be None, 'cpu' or 'cuda'; got "
             f"{self.device!r}")
        need(isinstance(self.max_len, (int, np.integer)) and not isinstance(self.max_len, bool) and self.max_len >= 1,
             f"max_len must be an integer >= 1 (events per input window); got {self.max_len!r}")
        need(isinstance(self.n_buckets, (int, np.integer)) and self.n_buckets >= 2,
             f"n_buckets must be an integer >= 2; got {self.n_buckets!r}")
        need(self.bucket_scheme in ("log", "quantile"), f"bucket_scheme must be 'log' or 'quantile'; got "
             f"{self.bucket_scheme!r}")
        need(isinstance(self.train_last, (int, np.integer)) and 0 <= self.train_last,
             f"train_last must be an integer >= 0 (0 = every position); got {self.train_last!r}")
        need(0.0 <= float(self.horizon_fraction) <= 1.0, f"horizon_fraction must lie in [0, 1]; got "
             f"{self.horizon_fraction!r}")
        for name in ("max_horizon", "max_windows_per_user"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0,
                 f"{name} must be an integer >= 0 (0 = no limit); got {v!r}")
        need(0.0 <= float(self.dropout) < 1.0, f"dropout must lie in [0, 1); got {self.dropout!r}")
        need(self.val_split in ("temporal", "last"), f"val_split must be 'temporal' or 'last'; got "
             f"{self.val_split!r}")
        need(self.loss in ("full", "sampled"), f"loss must be 'full' or 'sampled'; got {self.loss!r}")
        need(float(self.lr) > 0 and float(self.weight_decay) >= 0, "lr must be > 0 and weight_decay >= 0")
        need(0.0 < float(self.lr_decay) <= 1.0, f"lr_decay must lie in (0, 1]; got {self.lr_decay!r}")
        need(isinstance(self.patience, (int, np.integer)) and self.patience >= 0,
             f"patience must be an integer >= 0; got {self.patience!r}")
        need(0.0 <= float(self.val_fraction) < 1.0, f"val_fraction must lie in [0, 1) (0 = no early stopping); "
             f"got {self.val_fraction!r}")
        if self.attention:
            need(self.factors % self.heads == 0, f"factors ({self.factors}) must be divisible by heads ({self.heads})")
        return self

    def model_dict(self) -> dict[str, Any]:
        """The fields that shape the network (stored in the artifact)."""
        keys = ("cell", "layers", "factors", "item_dim", "recency", "recency_dim", "n_buckets", "bucket_scheme",
                "dropout", "attention", "heads", "max_len")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """Every field (the trainer's ``get_params``)."""
        return dataclasses.asdict(self)


#: spellings of earlier releases -> field names
RENAMED = {"units": "factors", "n_negatives": "negatives", "threads": "num_threads", "progress": "show_progress"}


def config_from_stored(config: dict[str, Any]) -> SequenceConfig:
    """The :class:`SequenceConfig` of an artifact's ``config.json`` (old artifacts spell ``factors`` ``units``)."""
    known = {RENAMED.get(k, k): v for k, v in config.items()}
    return SequenceConfig(**{k: v for k, v in known.items() if k in SequenceConfig.__dataclass_fields__})

