"""The RNN sequence recommender: next-item recommendations from a user's time-ordered history.

Model (after the homepage recommender of a large sports retailer, which replaced ALS with an RNN over each
customer's item sequence plus a recency feature): every event of a sequence is the concatenation of an
item embedding and an embedding of its *recency bucket* (days before the sequence's last event, bucketed
into 100 bins); a GRU or LSTM (Cho et al. 2014 / Hochreiter & Schmidhuber 1997; GRU4Rec, Hidasi et al.
2016, for the session-based use) reads it; an optional causal self-attention layer (Vaswani et al. 2017,
as in SASRec, Kang & McAuley 2018) looks back over the RNN outputs; a linear output layer with a bias
scores the whole item catalogue.

Training data are the *sliding windows* of each user's training history (ml-latest-small has only 610 users,
so one window per user would be far too few): a window is the ``max_len`` events before a cut point, padded at
the front. By default the loss sits on the window's last position and its targets are the items that follow
the cut — at least ``horizon`` (1: the next item) and ``horizon_fraction`` (0.25) of the history so far, i.e.
"predict all the items the user takes next" (the dense all-action objective of PinnerFormer, Pancha et al.
2022), which matches the top-N protocol, whose truth is the *set* of the next 20% of a user's events (a quarter
of the 80% input). Items already in the user's history are left out of the softmax (``mask_seen``), as the
protocol leaves them out of the ranking. ``train_last=0`` puts the loss on every position instead (the classic
"target = the sequence shifted by one"). The loss (full softmax cross-entropy by default, sampled softmax with
log-Q correction as an option) is averaged over each position's targets, then over positions, and is masked
on padding and on targets past the end of the history. AdamW, early stopping on a per-user temporal
validation split carved from the training data, then (by default) a refit on all training data for the best
number of epochs.

Serving is maximum inner product search: the item vectors are the output layer's rows with their bias
appended, ``[w_i, b_i]``; the query vector of a sequence is its final hidden state with a constant 1
appended, ``[h, 1]``, so ``h·w_i + b_i`` (the model's logit) is the inner product. The :class:`Embeddings`
artifact (metric ``"ip"``, trainer ``"sequence"``) stores the item vectors and, under ``extra/sequence/``,
everything needed to encode a new sequence: the state dict (``torch.save``), the config (JSON), the item
vocabulary (= the artifact's ids, in row order) and the recency bucket edges.

>>> emb = SequenceTrainer(cell="gru", units=128, epochs=10).fit(train)     # Interactions -> Embeddings
>>> enc = query_encoder_from_embeddings(emb)
>>> vec, warnings = enc.encode([1, 50, 260], timestamps=[964982703, 964982931, 964983000])
>>> recs, warnings = recommend_next(emb, index, [1, 50, 260], timestamps=None, k=10)
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from annrec.errors import ArtifactError, InputError, UnknownIdError

if TYPE_CHECKING:  # pragma: no cover
    from annrec.data import Interactions
    from annrec.embeddings import Embeddings
    from annrec.index import Index
    from annrec.recommend import Recommendation

__all__ = [
    "SequenceConfig", "SequenceTrainer", "SequenceQueryEncoder", "query_encoder_from_embeddings",
    "recommend_next", "recency_bucket_edges", "recency_buckets", "build_windows", "masked_loss",
    "DAY_SECONDS", "EXTRA_PREFIX",
]

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
    ``seed`` fixes initialisation and shuffling; ``device`` ``None`` picks CUDA when present; ``threads`` is
    passed to ``torch.set_num_threads`` on CPU.
    """

    cell: str = "gru"
    layers: int = 1
    units: int = 256
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
    n_negatives: int = 1024
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
    threads: int = 1
    progress: bool = True

    def validate(self) -> SequenceConfig:
        """Check every field; returns ``self``. Raises :class:`InputError` naming the bad field and its range."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise InputError(msg)

        need(self.cell in ("gru", "lstm"), f"cell must be 'gru' or 'lstm'; got {self.cell!r}")
        for name in ("layers", "units", "item_dim", "recency_dim", "heads", "stride", "horizon", "batch_size",
                     "epochs", "n_negatives", "threads"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1,
                 f"{name} must be an integer >= 1; got {v!r}")
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
            need(self.units % self.heads == 0, f"units ({self.units}) must be divisible by heads ({self.heads})")
        return self

    def model_dict(self) -> dict[str, Any]:
        """The fields that shape the network (stored in the artifact)."""
        keys = ("cell", "layers", "units", "item_dim", "recency", "recency_dim", "n_buckets", "bucket_scheme",
                "dropout", "attention", "heads", "max_len")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- recency
def recency_bucket_edges(days: np.ndarray | None = None, n_buckets: int = 100, scheme: str = "log",
                         max_days: float | None = None) -> np.ndarray:
    """The ``n_buckets - 1`` increasing bin edges (in days) of the recency feature.

    ``"log"`` (default): bucket 0 is "less than one hour before the last event"; the other edges are
    log-spaced from 1 hour to ``max_days`` (the longest training history, at least 365 days), so recent
    events get fine bins (hours, days) and old ones coarse bins (months, years) — a fixed, data-set-size
    independent rule. ``"quantile"``: the edges are the 1/n .. (n-1)/n quantiles of ``days`` (equal-mass
    bins); repeated quantiles (e.g. many events on the last day) are merged, so there may be fewer bins.

    Args:
        days: float ``(n,)`` days before the last event of every training event (needed for ``"quantile"``
            and, unless ``max_days`` is given, for the upper end of ``"log"``).

    Returns:
        float64 ``(m,)`` strictly increasing edges, ``m <= n_buckets - 1``; bucket ``b`` holds days in
        ``[edges[b-1], edges[b])``.

    Raises:
        InputError: ``n_buckets`` < 2, an unknown scheme, or no ``days`` where they are needed.
    """
    if n_buckets < 2:
        raise InputError(f"n_buckets must be >= 2; got {n_buckets}")
    if scheme == "log":
        if max_days is None:
            if days is None or len(days) == 0:
                raise InputError("log recency buckets need the training recencies or max_days")
            max_days = float(np.max(days))
        hi = max(float(max_days), 365.0)
        return np.geomspace(1.0 / 24.0, hi, n_buckets - 1)
    if scheme == "quantile":
        if days is None or len(days) == 0:
            raise InputError("quantile recency buckets need the training recencies (days)")
        q = np.quantile(np.asarray(days, dtype=np.float64), np.arange(1, n_buckets) / n_buckets)
        edges = np.unique(q[q > 0])
        return edges if len(edges) else np.array([1.0 / 24.0])
    raise InputError(f"unknown bucket scheme {scheme!r}: use 'log' or 'quantile'")


def recency_buckets(days: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket numbers ``0 .. len(edges)`` (int64) of ``days`` (float, >= 0) before the reference time.

    ``days < edges[0]`` is bucket 0; ``days >= edges[-1]`` is the last bucket. Callers add 1 to get
    embedding indexes (0 is padding).
    """
    return np.searchsorted(np.asarray(edges), np.asarray(days, dtype=np.float64), side="right").astype(np.int64)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class _Histories:
    """Every user's time-ordered training events, flattened: ``items`` (item_idx + 1), ``ts`` (seconds)."""

    items: np.ndarray   # int64 (n_events,), 1-based item indexes
    ts: np.ndarray      # int64 (n_events,)
    starts: np.ndarray  # int64 (n_users,)
    lengths: np.ndarray  # int64 (n_users,)

    @classmethod
    def from_interactions(cls, inter: Interactions) -> _Histories:
        order = np.lexsort((np.arange(inter.n_events), inter.timestamp, inter.user_idx))
        lengths = np.bincount(inter.user_idx, minlength=inter.n_users).astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        return cls(inter.item_idx[order].astype(np.int64) + 1, inter.timestamp[order].astype(np.int64),
                   starts, lengths)

    def days_before_last(self) -> np.ndarray:
        """Days between each event and its user's last event (float64)."""
        last = np.repeat(self.ts[self.starts + self.lengths - 1], self.lengths) if len(self.ts) else self.ts
        return (last - self.ts) / DAY_SECONDS


def build_windows(hist: _Histories, max_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The training windows: ``(user, end)`` pairs, ``end`` exclusive, one every ``stride`` events.

    For a history of ``n`` events the windows end at ``n-1, n-1-stride, …, >= 1`` (each has at least one
    input event and one target). Returns two int64 arrays of equal length.
    """
    users, ends = [], []
    for u, n in enumerate(hist.lengths.tolist()):
        if n < 2:
            continue
        e = np.arange(n - 1, 0, -stride, dtype=np.int64)
        users.append(np.full(len(e), u, dtype=np.int64))
        ends.append(e)
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users), np.concatenate(ends)


def _window_batch(hist: _Histories, users: np.ndarray, ends: np.ndarray, max_len: int, horizon: int,
                  edges: np.ndarray | None, train_last: int, horizon_fraction: float = 0.0,
                  max_horizon: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs ``x`` ``(B, L)``, recency buckets ``r`` ``(B, L)`` (both front-padded, 0 = padding) and targets
    ``y`` ``(B, L, W)`` (0 = no target) of the windows ``hist[user][end-L:end]``.

    Target ``y[b, j, h-1]`` is the item ``h`` events after input position ``j`` (within the user's history),
    for ``h`` up to the position's horizon ``max(horizon, ceil(horizon_fraction * events so far))`` (capped at
    ``max_horizon`` when > 0); positions outside the last ``train_last`` ones (if > 0) get no targets. Recency
    is measured from the window's last input event (the serving-time reference).
    """
    L = max_len
    off = np.arange(-L, 0, dtype=np.int64)                       # (L,)
    pos = ends[:, None] + off[None, :]                           # position in the user's history
    valid = pos >= 0
    gidx = hist.starts[users][:, None] + np.where(valid, pos, 0)
    x = np.where(valid, hist.items[gidx], PAD)
    if edges is not None:
        ref = hist.ts[hist.starts[users] + ends - 1]
        days = (ref[:, None] - hist.ts[gidx]) / DAY_SECONDS
        r = np.where(valid, recency_buckets(np.maximum(days, 0), edges) + 1, PAD)
    else:
        r = np.where(valid, 1, PAD)
    hz = np.full(pos.shape, horizon, dtype=np.int64)
    if horizon_fraction > 0:
        hz = np.maximum(hz, np.ceil(horizon_fraction * (pos + 1)).astype(np.int64))
    if max_horizon > 0:
        hz = np.minimum(hz, max_horizon)
    room = hist.lengths[users][:, None] - 1 - pos                # future events after each position
    width = int(max(1, np.minimum(hz, room)[valid].max(initial=1)))
    hs = np.arange(1, width + 1, dtype=np.int64)
    tpos = pos[:, :, None] + hs[None, None, :]                   # (B, L, W)
    tvalid = (valid[:, :, None] & (tpos < hist.lengths[users][:, None, None])
              & (hs[None, None, :] <= hz[:, :, None]))
    if train_last:
        keep = np.zeros(L, dtype=bool)
        keep[-train_last:] = True
        tvalid &= keep[None, :, None]
    tg = hist.starts[users][:, None, None] + np.where(tvalid, tpos, 0)
    y = np.where(tvalid, hist.items[tg], PAD)
    return x, r, y


def _history_windows(hist: _Histories, users: np.ndarray, max_len: int, edges: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and recency buckets of each user's last ``max_len`` events (the query at evaluation time)."""
    x, r, _ = _window_batch(hist, users, hist.lengths[users], max_len, 1, edges, 0)
    return x, r


# ---------------------------------------------------------------------------------------------- model
def _torch():
    import torch

    return torch


def _build_net(n_items: int, n_bucket_ids: int, cfg: SequenceConfig):
    """The network (a ``torch.nn.Module``); built lazily so importing this module does not import torch."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class SequenceNet(nn.Module):
        """Item + recency embeddings -> GRU/LSTM -> [causal self-attention] -> output layer over the catalogue.

        ``forward(x, r)`` takes front-padded ``x`` (item_idx + 1, 0 = pad) and ``r`` (bucket + 1) int64
        ``(B, L)`` and returns the hidden states ``(B, L, units)`` in the same layout (zeros at padding).
        Internally the windows are left-aligned and packed, so padded positions never influence real ones.
        """

        def __init__(self) -> None:
            super().__init__()
            self.cfg = cfg
            self.item_emb = nn.Embedding(n_items + 1, cfg.item_dim, padding_idx=PAD)
            in_dim = cfg.item_dim
            if cfg.recency:
                self.rec_emb = nn.Embedding(n_bucket_ids, cfg.recency_dim, padding_idx=PAD)
                in_dim += cfg.recency_dim
            rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
            self.rnn = rnn(in_dim, cfg.units, num_layers=cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
            self.drop = nn.Dropout(cfg.dropout)
            if cfg.attention:
                self.attn = nn.MultiheadAttention(cfg.units, cfg.heads, dropout=cfg.dropout, batch_first=True)
                self.norm = nn.LayerNorm(cfg.units)
            self.out = nn.Linear(cfg.units, n_items)  # item rows + bias = the item vectors

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            B, L = x.shape
            lengths = (x != PAD).sum(1)
            if bool((lengths == 0).any()):
                raise InputError("a window has no events: every sequence needs at least one item")
            shift = (L - lengths)[:, None]
            ar = torch.arange(L, device=x.device)[None, :]
            left = (ar + shift) % L                       # left-aligned gather index
            xl = torch.gather(x, 1, left)
            e = self.item_emb(xl)
            if self.cfg.recency:
                e = torch.cat([e, self.rec_emb(torch.gather(r, 1, left))], dim=-1)
            e = self.drop(e)
            packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=L)   # (B, L, U), zeros past length
            if self.cfg.attention:
                causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=1)
                key_pad = ar >= lengths[:, None]
                a, _ = self.attn(h, h, h, attn_mask=causal, key_padding_mask=key_pad, need_weights=False)
                h = self.norm(h + self.drop(a))
                h = h.masked_fill(key_pad[:, :, None], 0.0)
            back = (ar - shift) % L                       # undo the alignment: front-padded again
            return torch.gather(h, 1, back[:, :, None].expand(B, L, h.shape[-1]))

        def final_state(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            """The query representation of each window: the hidden state at its last position ``(B, units)``."""
            return self.forward(x, r)[:, -1, :]

    return SequenceNet()


def masked_loss(net, x, r, y, loss: str = "full", neg_items=None, neg_logq=None, item_logq=None, seen=None):
    """Cross-entropy averaged over each position's targets (``y > 0``), then over the positions that have
    targets (every cut point weighs the same, however many future items it predicts); padding never
    contributes.

    Args:
        net: the network. x, r: ``(B, L)`` inputs; y: ``(B, L, H)`` targets (item_idx + 1; 0 = none).
        loss: ``"full"`` softmax over all items, or ``"sampled"``: positive vs. the shared negatives
            ``neg_items`` (0-based, ``(M,)``), logits corrected by ``-log Q`` (``neg_logq`` ``(M,)``,
            ``item_logq`` ``(n_items,)``; Bengio & Senécal 2008, Yi et al. 2019).
        seen: optional ``(rows, items)`` int64 tensors: item ``items[j]`` (0-based) is left out of the softmax
            of the ``rows[j]``-th position that has a target (row-major order) — the items the user already
            took, which the top-N protocol never recommends (full softmax only; see :func:`seen_pairs`).

    Returns:
        a scalar tensor (0 when there is no target).
    """
    torch = _torch()
    h = net(x, r)                                  # (B, L, U)
    tmask = (y > PAD) & (x != PAD)[:, :, None]     # (B, L, H): no target at a padded input position
    pos_mask = tmask.any(-1)                       # positions with at least one target
    if not bool(pos_mask.any()):
        return h.sum() * 0.0
    hp = net.drop(h[pos_mask])                     # (P, U)
    yp = y[pos_mask] - 1                           # (P, H), -1 = none
    mp = tmask[pos_mask]
    yc = yp.clamp(min=0)
    if loss == "full":
        logits = net.out(hp)
        if seen is not None and len(seen[0]):
            logits = logits.index_put(seen, torch.tensor(float("-inf"), device=logits.device))
        logp = torch.log_softmax(logits, dim=-1)
        ll = torch.gather(logp, 1, yc)
    else:
        w, b = net.out.weight, net.out.bias
        pos_logit = (hp[:, None, :] * w[yc]).sum(-1) + b[yc] - item_logq[yc]        # (P, H)
        neg_logit = hp @ w[neg_items].T + b[neg_items] - neg_logq                    # (P, M)
        lse = torch.logsumexp(torch.cat([pos_logit[:, :, None],
                                         neg_logit[:, None, :].expand(-1, yc.shape[1], -1)], dim=-1), dim=-1)
        ll = pos_logit - lse
    ll = torch.where(mp, ll, torch.zeros((), dtype=ll.dtype, device=ll.device))   # no -inf * 0 = nan
    return -(ll.sum(1) / mp.sum(1)).mean()


def seen_pairs(hist: _Histories, users: np.ndarray, ends: np.ndarray, x: np.ndarray, y: np.ndarray,
               n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """For :func:`masked_loss` ``seen``: for every position with a target (row-major, as ``tensor[mask]``), the
    0-based items of the user's history up to and including that position, except the position's targets."""
    L = x.shape[1]
    pm = ((y > PAD) & (x != PAD)[:, :, None]).any(-1)
    b, j = np.nonzero(pm)
    if len(b) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    p = ends[b] - L + j                                   # history position of the input
    n = p + 1
    rows = np.repeat(np.arange(len(b)), n)
    offs = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    items = hist.items[np.repeat(hist.starts[users[b]], n) + offs] - 1
    tg = y[b, j]                                          # (P, H)
    tr, tc = np.nonzero(tg > PAD)
    keys = rows * n_items + items
    keep = ~np.isin(keys, tr * n_items + (tg[tr, tc] - 1))
    return rows[keep].astype(np.int64), items[keep].astype(np.int64)


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    """What :meth:`SequenceTrainer.fit` measured: per-epoch history, best epoch, seconds."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_recall: float | None = None
    seconds: float = 0.0
    refit_seconds: float = 0.0


class SequenceTrainer:
    """Trains the RNN sequence recommender on an :class:`~annrec.data.Interactions` log.

    ``SequenceTrainer(**hyper_parameters).fit(train) -> Embeddings``; hyper-parameters are the fields of
    :class:`SequenceConfig` (pass a config or keyword arguments). After ``fit``, ``self.net`` is the trained
    network (eval mode), ``self.edges`` the recency bucket edges and ``self.result`` the training history.

    Raises:
        InputError: a bad hyper-parameter (e.g. ``max_len`` <= 0) or a log without usable sequences.
    """

    def __init__(self, config: SequenceConfig | None = None, **params: Any) -> None:
        cfg = dataclasses.replace(config) if config is not None else SequenceConfig()
        for k, v in params.items():
            if not hasattr(cfg, k):
                raise InputError(f"unknown sequence hyper-parameter {k!r}; known: "
                                 f"{', '.join(f.name for f in dataclasses.fields(SequenceConfig))}")
            setattr(cfg, k, v)
        self.config = cfg.validate()
        self.net = None
        self.edges: np.ndarray | None = None
        self.result = TrainResult()
        self.n_items = 0
        self.device = None

    # -------------------------------------------------------------------- public
    def fit(self, train: Interactions, validation: Interactions | None = None) -> Embeddings:
        """Train on ``train`` and return the :class:`Embeddings` artifact (not yet saved).

        Early stopping uses ``validation`` when given (a per-user later part of the same users, same id
        space), else a per-user temporal split holding out ``val_fraction`` of ``train``; with ``refit``
        the network is then retrained on all of ``train`` for the best epoch count.

        Raises:
            InputError: no user has two or more events (nothing to learn from).
        """
        torch = _torch()
        cfg = self.config
        self.n_items = train.n_items
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        full = _Histories.from_interactions(train)
        if not (full.lengths >= 2).any():
            raise InputError("no user has two or more events: the sequence model needs histories to learn from")
        days = full.days_before_last()
        self.edges = recency_bucket_edges(days, cfg.n_buckets, cfg.bucket_scheme) if cfg.recency else None
        t0 = time.perf_counter()
        if validation is None and cfg.val_fraction > 0:
            from annrec.data import leave_last_one, temporal_user_split

            if cfg.val_split == "last":
                inner, validation = leave_last_one(train)
            else:
                inner, validation = temporal_user_split(train, cfg.val_fraction)
        else:
            inner = train
        if validation is not None:
            best = self._train(inner, cfg.epochs, validation)
            self.result.best_epoch = best
            self.result.seconds = time.perf_counter() - t0
            if cfg.refit and inner is not train:
                t1 = time.perf_counter()
                self._train(train, max(best, 1), None)
                self.result.refit_seconds = time.perf_counter() - t1
        else:
            self._train(train, cfg.epochs, None)
            self.result.best_epoch = cfg.epochs
            self.result.seconds = time.perf_counter() - t0
        self.net.eval()
        return self.to_embeddings(train)

    def score_histories(self, inter: Interactions, users: np.ndarray | None = None, batch_size: int = 512
                        ) -> np.ndarray:
        """Query vectors ``[h, 1]`` float32 ``(n, units + 1)`` of the users' last ``max_len`` events of ``inter``."""
        hist = _Histories.from_interactions(inter)
        if users is None:
            users = np.arange(inter.n_users)
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros((len(users), self.config.units + 1), dtype=np.float32)
        out[:, -1] = 1.0
        has = hist.lengths[users] > 0
        idx = np.flatnonzero(has)
        if len(idx):
            x, r = _history_windows(hist, users[idx], self.config.max_len, self.edges)
            out[idx, :-1] = self._encode_arrays(x, r, batch_size)
        return out

    def item_vectors(self) -> np.ndarray:
        """Item vectors ``[w_i, b_i]`` float32 ``(n_items, units + 1)`` from the output layer."""
        w = self.net.out.weight.detach().cpu().numpy()
        b = self.net.out.bias.detach().cpu().numpy()
        return np.ascontiguousarray(np.hstack([w, b[:, None]]), dtype=np.float32)

    def to_embeddings(self, train: Interactions) -> Embeddings:
        """The artifact: item vectors, user query vectors (last-window states), seen matrix, encoder files."""
        from annrec.embeddings import Embeddings

        cfg = self.config
        titles = train.item_titles()
        items = {k: {"title": v} for k, v in titles.items()} if titles else None
        if items is not None:
            keep = set(train.item_ids.tolist())
            items = {k: v for k, v in items.items() if k in keep}
        queries = self.score_histories(train)
        manifest = {
            "trainer": "sequence",
            "params": cfg.to_dict(),
            "dataset": train.name,
            "data_hash": train.fingerprint(),
            "n_events": train.n_events,
            "training": {"best_epoch": self.result.best_epoch, "best_val_recall@10": self.result.best_val_recall,
                         "seconds": round(self.result.seconds, 2),
                         "refit_seconds": round(self.result.refit_seconds, 2),
                         "history": self.result.history, "device": str(self.device)},
            "serving": "maximum inner product search: item [w_i, b_i], query [h, 1] (final hidden state)",
        }
        extra = encoder_files(self.net, cfg, train.item_ids, self.edges)
        return Embeddings(vectors=self.item_vectors(), ids=train.item_ids, metric="ip", queries=queries,
                          query_ids=train.user_ids, items=items, manifest=manifest, extra=extra,
                          seen=train.to_csr(binary=True))

    # -------------------------------------------------------------------- internals
    def _encode_arrays(self, x: np.ndarray, r: np.ndarray, batch_size: int = 512) -> np.ndarray:
        torch = _torch()
        self.net.eval()
        outs = []
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                xb = torch.as_tensor(x[s:s + batch_size], device=self.device)
                rb = torch.as_tensor(r[s:s + batch_size], device=self.device)
                outs.append(self.net.final_state(xb, rb).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.config.units), np.float32)

    def _val_recall(self, inner: Interactions, validation: Interactions, k: int = 10) -> float:
        from annrec.metrics import evaluate_topn, top_k_excluding

        q = self.score_histories(inner)
        items = self.item_vectors()

        def recommend(users, kk, seen):
            return top_k_excluding(q[users] @ items.T, kk, seen)

        return float(evaluate_topn(recommend, inner, validation, k)[f"recall@{k}"])

    def _train(self, inter: Interactions, epochs: int, validation: Interactions | None) -> int:
        """Train a fresh network for up to ``epochs`` epochs; with ``validation``, keep the best state and stop
        after ``patience`` epochs without improvement. Returns the best (or last) epoch number."""
        torch = _torch()
        from tqdm.auto import tqdm

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n_bucket_ids = (len(self.edges) + 2) if self.edges is not None else 2
        self.net = _build_net(self.n_items, n_bucket_ids, cfg).to(self.device)
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
        hist = _Histories.from_interactions(inter)
        users, ends = build_windows(hist, cfg.max_len, cfg.stride)
        if len(users) == 0:
            raise InputError("no training windows: every user has fewer than two events")
        neg_kw: dict[str, Any] = {}
        if cfg.loss == "sampled":
            counts = np.bincount(inter.item_idx, minlength=self.n_items).astype(np.float64) + 1.0
            q = counts ** 0.75
            q /= q.sum()
            qt = torch.as_tensor(q, dtype=torch.float32, device=self.device)
            neg_kw["item_logq"] = torch.log(qt * cfg.n_negatives)
        best, best_state, bad = -1.0, None, 0
        best_epoch = epochs
        label = "train" if validation is not None or not self.result.history else "refit"
        for epoch in range(1, epochs + 1):
            self.net.train()
            perm = rng.permutation(len(users))
            if cfg.max_windows_per_user:
                # at most max_windows_per_user random windows of each user this epoch (users weigh more evenly)
                order = np.lexsort((rng.random(len(users)), users))
                first = np.searchsorted(users[order], users[order], side="left")
                keep = order[(np.arange(len(order)) - first) < cfg.max_windows_per_user]
                perm = keep[rng.permutation(len(keep))]
            total, count = 0.0, 0
            t0 = time.perf_counter()
            bar = tqdm(range(0, len(perm), cfg.batch_size), desc=f"{label} epoch {epoch}/{epochs}",
                       disable=not cfg.progress, leave=False, unit="batch")
            for s in bar:
                b = perm[s:s + cfg.batch_size]
                x, r, y = _window_batch(hist, users[b], ends[b], cfg.max_len, cfg.horizon, self.edges,
                                        cfg.train_last, cfg.horizon_fraction, cfg.max_horizon)
                xt = torch.as_tensor(x, device=self.device)
                rt = torch.as_tensor(r, device=self.device)
                yt = torch.as_tensor(y, device=self.device)
                if cfg.loss == "sampled":
                    neg = torch.multinomial(qt, cfg.n_negatives, replacement=True)
                    neg_kw["neg_items"] = neg
                    neg_kw["neg_logq"] = neg_kw["item_logq"][neg]
                if cfg.mask_seen and cfg.loss == "full":
                    sr, si = seen_pairs(hist, users[b], ends[b], x, y, self.n_items)
                    neg_kw["seen"] = (torch.as_tensor(sr, device=self.device), torch.as_tensor(si, device=self.device))
                loss = masked_loss(self.net, xt, rt, yt, cfg.loss, **neg_kw)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
                opt.step()
                total += float(loss.detach()) * len(b)
                count += len(b)
                if cfg.progress and (s // cfg.batch_size) % 20 == 0:
                    bar.set_postfix(loss=f"{total / count:.3f}")
            bar.close()
            sched.step()
            row = {"epoch": epoch, "phase": "fit" if validation is not None else "refit",
                   "loss": total / max(count, 1), "seconds": round(time.perf_counter() - t0, 2)}
            if validation is not None:
                rec = self._val_recall(inter, validation)
                row["val_recall@10"] = rec
                if rec > best + 1e-6:
                    best, bad, best_epoch = rec, 0, epoch
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    bad += 1
            self.result.history.append(row)
            if cfg.progress:
                msg = f"{label} epoch {epoch}: loss {row['loss']:.4f} ({row['seconds']:.1f}s)"
                if "val_recall@10" in row:
                    msg += f", validation recall@10 {row['val_recall@10']:.4f}"
                print(msg, flush=True)
            if validation is not None and bad > 0 and bad >= cfg.patience:
                break
        if validation is not None and best_state is not None:
            self.net.load_state_dict(best_state)
            self.result.best_val_recall = best
        self.net.eval()
        return best_epoch


# ---------------------------------------------------------------------------------------------- artifact
def encoder_files(net, cfg: SequenceConfig, item_ids: np.ndarray, edges: np.ndarray | None) -> dict[str, bytes]:
    """The ``extra/sequence/*`` files of the artifact: ``state_dict.pt``, ``config.json``, ``vocab.json``,
    ``bucket_edges.json``."""
    torch = _torch()
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    config = dict(cfg.model_dict(), n_items=int(len(item_ids)), format=1)
    return {
        EXTRA_PREFIX + "state_dict.pt": buf.getvalue(),
        EXTRA_PREFIX + "config.json": json.dumps(config, indent=2).encode(),
        EXTRA_PREFIX + "vocab.json": json.dumps(np.asarray(item_ids).tolist()).encode(),
        EXTRA_PREFIX + "bucket_edges.json": json.dumps(None if edges is None else np.asarray(edges).tolist()).encode(),
    }


class SequenceQueryEncoder:
    """Turns a time-ordered item sequence into a query vector for maximum inner product search.

    Built by :func:`query_encoder_from_embeddings`. ``encode(item_ids, timestamps=None, now=None)`` returns
    ``(vector float32 (dim,), warnings list[str])`` where ``dim = units + 1`` (the final hidden state and a
    constant 1, matching the item vectors ``[w_i, b_i]``).

    Serving rules (documented in docs/sequence.md):

    * unknown item ids are **ignored** (their timestamps too) with one warning naming them; when no known item
      is left an :class:`~annrec.errors.UnknownIdError` is raised;
    * only the last ``max_len`` known events are read (the model was trained on windows of that length);
    * ``timestamps`` (Unix seconds, one per item, non-decreasing) give the recency buckets, measured from
      ``now`` (default: the last timestamp, as in training). Without timestamps every event is taken as
      recent (recency 0) and a warning says so (when the model uses recency).

    Raises (from ``encode``):
        InputError: empty sequence; timestamps of another length, not integers, decreasing, negative, or
            later than ``now`` (or than the current time + 5 minutes when ``now`` is not given).
        UnknownIdError: none of the items is known.
    """

    def __init__(self, net, config: dict[str, Any], ids: np.ndarray, edges: np.ndarray | None,
                 device: str = "cpu") -> None:
        self.net = net.eval()
        self.config = config
        self.ids = np.asarray(ids)
        self.edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self.max_len = int(config["max_len"])
        self.dim = int(config["units"]) + 1
        self.device = device
        self._row = {v: i for i, v in enumerate(self.ids.tolist())}

    def _coerce(self, item_id):
        from annrec.embeddings import _coerce_id

        return _coerce_id(item_id, self.ids)

    def rows(self, item_ids) -> tuple[np.ndarray, list[int], list]:
        """Catalogue rows of the known ids, their positions in the input, and the unknown ids."""
        rows, keep, unknown = [], [], []
        for pos, i in enumerate(item_ids):
            try:
                r = self._row.get(self._coerce(i))
            except TypeError:
                r = None
            if r is None:
                unknown.append(i)
            else:
                rows.append(r)
                keep.append(pos)
        return np.asarray(rows, dtype=np.int64), keep, unknown

    def encode(self, item_ids, timestamps=None, now: int | None = None) -> tuple[np.ndarray, list[str]]:
        """Query vector ``[h, 1]`` float32 ``(dim,)`` of a time-ordered item sequence, and warnings."""
        torch = _torch()
        if isinstance(item_ids, (str, bytes, int, np.integer)):
            item_ids = [item_ids]
        item_ids = list(item_ids) if item_ids is not None else []
        if not item_ids:
            raise InputError("the item sequence is empty: give at least one item id (oldest first)")
        warnings: list[str] = []
        ts = _check_timestamps(timestamps, len(item_ids), now)
        rows, keep, unknown = self.rows(item_ids)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" …" if len(unknown) > 10 else "")
            if not len(rows):
                raise UnknownIdError(f"none of the {len(item_ids)} item ids is known to this model ({shown}): "
                                     f"pass ids of items it was trained on")
            warnings.append(f"ignored {len(unknown)} unknown item id(s): {shown}")
        if len(rows) > self.max_len:
            warnings.append(f"only the last {self.max_len} of {len(rows)} known items are used (max_len)")
        rows = rows[-self.max_len:]
        x = np.zeros((1, self.max_len), dtype=np.int64)
        r = np.zeros((1, self.max_len), dtype=np.int64)
        x[0, self.max_len - len(rows):] = rows + 1
        if self.edges is not None:
            if ts is None:
                warnings.append("no timestamps: every event is taken as recent (recency 0 days)")
                b = np.zeros(len(rows), dtype=np.int64)
            else:
                t = ts[keep][-len(rows):]
                ref = int(now) if now is not None else int(ts[-1])
                b = recency_buckets((ref - t) / DAY_SECONDS, self.edges)
            r[0, self.max_len - len(rows):] = b + 1
        else:
            r[0, self.max_len - len(rows):] = 1
        with torch.no_grad():
            h = self.net.final_state(torch.as_tensor(x, device=self.device), torch.as_tensor(r, device=self.device))
        vec = np.empty(self.dim, dtype=np.float32)
        vec[:-1] = h[0].float().cpu().numpy()
        vec[-1] = 1.0
        return vec, warnings


def _check_timestamps(timestamps, n: int, now: int | None) -> np.ndarray | None:
    if now is not None and (isinstance(now, bool) or not isinstance(now, (int, np.integer)) or now < 0):
        raise InputError(f"now must be a non-negative integer (Unix seconds); got {now!r}")
    if timestamps is None:
        return None
    ts = list(timestamps)
    if len(ts) != n:
        raise InputError(f"{len(ts)} timestamps for {n} items: give one Unix timestamp (seconds) per item, "
                         f"or none")
    for t in ts:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise InputError(f"timestamps must be integers (Unix seconds); got {t!r}")
    a = np.asarray(ts, dtype=np.int64)
    if (a < 0).any():
        raise InputError(f"timestamps must be >= 0 (Unix seconds); got {int(a.min())}")
    bad = np.flatnonzero(np.diff(a) < 0)
    if len(bad):
        i = int(bad[0])
        raise InputError(f"timestamps are out of order: item {i + 1} at {a[i + 1]} comes before item {i} at {a[i]}; "
                         f"give the sequence oldest first")
    limit = int(now) if now is not None else int(time.time()) + FUTURE_TOLERANCE_S
    if a[-1] > limit:
        what = f"now={now}" if now is not None else "the current time"
        raise InputError(f"timestamp {int(a[-1])} is in the future (after {what}): pass Unix seconds of past "
                         f"events")
    return a


def query_encoder_from_embeddings(emb: Embeddings, device: str | None = None) -> SequenceQueryEncoder:
    """Rebuild the sequence encoder stored in a ``trainer == "sequence"`` :class:`Embeddings` artifact.

    Raises:
        ArtifactError: not a sequence artifact, missing/corrupt ``extra/sequence/*`` files, or a checkpoint
            whose vocabulary or output layer does not match the artifact's item ids and vectors.
    """
    torch = _torch()
    trainer = emb.manifest.get("trainer")
    if trainer not in (None, "sequence"):
        raise ArtifactError(f"this artifact was written by the {trainer!r} trainer, not 'sequence': train it with "
                            f"`annrec train sequence`")
    need = [EXTRA_PREFIX + n for n in ("state_dict.pt", "config.json", "vocab.json", "bucket_edges.json")]
    missing = [n for n in need if n not in emb.extra]
    if missing:
        raise ArtifactError(f"the artifact lacks the sequence encoder files {', '.join('extra/' + m for m in missing)}: "
                            f"re-run `annrec train sequence`")
    try:
        config = json.loads(emb.extra[EXTRA_PREFIX + "config.json"])
        vocab = json.loads(emb.extra[EXTRA_PREFIX + "vocab.json"])
        edges = json.loads(emb.extra[EXTRA_PREFIX + "bucket_edges.json"])
        state = torch.load(io.BytesIO(emb.extra[EXTRA_PREFIX + "state_dict.pt"]), map_location="cpu",
                           weights_only=True)
    except Exception as e:  # json / torch unpickling errors
        raise ArtifactError(f"the sequence encoder files are corrupt ({type(e).__name__}: {e}): re-run "
                            f"`annrec train sequence`") from None
    if len(vocab) != len(emb) or np.asarray(vocab).tolist() != emb.ids.tolist():
        raise ArtifactError(f"the checkpoint's item vocabulary ({len(vocab)} items) does not match the artifact's "
                            f"{len(emb)} item ids / vectors: the files come from different trainings; re-run "
                            f"`annrec train sequence`")
    try:
        cfg = SequenceConfig(**{k: v for k, v in config.items() if k in SequenceConfig.__dataclass_fields__})
        cfg.validate()
        n_bucket_ids = (len(edges) + 2) if edges is not None else 2
        net = _build_net(int(config["n_items"]), n_bucket_ids, cfg)
        net.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError, InputError) as e:
        raise ArtifactError(f"the sequence checkpoint does not fit its config ({e}): re-run "
                            f"`annrec train sequence`") from None
    w = net.out.weight.detach().numpy()
    b = net.out.bias.detach().numpy()
    if w.shape[0] != len(emb) or w.shape[1] + 1 != emb.dim:
        raise ArtifactError(f"the checkpoint's output layer ({w.shape[0]} items x {w.shape[1]}+1) does not match the "
                            f"item vectors ({len(emb)} x {emb.dim}): re-run `annrec train sequence`")
    if not np.allclose(np.hstack([w, b[:, None]]), emb.vectors, atol=1e-5):
        raise ArtifactError("the item vectors are not the checkpoint's output layer [w_i, b_i]: the vectors and the "
                            "weights come from different trainings; re-run `annrec train sequence`")
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SequenceQueryEncoder(net.to(dev), dict(config), emb.ids, None if edges is None else np.asarray(edges),
                                device=dev)


def recommend_next(emb: Embeddings, index: Index | None, item_ids, timestamps=None, k: int = 10,
                   now: int | None = None, exclude_input: bool = True, params: dict[str, Any] | None = None,
                   encoder: SequenceQueryEncoder | None = None) -> tuple[list[Recommendation], list[str]]:
    """Top-``k`` next items after a time-ordered sequence, by maximum inner product search in ``index``.

    Args:
        emb: the sequence :class:`Embeddings` artifact. index: an index over its item vectors (``None``:
            exact search, a FAISS ``Flat`` index). item_ids: external ids, oldest first. timestamps: Unix
            seconds per item (optional). k: results. now: reference time of the recency feature.
        exclude_input: leave the sequence's own items out of the answer (default; the next *new* item).
        encoder: a cached :func:`query_encoder_from_embeddings` (built when ``None``).

    Returns:
        ``(recommendations, warnings)``; each :class:`~annrec.recommend.Recommendation` has the item id, the
        score (the model's logit ``h·w_i + b_i``) and its metadata.

    Raises:
        InputError / UnknownIdError: as :meth:`SequenceQueryEncoder.encode`, and ``k`` out of range.
    """
    from annrec.recommend import Recommender

    enc = encoder or query_encoder_from_embeddings(emb)
    return Recommender(emb, index, enc).recommend_next(list(item_ids), k, timestamps=timestamps, now=now,
                                                       exclude_input=exclude_input, params=params)


def exact_scores(emb: Embeddings, query: np.ndarray) -> np.ndarray:
    """Exact inner products ``(n_items,)`` of a query vector with all item vectors (for parity checks)."""
    return emb.vectors @ np.asarray(query, dtype=np.float32)

