"""Hyper-parameters of the sequence recommender (:class:`SequenceConfig`) and the artifact's constants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from annrec.errors import InputError

__all__ = ["SequenceConfig", "DAY_SECONDS", "EXTRA_PREFIX", "PAD", "FUTURE_TOLERANCE_S", "RENAMED",
           "ENCODERS", "TRAINING_MODES", "TIME_FEATURES", "GAP_MIN_DAYS", "LOSSES", "config_from_stored"]

DAY_SECONDS = 86_400
EXTRA_PREFIX = "sequence/"
PAD = 0  # index 0 of the item and recency-bucket embeddings is padding; items are item_idx + 1
FUTURE_TOLERANCE_S = 300  # timestamps up to 5 minutes past "now" are accepted (clock skew)
#: the encoders behind :class:`SequenceConfig` ``encoder``
ENCODERS = ("gru", "lstm", "transformer")
#: ``training``: one sequence per chunk of a history, loss on every position / one window per cut point
TRAINING_MODES = ("all_positions", "windows")
#: ``time_feature``: what the time-bucket embedding of an event measures (see :class:`SequenceConfig`)
TIME_FEATURES = ("recency", "gap")
#: the smallest log-spaced edge of the ``"gap"`` buckets: 10 seconds (ratings of one sitting are seconds apart)
GAP_MIN_DAYS = 10.0 / DAY_SECONDS
#: ``loss``: softmax over the catalogue / sampled softmax / in-batch negatives (both log-Q corrected)
LOSSES = ("full", "sampled", "in_batch")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------------------------------------- config
@dataclass
class SequenceConfig:
    """Hyper-parameters of :class:`SequenceTrainer` (defaults chosen on the validation split of ml-latest-small
    unless a source is named).

    Encoder (:data:`ENCODERS`): ``encoder`` ``"gru"``/``"lstm"`` (a recurrent net, GRU4Rec, Hidasi et al. 2016)
    or ``"transformer"`` (SASRec-style causal self-attention, Kang & McAuley 2018: learned positional embeddings,
    a table of ``max_len`` rows, pre-layer-norm blocks); ``n_layers`` stacked layers (RNN layers or transformer
    blocks; 1 — SASRec uses 2), ``factors`` hidden units (= the query / item vector size minus one),
    ``item_dim`` item-embedding size, ``recency`` on/off (the time-bucket embedding of every event) with
    ``recency_dim`` and ``n_buckets`` (100, as in the retailer's design) bins spaced by ``bucket_scheme``
    (``"log"``: 1 hour — 10 s for ``"gap"`` — .. the longest history, log-spaced; ``"quantile"``: quantiles of
    the training events' values); ``time_feature`` (:data:`TIME_FEATURES`) says what is bucketed:
    ``"recency"`` the days between the event and the sequence's last event (the retailer's feature; in
    ``all_positions`` training a position before a chunk's last sees it measured from a later reference than
    serving would), ``"gap"`` the days since the user's previous event (the first event of a history: the last
    bucket) — a property of the event alone, the same at every position and in serving (the time intervals of
    TiSASRec, Li et al. 2020, reduced to consecutive events), ``dropout`` (on embeddings, between
    layers, in attention and before the output layer), ``n_heads`` attention heads (must divide ``factors``)
    of the transformer and of the RNN's optional ``attention`` block (one causal multi-head self-attention
    layer with a residual connection + layer norm over the RNN outputs; RNN encoders only).

    Training (``training``, see :data:`TRAINING_MODES`): ``"all_positions"`` (GRU4Rec / SASRec style)
    cuts each user's history into non-overlapping chunks of ``max_len`` events, the last chunk ending at the
    history's end, and puts the loss on every position of a chunk in one forward pass;
    ``max_chunks_per_user`` (> 0) keeps only each user's last N chunks (1 = the last ``max_len`` events, as
    in SASRec). ``"windows"`` (default: it wins on the validation split of ml-latest-small, Recall@10 0.186
    against at most 0.142 for ``all_positions`` with the gap feature; ``docs/sequence.md``): the windows of
    ``max_len`` events before every ``stride``-th cut point, loss on their last ``train_last`` positions
    (``0``: all positions); ``max_windows_per_user`` (> 0) draws at most that many windows of each user per
    epoch. Both are front-padded (20 events = the 80th percentile of sequence length in the retailer's design).
    Targets of a position: the ``horizon`` next items — at least ``horizon``, and ``horizon_fraction`` of the
    events so far (0.25 mimics the top-N protocol, whose truth is the next 20% = a quarter of the 80% input), at
    most ``max_horizon``; ``mask_seen`` leaves the items already in the user's history up to that position out
    of the softmax (as the top-N protocol leaves them out of the ranking; full softmax only).

    Optimisation: ``loss`` ``"full"`` (softmax over the whole catalogue), ``"sampled"`` (``negatives`` shared
    negatives drawn from the unigram^0.75 distribution, log-Q corrected; Bengio & Senécal 2008) or
    ``"in_batch"`` (the batch's own target items are the negatives, log-Q corrected by the probability of an
    item being among them; Yi et al. 2019), AdamW (``lr`` multiplied by ``lr_decay`` after every epoch,
    ``weight_decay``), ``batch_size`` sequences (windows or chunks), at most ``epochs`` epochs, early stopping
    after ``patience`` epochs without a better validation Recall@10 on a split of the training events:
    ``val_split`` ``"temporal"`` holds out the last ``val_fraction`` of each user's events (the top-N
    protocol), ``"last"`` each user's last event (leave-last-one); ``val_fraction`` 0 turns early stopping off.
    ``refit`` then retrains on all training events for the best epoch count.
    ``seed`` fixes initialisation and shuffling; ``device`` ``None`` picks CUDA when present; ``num_threads``
    (``None``: the machine's cores) is passed to ``torch.set_num_threads`` during fit; ``show_progress`` shows
    progress bars and per-epoch lines. Spellings of earlier releases (:data:`RENAMED`, accepted by
    :class:`SequenceTrainer` with a ``DeprecationWarning``): ``cell`` (now ``encoder``), ``layers``
    (``n_layers``), ``heads`` (``n_heads``), ``units`` (``factors``), ``n_negatives`` (``negatives``),
    ``threads`` (``num_threads``), ``progress`` (``show_progress``).
    """

    encoder: str = "gru"
    n_layers: int = 1
    factors: int = 256
    item_dim: int = 64
    recency: bool = True
    recency_dim: int = 16
    time_feature: str = "recency"
    n_buckets: int = 100
    bucket_scheme: str = "log"
    dropout: float = 0.4
    attention: bool = False
    n_heads: int = 2
    max_len: int = 20
    training: str = "windows"
    max_chunks_per_user: int = 0
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

        need(self.encoder in ENCODERS, f"unknown encoder {self.encoder!r}: use one of "
             f"{', '.join(repr(e) for e in ENCODERS)}")
        need(self.training in TRAINING_MODES, f"unknown training mode {self.training!r}: use one of "
             f"{', '.join(repr(t) for t in TRAINING_MODES)}")
        for name in ("n_layers", "factors", "item_dim", "recency_dim", "n_heads", "stride", "horizon", "batch_size",
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
        need(self.time_feature in TIME_FEATURES, f"unknown time_feature {self.time_feature!r}: use one of "
             f"{', '.join(repr(t) for t in TIME_FEATURES)}")
        need(self.bucket_scheme in ("log", "quantile"), f"bucket_scheme must be 'log' or 'quantile'; got "
             f"{self.bucket_scheme!r}")
        need(isinstance(self.train_last, (int, np.integer)) and 0 <= self.train_last,
             f"train_last must be an integer >= 0 (0 = every position); got {self.train_last!r}")
        need(0.0 <= float(self.horizon_fraction) <= 1.0, f"horizon_fraction must lie in [0, 1]; got "
             f"{self.horizon_fraction!r}")
        for name in ("max_horizon", "max_windows_per_user", "max_chunks_per_user"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0,
                 f"{name} must be an integer >= 0 (0 = no limit); got {v!r}")
        need(0.0 <= float(self.dropout) < 1.0, f"dropout must lie in [0, 1); got {self.dropout!r}")
        need(self.val_split in ("temporal", "last"), f"val_split must be 'temporal' or 'last'; got "
             f"{self.val_split!r}")
        need(self.loss in LOSSES, f"unknown loss {self.loss!r}: use one of {', '.join(repr(x) for x in LOSSES)}")
        need(float(self.lr) > 0 and float(self.weight_decay) >= 0, "lr must be > 0 and weight_decay >= 0")
        need(0.0 < float(self.lr_decay) <= 1.0, f"lr_decay must lie in (0, 1]; got {self.lr_decay!r}")
        need(isinstance(self.patience, (int, np.integer)) and self.patience >= 0,
             f"patience must be an integer >= 0; got {self.patience!r}")
        need(0.0 <= float(self.val_fraction) < 1.0, f"val_fraction must lie in [0, 1) (0 = no early stopping); "
             f"got {self.val_fraction!r}")
        if self.encoder == "transformer" or self.attention:
            need(self.factors % self.n_heads == 0, f"n_heads ({self.n_heads}) must divide the hidden size factors "
                 f"({self.factors}): each head gets factors / n_heads dimensions; valid n_heads for factors "
                 f"{self.factors}: {', '.join(str(d) for d in _divisors(int(self.factors)))}")
        return self

    def model_dict(self) -> dict[str, Any]:
        """The fields that shape the network, and the training mode (stored in the artifact's ``config.json``)."""
        keys = ("encoder", "n_layers", "factors", "item_dim", "recency", "recency_dim", "time_feature", "n_buckets",
                "bucket_scheme", "dropout", "attention", "n_heads", "max_len", "training")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """Every field (the trainer's ``get_params``)."""
        return dataclasses.asdict(self)


#: spellings of earlier releases -> field names
RENAMED = {"units": "factors", "n_negatives": "negatives", "threads": "num_threads", "progress": "show_progress",
           "cell": "encoder", "layers": "n_layers", "heads": "n_heads"}


def config_from_stored(config: dict[str, Any]) -> SequenceConfig:
    """The :class:`SequenceConfig` of an artifact's ``config.json`` (old artifacts use the spellings of
    :data:`RENAMED`: ``units``, ``cell``, ``layers``, ``heads``). Artifacts written before the training modes
    existed were trained on windows."""
    known = {"training": "windows", **{RENAMED.get(k, k): v for k, v in config.items()}}
    return SequenceConfig(**{k: v for k, v in known.items() if k in SequenceConfig.__dataclass_fields__})

