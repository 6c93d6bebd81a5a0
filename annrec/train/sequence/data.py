"""The training data of the sequence recommender: recency buckets, per-user histories, windows and targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from annrec.errors import InputError
from annrec.train.sequence.config import DAY_SECONDS, GAP_MIN_DAYS, PAD

if TYPE_CHECKING:  # pragma: no cover
    from annrec.data import Interactions

__all__ = ["recency_bucket_edges", "recency_buckets", "time_bucket_edges", "gap_buckets", "build_windows",
           "build_chunks", "seen_pairs"]


# ---------------------------------------------------------------------------------------------- recency
def recency_bucket_edges(days: np.ndarray | None = None, n_buckets: int = 100, scheme: str = "log",
                         max_days: float | None = None, min_days: float = 1.0 / 24.0) -> np.ndarray:
    """The ``n_buckets - 1`` increasing bin edges (in days) of the recency feature.

    ``"log"`` (default): bucket 0 is "less than one hour before the last event"; the other edges are
    log-spaced from 1 hour to ``max_days`` (the longest training history, at least 365 days), so recent
    events get fine bins (hours, days) and old ones coarse bins (months, years) — a fixed, data-set-size
    independent rule; ``min_days`` moves the first edge (the gap feature uses 10 seconds). ``"quantile"``: the
    edges are the 1/n .. (n-1)/n quantiles of ``days`` (equal-mass
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
        return np.geomspace(float(min_days), hi, n_buckets - 1)
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

    def gap_days(self) -> np.ndarray:
        """Days since the same user's previous event (float64; ``inf`` for each user's first event)."""
        gaps = np.empty(len(self.ts), dtype=np.float64)
        if len(self.ts):
            gaps[1:] = np.diff(self.ts) / DAY_SECONDS
            gaps[self.starts[self.lengths > 0]] = np.inf
        return gaps


def time_bucket_edges(hist: _Histories, n_buckets: int, scheme: str, time_feature: str) -> np.ndarray:
    """The bin edges (days) of ``time_feature`` over the training histories: :func:`recency_bucket_edges` of the
    days before each history's last event (``"recency"``) or of the finite gaps to the previous event
    (``"gap"``, first edge :data:`~annrec.train.sequence.config.GAP_MIN_DAYS`)."""
    if time_feature == "gap":
        gaps = hist.gap_days()
        gaps = gaps[np.isfinite(gaps)]
        span = hist.days_before_last()
        return recency_bucket_edges(gaps if len(gaps) else np.zeros(1), n_buckets, scheme,
                                    max_days=float(span.max()) if len(span) and scheme == "log" else None,
                                    min_days=GAP_MIN_DAYS)
    return recency_bucket_edges(hist.days_before_last(), n_buckets, scheme)


def gap_buckets(ts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Gap buckets (int64, ``0 .. len(edges)``) of one time-ordered sequence of Unix seconds: the days since the
    previous event, the first event in the last bucket (no previous event), as in training."""
    days = np.empty(len(ts), dtype=np.float64)
    if len(ts):
        days[0] = np.inf
        days[1:] = np.diff(np.asarray(ts, dtype=np.int64)) / DAY_SECONDS
    return recency_buckets(days, edges)


def build_windows(hist: _Histories, max_len: int, stride: int, max_per_user: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The training windows: ``(user, end)`` pairs, ``end`` exclusive, one every ``stride`` events.

    For a history of ``n`` events the windows end at ``n-1, n-1-stride, …, >= 1`` (each has at least one
    input event and one target); ``max_per_user`` > 0 keeps each user's last that many. Returns two int64
    arrays of equal length.
    """
    users, ends = [], []
    for u, n in enumerate(hist.lengths.tolist()):
        if n < 2:
            continue
        e = np.arange(n - 1, 0, -stride, dtype=np.int64)
        if max_per_user:
            e = e[:max_per_user]
        users.append(np.full(len(e), u, dtype=np.int64))
        ends.append(e)
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users), np.concatenate(ends)


def build_chunks(hist: _Histories, max_len: int, max_chunks_per_user: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The sequences of all-positions training: ``(user, end)`` pairs, ``end`` exclusive, cutting each history
    into non-overlapping chunks of ``max_len`` input events.

    For a history of ``n`` events the chunks end at ``n-1, n-1-max_len, n-1-2*max_len, …, >= 1`` (the last event
    is only a target; the earliest chunk may be shorter and is front-padded), so every event but the first is
    the next-item target of exactly one input position per epoch. ``max_chunks_per_user`` > 0 keeps each
    user's last that many chunks (1 = the last ``max_len`` events). Returns two int64 arrays of equal length.
    """
    return build_windows(hist, max_len, max_len, max_chunks_per_user)


def _window_batch(hist: _Histories, users: np.ndarray, ends: np.ndarray, max_len: int, horizon: int,
                  edges: np.ndarray | None, train_last: int, horizon_fraction: float = 0.0,
                  max_horizon: int = 0, time_feature: str = "recency") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs ``x`` ``(B, L)``, recency buckets ``r`` ``(B, L)`` (both front-padded, 0 = padding) and targets
    ``y`` ``(B, L, W)`` (0 = no target) of the windows ``hist[user][end-L:end]``.

    Target ``y[b, j, h-1]`` is the item ``h`` events after input position ``j`` (within the user's history),
    for ``h`` up to the position's horizon ``max(horizon, ceil(horizon_fraction * events so far))`` (capped at
    ``max_horizon`` when > 0); positions outside the last ``train_last`` ones (if > 0) get no targets.
    ``time_feature`` ``"recency"``: the buckets measure the days before the window's last input event (the
    serving-time reference); ``"gap"``: the days since the user's previous event (the same at every position).
    """
    L = max_len
    off = np.arange(-L, 0, dtype=np.int64)                       # (L,)
    pos = ends[:, None] + off[None, :]                           # position in the user's history
    valid = pos >= 0
    gidx = hist.starts[users][:, None] + np.where(valid, pos, 0)
    x = np.where(valid, hist.items[gidx], PAD)
    if edges is not None:
        if time_feature == "gap":
            prev = hist.ts[np.maximum(gidx - 1, 0)]
            days = np.where(valid & (pos > 0), (hist.ts[gidx] - prev) / DAY_SECONDS, np.inf)
        else:
            ref = hist.ts[hist.starts[users] + ends - 1]
            days = np.maximum((ref[:, None] - hist.ts[gidx]) / DAY_SECONDS, 0)
        r = np.where(valid, recency_buckets(days, edges) + 1, PAD)
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


def _history_windows(hist: _Histories, users: np.ndarray, max_len: int, edges: np.ndarray | None,
                     time_feature: str = "recency") -> tuple[np.ndarray, np.ndarray]:
    """Inputs and time buckets of each user's last ``max_len`` events (the query at evaluation time)."""
    x, r, _ = _window_batch(hist, users, hist.lengths[users], max_len, 1, edges, 0, time_feature=time_feature)
    return x, r



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


