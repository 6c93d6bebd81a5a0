"""Shared helpers of the sequence-recommender tests: small synthetic logs with a learnable order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annrec.data import Interactions

T0 = 1_500_000_000  # a fixed epoch second (2017-07-14) for synthetic timestamps


def cyclic_log(n_users: int = 40, n_items: int = 24, length: int = 18, seed: int = 0) -> Interactions:
    """Every user walks the catalogue in order from a random start: item ids ``100 + ((s + t) % n_items)``.

    The next item after ``i`` is always ``i + 1`` (mod the catalogue), so a sequence model can learn it in a
    few epochs. Timestamps grow by 1 minute to 3 days; ratings are 1. External ids are ints 100.. and
    users 1...
    """
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        t = T0 + int(rng.integers(0, 10 * 86_400))
        for step in range(length):
            users.append(u + 1)
            items.append(100 + (start + step) % n_items)
            ts.append(t)
            t += int(rng.integers(60, 3 * 86_400))
    return Interactions.from_arrays(users, items, np.ones(len(users), np.float32), ts, name="cyclic")


def tiny_params(**over) -> dict:
    """A tiny, fast configuration (seconds on one CPU thread)."""
    p = dict(factors=16, item_dim=8, recency_dim=4, n_buckets=10, max_len=6, horizon=1, epochs=12, lr=2e-2,
             batch_size=64, val_fraction=0.0, refit=False, dropout=0.0, show_progress=False, seed=0, num_threads=1,
             device="cpu")
    p.update(over)
    return p


def write_movielens_folder(folder: Path, log: Interactions) -> Path:
    """Write ``log`` as an ml-latest-small-style folder (ratings.csv + movies.csv, no checksums)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    for u, i, t in zip(log.user_ids[log.user_idx], log.item_ids[log.item_idx], log.timestamp):
        lines.append(f"{u},{i},4.0,{t}")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f"{i},Movie {i} (2000),Drama" for i in log.item_ids.tolist()]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder
