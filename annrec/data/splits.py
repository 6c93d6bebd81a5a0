"""Train/test splits of an :class:`~annrec.data.Interactions` log (the protocols of ``DESIGN.md``).

All splits:

* return ``(train, test)`` in THE SAME id space as the input (same ``user_ids`` / ``item_ids``, so
  ``train.to_csr()`` and ``test.to_csr()`` have the same shape and align row for row);
* keep every event exactly once (train and test are disjoint and together are the input);
* keep events in their original order inside each part;
* are deterministic (the random split for a given ``seed``).

"Time order" means by ``timestamp``, ties broken by the original event order (a later line of the
source counts as later).
"""

from __future__ import annotations

import warnings

import numpy as np

from annrec.data.interactions import Interactions
from annrec.errors import InputError

__all__ = ["random_split", "temporal_user_split", "leave_last_one"]


def _check_fraction(test_fraction: float) -> float:
    try:
        f = float(test_fraction)
    except (TypeError, ValueError):
        raise InputError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}") from None
    if not 0.0 < f < 1.0:
        raise InputError(f"test_fraction must be strictly between 0 and 1; got {test_fraction!r}")
    return f


def random_split(inter: Interactions, test_fraction: float = 0.1, seed: int = 0
                 ) -> tuple[Interactions, Interactions]:
    """Event-level random split: ``round(n_events * test_fraction)`` events, drawn uniformly, form the test set.

    The explicit-ratings protocol of ``DESIGN.md`` is ``random_split(ml_latest_small, 0.1, seed=0)``
    (RMSE on the 10%). The draw is ``numpy.random.default_rng(seed).permutation(n_events)``; its first
    ``n_test`` positions are the test events. Users or items may end up with no training events.

    Returns:
        ``(train, test)``, same id space as ``inter``.

    Raises:
        InputError: ``test_fraction`` not in (0, 1).
    """
    f = _check_fraction(test_fraction)
    n = inter.n_events
    n_test = int(np.floor(n * f + 0.5))
    perm = np.random.default_rng(seed).permutation(n)
    is_test = np.zeros(n, dtype=bool)
    is_test[perm[:n_test]] = True
    return inter.subset(~is_test), inter.subset(is_test)


class FileOrderWarning(UserWarning):
    """A time-ordered protocol fell back to the order of the file: the interactions carry no timestamps."""


def warn_if_no_timestamps(inter: Interactions, protocol: str) -> bool:
    """Warn (:class:`FileOrderWarning`) and return True when every timestamp of ``inter`` is 0 (unknown), so
    ``protocol`` orders each user's events by their position in the file instead of by time."""
    if inter.n_events and not np.any(inter.timestamp):
        warnings.warn(f"{inter.name or 'the interactions'} carry no timestamps: {protocol} orders each user's "
                      f"events by their order in the file, not by time (pass the timestamp column, e.g. "
                      f"--timestamp-col, for a temporal split)", FileOrderWarning, stacklevel=3)
        return True
    return False


def _rank_from_end(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """For every event, how many of its user's events come after it in time order; and per-user counts."""
    order = inter._order()
    counts = np.bincount(inter.user_idx, minlength=inter.n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos_sorted = np.arange(inter.n_events) - starts[inter.user_idx[order]]
    rank_from_end = np.empty(inter.n_events, dtype=np.int64)
    rank_from_end[order] = counts[inter.user_idx[order]] - 1 - pos_sorted
    return rank_from_end, counts


def temporal_user_split(inter: Interactions, test_fraction: float = 0.2
                        ) -> tuple[Interactions, Interactions]:
    """Per-user temporal split: each user's last ``test_fraction`` of events (by timestamp) go to test.

    A user with ``n`` events gets ``n_test = round(n * test_fraction)`` test events (half rounds up),
    clamped to ``1 .. n-1``, so every user with at least 2 events keeps at least one training and at
    least one test event; a user with a single event keeps it in train. Within a user every test event
    is not earlier than any of that user's train events. This is the top-N protocol of ``DESIGN.md``
    (``test_fraction=0.2``).

    Returns:
        ``(train, test)``, same id space as ``inter``.

    Raises:
        InputError: ``test_fraction`` not in (0, 1).
    """
    f = _check_fraction(test_fraction)
    warn_if_no_timestamps(inter, "the per-user temporal split")
    rank_from_end, counts = _rank_from_end(inter)
    n_test = np.floor(counts * f + 0.5).astype(np.int64)
    n_test = np.minimum(np.maximum(n_test, 1), counts - 1)  # counts==1 -> 0, counts==0 -> -1 (unused)
    is_test = rank_from_end < n_test[inter.user_idx]
    return inter.subset(~is_test), inter.subset(is_test)


def leave_last_one(inter: Interactions) -> tuple[Interactions, Interactions]:
    """Leave-last-one-out: each user's last event (by timestamp, ties: later in the source) is the test event.

    Users with a single event keep it in train (they would otherwise have no history), so ``test`` has
    one event per user with at least 2 events. Used for next-item (sequence) evaluation.

    Returns:
        ``(train, test)``, same id space as ``inter``.
    """
    warn_if_no_timestamps(inter, "leave-last-one")
    rank_from_end, counts = _rank_from_end(inter)
    is_test = (rank_from_end == 0) & (counts[inter.user_idx] >= 2)
    return inter.subset(~is_test), inter.subset(is_test)
