"""Synthetic interaction logs for the ALS tests (tests/test_als_*.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from annrec.data import Interactions

N_GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 4, 10, 15


def make_log(seed: int = 0, extra_item: bool = False) -> Interactions:
    """Users of 4 taste groups; each rates 7 items, 6 of its own group and 1 random, at increasing times.

    External ids are non-contiguous (users 1000+, items 10*i+5) and items carry title/genres metadata.
    ``extra_item``: an item id with no event at all (as the test-only items of a split).
    """
    rng = np.random.default_rng(seed)
    users, items, ratings, ts = [], [], [], []
    n_items = N_GROUPS * ITEMS_PER_GROUP
    for g in range(N_GROUPS):
        own = np.arange(g * ITEMS_PER_GROUP, (g + 1) * ITEMS_PER_GROUP)
        for j in range(USERS_PER_GROUP):
            u = 1000 + g * USERS_PER_GROUP + j
            picks = list(rng.choice(own, 6, replace=False)) + [int(rng.integers(n_items))]
            for t, i in enumerate(dict.fromkeys(picks)):
                users.append(u)
                items.append(10 * int(i) + 5)
                ratings.append(float(rng.integers(1, 6)))
                ts.append(1_000_000 + 100 * t + j)
    all_items = sorted(set(items)) + ([99_995] if extra_item else [])
    meta = pd.DataFrame({"title": [f"Movie {i}" for i in all_items],
                         "genres": [[f"G{(i // 10) // ITEMS_PER_GROUP}"] for i in all_items]},
                        index=pd.Index(all_items, name="item_id"))
    inter = Interactions.from_arrays(users, items, ratings, ts, name="synthetic", items_meta=meta)
    if extra_item:  # give the id an index but no event
        inter = inter._replace(item_ids=np.append(inter.item_ids, 99_995))
    return inter
